"""Evaluating HCL expressions: HCL's values and conversions, and the evaluator.

`evaluate` computes a `syntax` tree against a `Scope` that knows what the
top-level names mean (`var`, `local`, resource types ...) and which
functions exist. Values are plain Python: str, int/float (HCL's one number
type), bool, None, lists and mappings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from shoal.terraform.errors import EvalError, UnknownReference
from shoal.terraform.syntax import (
    Binary,
    Call,
    Conditional,
    ForExpr,
    GetAttr,
    Index,
    ListExpr,
    Literal,
    Node,
    ObjectExpr,
    Splat,
    SplatItem,
    Template,
    Unary,
    Variable,
    normal_number,
    static_path,
)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def to_str(value: Any) -> str:
    """HCL's conversion to string (what `${...}` in a template does)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        normal = normal_number(value)
        return str(normal) if isinstance(normal, int) else repr(normal)
    if value is None:
        raise EvalError("a null value cannot be used as a string")
    raise EvalError(f"a {type_name(value)} cannot be used as a string")


def to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise EvalError("a bool cannot be used as a number")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return normal_number(float(text))
        except ValueError:
            raise EvalError(f"{value!r} is not a number") from None
    raise EvalError(f"a {type_name(value)} cannot be used as a number")


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise EvalError(f"a {type_name(value)} ({value!r}) cannot be used as a bool")


def equal(a: Any, b: Any) -> bool:
    """HCL equality: values of different types are never equal (1 != "1", 1 != true)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


# -- evaluation ---------------------------------------------------------------


class Scope(Protocol):
    """What names mean while evaluating."""

    def root(self, name: str) -> Any:
        """The value of a top-level name (`var`, `local`, `aws_s3_bucket`, ...);
        raises UnknownReference for a name the configuration does not define."""

    def function(self, name: str) -> Callable[..., Any] | None:
        """The function called `name`, or None when there is none."""


def evaluate(node: Node, scope: Scope, bound: Mapping[str, Any] | None = None) -> Any:
    """The value of `node`; `bound` names shadow the scope's (count, each, ...)."""
    return _Evaluator(scope, dict(bound or {})).eval(node)


