"""HCL expressions as a tree, and the references a tree makes.

The parser (`parser.py`) builds these nodes from the text python-hcl2 gives;
the evaluator (`expressions.py`) computes them; `references` lists the names
a tree uses, which orders the resources and finds unknown references before
anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class Node:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any


@dataclass(frozen=True, slots=True)
class Template(Node):
    """Literal text and interpolations; a lone interpolation keeps its type."""

    parts: tuple[str | Node, ...]


@dataclass(frozen=True, slots=True)
class Variable(Node):
    name: str


@dataclass(frozen=True, slots=True)
class GetAttr(Node):
    obj: Node
    name: str


@dataclass(frozen=True, slots=True)
class Index(Node):
    obj: Node
    key: Node


@dataclass(frozen=True, slots=True)
class SplatItem(Node):
    """The element a splat's trailing steps apply to."""


@dataclass(frozen=True, slots=True)
class Splat(Node):
    source: Node
    each: Node


@dataclass(frozen=True, slots=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]
    expand: bool  # f(a, list...): the last argument's elements are the arguments


@dataclass(frozen=True, slots=True)
class ListExpr(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class ObjectExpr(Node):
    items: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Conditional(Node):
    cond: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True, slots=True)
class ForExpr(Node):
    key_var: str | None
    value_var: str
    collection: Node
    key: Node | None  # set for `{for ...}`, None for `[for ...]`
    value: Node
    cond: Node | None
    group: bool  # `{for k, v in x : k => v...}`


def normal_number(value: float) -> int | float:
    """HCL has one number type: 4.0 is 4."""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
        return int(value)
    return value


# -- static analysis ----------------------------------------------------------

Step = str | int


def _traversal(node: Node) -> tuple[str, tuple[Step, ...]] | None:
    match node:
        case Variable(name):
            return name, ()
        case GetAttr(obj, name):
            inner = _traversal(obj)
            return None if inner is None else (inner[0], (*inner[1], name))
        case Index(obj, Literal(value)) if isinstance(value, str | int) and not isinstance(
            value, bool
        ):
            inner = _traversal(obj)
            return None if inner is None else (inner[0], (*inner[1], value))
    return None


def format_path(root: str, steps: tuple[Step, ...]) -> str:
    out = root
    for step in steps:
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out


def static_path(node: Node) -> str | None:
    """`aws_s3_bucket.input.bucket` for a reference written that way."""
    found = _traversal(node)
    return None if found is None else format_path(*found)


def references(
    node: Node, bound: frozenset[str] = frozenset()
) -> Iterator[tuple[str, tuple[Step, ...]]]:
    """Each reference in `node` as (root name, the static steps after it),
    leaving out names bound by for expressions and `bound`."""
    found = _traversal(node)
    if found is not None:
        if found[0] not in bound:
            yield found
        return
    match node:
        case Template(parts):
            for part in parts:
                if isinstance(part, Node):
                    yield from references(part, bound)
        case GetAttr(obj, _):
            yield from references(obj, bound)
        case Index(obj, key):
            yield from references(obj, bound)
            yield from references(key, bound)
        case Splat(source, each):
            yield from references(source, bound)
            yield from references(each, bound)
        case Call(_, args, _):
            for arg in args:
                yield from references(arg, bound)
        case ListExpr(items):
            for item in items:
                yield from references(item, bound)
        case ObjectExpr(items):
            for k, v in items:
                yield from references(k, bound)
                yield from references(v, bound)
        case Unary(_, operand):
            yield from references(operand, bound)
        case Binary(_, left, right):
            yield from references(left, bound)
            yield from references(right, bound)
        case Conditional(cond, then, otherwise):
            for part in (cond, then, otherwise):
                yield from references(part, bound)
        case ForExpr():
            yield from references(node.collection, bound)
            inner = bound | {node.value_var} | ({node.key_var} if node.key_var else set())
            for inside in (node.key, node.value, node.cond):
                if inside is not None:
                    yield from references(inside, inner)