class _Evaluator:
    def __init__(self, scope: Scope, bound: dict[str, Any]) -> None:
        self.scope = scope
        self.bound = bound
        self.items: list[Any] = []

    def eval(self, node: Node) -> Any:
        match node:
            case Literal(value):
                return value
            case Template(parts):
                if len(parts) == 1 and isinstance(parts[0], Node):
                    return self.eval(parts[0])
                return "".join(p if isinstance(p, str) else to_str(self.eval(p)) for p in parts)
            case Variable(name):
                if name in self.bound:
                    return self.bound[name]
                return self.scope.root(name)
            case GetAttr(obj, name):
                return self.get_attr(node, self.eval(obj), name)
            case Index(obj, key):
                return self.index(node, self.eval(obj), self.eval(key))
            case SplatItem():
                return self.items[-1]
            case Splat(source, each):
                return self.splat(self.eval(source), each)
            case Call():
                return self.call(node)
            case ListExpr(items):
                return [self.eval(item) for item in items]
            case ObjectExpr(items):
                return {self.key(k): self.eval(v) for k, v in items}
            case Unary("!", operand):
                return not to_bool(self.eval(operand))
            case Unary(_, operand):
                return -to_number(self.eval(operand))
            case Binary(op, left, right):
                return self.binary(op, left, right)
            case Conditional(cond, then, otherwise):
                return self.eval(then if to_bool(self.eval(cond)) else otherwise)
            case ForExpr():
                return self.for_expr(node)
        raise EvalError(f"cannot evaluate {node!r}")  # pragma: no cover - every Node is matched

    def key(self, node: Node) -> str:
        value = self.eval(node)
        if isinstance(value, str | int | float | bool):
            return to_str(value)
        raise EvalError(f"an object key must be a string, not a {type_name(value)}")

    def get_attr(self, node: GetAttr, value: Any, name: str) -> Any:
        if isinstance(value, Mapping):
            if name in value:
                return value[name]
            path = static_path(node)
            if path is not None:
                raise UnknownReference(path)
            raise EvalError(f"the object has no attribute {name!r}")
        if value is None:
            raise EvalError(f"cannot read attribute {name!r} of null")
        raise EvalError(f"cannot read attribute {name!r} of a {type_name(value)}")

    def index(self, node: Index, value: Any, key: Any) -> Any:
        if isinstance(value, list | tuple):
            i = to_number(key)
            if not isinstance(i, int) or not 0 <= i < len(value):
                raise EvalError(f"index {key!r} is out of range for a list of {len(value)}")
            return value[i]
        if isinstance(value, Mapping):
            name = to_str(key)
            if name in value:
                return value[name]
            path = static_path(node)
            if path is not None:
                raise UnknownReference(path)
            raise EvalError(f"the map has no element {name!r}")
        raise EvalError(f"cannot index a {type_name(value)}")

    def splat(self, source: Any, each: Node) -> list[Any]:
        if source is None:
            return []
        elements = list(source) if isinstance(source, list | tuple) else [source]
        out: list[Any] = []
        for element in elements:
            self.items.append(element)
            try:
                out.append(self.eval(each))
            finally:
                self.items.pop()
        return out

    def call(self, node: Call) -> Any:
        if node.name in ("try", "can"):
            return self.try_can(node)
        args = [self.eval(arg) for arg in node.args]
        if node.expand:
            if not args or not isinstance(args[-1], list | tuple):
                raise EvalError(f"{node.name}(): the argument before '...' must be a list")
            args = [*args[:-1], *args[-1]]
        fn = self.scope.function(node.name)
        if fn is None:
            raise EvalError(f"unknown function {node.name}()")
        try:
            return fn(*args)
        except EvalError as e:
            raise EvalError(f"{node.name}(): {e.message}") from None
        except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as e:
            raise EvalError(f"{node.name}(): {e}") from None

    def try_can(self, node: Call) -> Any:
        # Lazy arguments: a failing one must not abort the call.
        for arg in node.args:
            try:
                value = self.eval(arg)
            except EvalError:
                continue
            return True if node.name == "can" else value
        if node.name == "can":
            return False
        raise EvalError("try(): no argument could be evaluated")

    def binary(self, op: str, left: Node, right: Node) -> Any:
        if op == "&&":
            return to_bool(self.eval(left)) and to_bool(self.eval(right))
        if op == "||":
            return to_bool(self.eval(left)) or to_bool(self.eval(right))
        a, b = self.eval(left), self.eval(right)
        if op == "==":
            return equal(a, b)
        if op == "!=":
            return not equal(a, b)
        x, y = to_number(a), to_number(b)
        match op:
            case "+":
                return normal_number(x + y) if isinstance(x + y, float) else x + y
            case "-":
                return normal_number(x - y) if isinstance(x - y, float) else x - y
            case "*":
                return normal_number(x * y) if isinstance(x * y, float) else x * y
            case "/":
                if y == 0:
                    raise EvalError("division by zero")
                return normal_number(x / y)
            case "%":
                if y == 0:
                    raise EvalError("modulo by zero")
                return math.fmod(x, y) if isinstance(x, float) or isinstance(y, float) else x % y
            case "<":
                return x < y
            case ">":
                return x > y
            case "<=":
                return x <= y
            case _:
                return x >= y

    def for_expr(self, node: ForExpr) -> Any:
        collection = self.eval(node.collection)
        if isinstance(collection, Mapping):
            pairs: list[tuple[Any, Any]] = [(k, collection[k]) for k in sorted(collection)]
        elif isinstance(collection, list | tuple):
            pairs = list(enumerate(collection))
        else:
            raise EvalError(f"cannot iterate over a {type_name(collection)}")
        out_list: list[Any] = []
        out_map: dict[str, Any] = {}
        saved = dict(self.bound)
        try:
            for k, v in pairs:
                if node.key_var is not None:
                    self.bound[node.key_var] = k
                self.bound[node.value_var] = v
                if node.cond is not None and not to_bool(self.eval(node.cond)):
                    continue
                if node.key is None:
                    out_list.append(self.eval(node.value))
                    continue
                key = self.key(node.key)
                value = self.eval(node.value)
                if node.group:
                    out_map.setdefault(key, []).append(value)
                elif key in out_map:
                    raise EvalError(f"duplicate key {key!r} in a for expression (use '...')")
                else:
                    out_map[key] = value
        finally:
            self.bound = saved
        return out_list if node.key is None else out_map
