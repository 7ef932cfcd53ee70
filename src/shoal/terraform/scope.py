"""Evaluating a configuration: variables, locals, and what references mean.

`Evaluation` is the expressions' `Scope`: `var.x` is a variable, `local.x` a
local, `module.vpc.private_subnets` a made-up module output, and
`aws_x.name.attr` a resource attribute: for the Batch and EventBridge
resources shoal runs, what the plan learned from the server (their real
ARNs); for the rest, the resource's own arguments or a stand-in (`stubs`).
Everything is computed when first read and then kept, and every error
carries the file, line and address of the block it comes from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shoal.terraform import stubs
from shoal.terraform.errors import EvalError, UnknownReference
from shoal.terraform.expressions import evaluate, to_str
from shoal.terraform.functions import FUNCTIONS
from shoal.terraform.hcl import Block, BlockBody, Configuration
from shoal.terraform.parser import parse_template
from shoal.terraform.syntax import Node, Template, Variable, format_path, references

# Arguments that steer Terraform rather than describe the resource.
META_ARGUMENTS = frozenset(
    {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
)
_MODULE_META = frozenset({"source", "version", "providers"})
# Names valid inside a block whatever the configuration defines.
_BUILTIN_ROOTS = frozenset({"path", "terraform", "count", "each", "self"})


class _Lazy(Mapping[str, Any]):
    """A mapping whose values are computed on first read."""

    def __init__(self, keys: list[str], compute: Callable[[str], Any]) -> None:
        self._keys = keys
        self._compute = compute
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            if key not in self._keys:
                raise KeyError(key)
            self._cache[key] = self._compute(key)
        return self._cache[key]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class _Attributes(Mapping[str, Any]):
    """A resource's attributes: every name reads as something (AWS resources
    have many computed attributes; an unknown one is a plausible string)."""

    def __init__(self, names: list[str], compute: Callable[[str], Any]) -> None:
        self._names = names
        self._compute = compute
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            self._cache[key] = self._compute(key)
        return self._cache[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _blocks(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, BlockBody) for v in value)


def _strings(raw: Any) -> Iterator[tuple[str, str]]:
    """Every string in a block body, with the top-level argument it is under."""
    for key, value in raw.items():
        if key in ("lifecycle", "provider", "providers"):
            continue  # names of arguments and provider configurations, not values
        yield from ((key, s) for s in _walk(value))


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(k)
            yield from _walk(v)


class Evaluation:
    """The values of one configuration. `managed` holds, per address of a
    resource shoal runs, the attributes the plan has learned (its ARN ...);
    `predict` gives them for one not yet reached."""

    def __init__(
        self,
        config: Configuration,
        variables: dict[str, Any],
        env: stubs.Environment,
        managed_types: frozenset[str],
    ) -> None:
        self.config = config
        self.variables = variables
        self.env = env
        self.managed_types = managed_types
        self.managed: dict[str, Mapping[str, Any]] = {}
        self.predict: Callable[[Block], Mapping[str, Any]] | None = None
        self.resources: dict[str, dict[str, Block]] = {}
        self.data: dict[str, dict[str, Block]] = {}
        for block in config.blocks:
            if block.kind == "resource":
                self.resources.setdefault(block.labels[0], {})[block.labels[1]] = block
            elif block.kind == "data":
                self.data.setdefault(block.labels[0], {})[block.labels[1]] = block
        self.modules = {b.labels[0]: b for b in config.of_kind("module")}
        self.locals = {b.labels[0]: b for b in config.of_kind("local")}
        self._values: dict[tuple[str, str], Any] = {}
        self._active: list[str] = []
        self._roots: dict[str, Any] = {}

    # -- Scope
    def root(self, name: str) -> Any:
        if name in self._roots:
            return self._roots[name]
        value: Any
        if name == "var":
            value = self.variables
        elif name == "local":
            value = _Lazy(list(self.locals), self._local)
        elif name == "module":
            value = _Lazy(list(self.modules), self._module)
        elif name == "data":
            value = _Lazy(
                list(self.data),
                lambda t: _Lazy(list(self.data[t]), lambda n: self._instance(self.data[t][n])),
            )
        elif name == "path":
            where = str(self.config.directory)
            value = {"module": where, "root": where, "cwd": os.getcwd()}
        elif name == "terraform":
            value = {"workspace": "default"}
        elif name in ("count", "each", "self"):
            raise EvalError(f"{name} can only be used in a resource that sets it")
        else:
            blocks = self.resources.get(name, {})
            value = _Lazy(list(blocks), lambda n: self._instance(blocks[n]))
        self._roots[name] = value
        return value

    def function(self, name: str) -> Callable[..., Any] | None:
        return FUNCTIONS.get(name)

    # -- values of blocks
    def value(self, block: Block, argument: str, raw: Any, bound: Mapping[str, Any]) -> Any:
        """python-hcl2's `raw` value of `argument` in `block`, evaluated."""
        try:
            return self._raw(raw, bound)
        except UnknownReference as e:
            line = self.config.line_of(block, e.path)
            raise block.where.at(line).error(e.message) from None
        except EvalError as e:
            line = self.config.line_of_argument(block, argument)
            raise block.where.at(line).error(f"{argument}: {e.message}") from None

    def _raw(self, raw: Any, bound: Mapping[str, Any]) -> Any:
        if isinstance(raw, str):
            return evaluate(parse_template(raw), self, bound)
        if isinstance(raw, list):
            return [self._raw(v, bound) for v in raw]
        if isinstance(raw, dict):
            return {to_str(self._raw(k, bound)): self._raw(v, bound) for k, v in raw.items()}
        return raw

    def body(self, block: Block, bound: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A block's arguments evaluated; nested blocks as lists of dicts;
        meta-arguments (count, lifecycle, ...) left out."""
        skip = META_ARGUMENTS | (_MODULE_META if block.kind == "module" else frozenset())
        return self._body(block, block.body, dict(bound or {}), skip)

    def _body(
        self, block: Block, body: Mapping[str, Any], bound: dict[str, Any], skip: frozenset[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, raw in body.items():
            if key in skip:
                continue
            if key == "dynamic":
                for item in raw:
                    for label, spec in item.items():
                        out.setdefault(label, []).extend(self._dynamic(block, label, spec, bound))
            elif _blocks(raw):
                out[key] = [self._body(block, b, bound, frozenset()) for b in raw]
            else:
                out[key] = self.value(block, key, raw, bound)
        return out

    def _dynamic(
        self, block: Block, label: str, spec: Mapping[str, Any], bound: dict[str, Any]
    ) -> list[dict[str, Any]]:
        items = self.value(block, "dynamic", spec.get("for_each", []), bound)
        iterator = label
        if "iterator" in spec:
            node = parse_template(str(spec["iterator"]))
            iterator = _bare_name(node) or label
        pairs = sorted(items.items()) if isinstance(items, Mapping) else list(enumerate(items))
        contents = spec.get("content") or [BlockBody()]
        out: list[dict[str, Any]] = []
        for k, v in pairs:
            inner = {**bound, iterator: {"key": k, "value": v}}
            out.append(self._body(block, contents[0], inner, frozenset()))
        return out

    def argument(self, block: Block, name: str, bound: Mapping[str, Any] | None = None) -> Any:
        """One argument of `block` (None when absent), evaluated once per instance."""
        key = (block.address + repr(sorted((bound or {}).items())), name)
        if key not in self._values:
            raw = block.body.get(name)
            if isinstance(raw, list) and _blocks(raw):
                self._values[key] = [
                    self._body(block, b, dict(bound or {}), frozenset()) for b in raw
                ]
            else:
                self._values[key] = (
                    None if raw is None else self.value(block, name, raw, bound or {})
                )
        return self._values[key]

    def _args(self, block: Block, bound: Mapping[str, Any]) -> Mapping[str, Any]:
        names = [k for k in block.body if k not in META_ARGUMENTS]
        return _Lazy(names, lambda n: self.argument(block, n, bound))

    # -- what references resolve to
    def _guard(self, address: str, block: Block) -> None:
        if address in self._active:
            cycle = " -> ".join([*self._active[self._active.index(address) :], address])
            raise block.where.error(f"dependency cycle: {cycle}")

    def _local(self, name: str) -> Any:
        block = self.locals[name]
        self._guard(block.address, block)
        self._active.append(block.address)
        try:
            return self.value(block, name, block.body["value"], {})
        finally:
            self._active.pop()

    def _module(self, name: str) -> Mapping[str, Any]:
        block = self.modules[name]
        args = self._args(block, {})
        return _Attributes([], lambda output: stubs.module_output(self.env, name, args, output))

    def _instance(self, block: Block) -> Any:
        """`aws_x.name`: one instance's attributes, or a list / map of them
        when the block sets count / for_each."""
        if "count" in block.body:
            count = self.argument(block, "count")
            return [self._attributes(block, {"count": {"index": i}}) for i in range(int(count))]
        if "for_each" in block.body:
            items = self.argument(block, "for_each")
            if isinstance(items, Mapping):
                pairs = [(str(k), items[k]) for k in items]
            else:
                pairs = [(to_str(v), v) for v in items]
            return {k: self._attributes(block, {"each": {"key": k, "value": v}}) for k, v in pairs}
        return self._attributes(block, {})

    def _attributes(self, block: Block, bound: Mapping[str, Any]) -> Mapping[str, Any]:
        args = self._args(block, bound)
        type_, label = block.labels
        address = block.address
        if "count" in bound:
            address += f"[{bound['count']['index']}]"
        elif "each" in bound:
            address += f'["{bound["each"]["key"]}"]'

        def compute(attr: str) -> Any:
            self._guard(f"{address}.{attr}", block)
            self._active.append(f"{address}.{attr}")
            try:
                if block.kind == "resource" and type_ in self.managed_types:
                    known = self.managed.get(block.address)
                    if known is None and self.predict is not None:
                        known = self.predict(block)
                    if known is not None and attr in known:
                        return known[attr]
                if block.kind == "data":
                    return stubs.data_attribute(self.env, type_, label, address, args, attr)
                return stubs.resource_attribute(self.env, type_, label, address, args, attr)
            finally:
                self._active.pop()

        return _Attributes(list(args), compute)

    # -- before anything runs
    def check_references(self) -> None:
        """Every reference in every block names something the files define
        (raises ApplyError at the first that does not)."""
        for block in self.config.blocks:
            if block.kind != "variable":  # `type = string` is a type, not a reference
                self.dependencies(block)

    def dependencies(self, block: Block) -> set[str]:
        """The addresses `block` refers to (resources, data, modules, locals)."""
        found: set[str] = set()
        bound = _BUILTIN_ROOTS | _dynamic_iterators(block.body)
        for argument, text in _strings(block.body):
            try:
                node = parse_template(text)
            except EvalError as e:
                line = self.config.line_of_argument(block, argument)
                raise block.where.at(line).error(f"{argument}: {e.message}") from None
            for root, steps in references(node, frozenset(bound)):
                address = self._target(root, steps)
                if address is None:
                    path = format_path(root, steps[:2] if root == "data" else steps[:1])
                    line = self.config.line_of(block, path)
                    raise block.where.at(line).error(f"unknown reference {path}")
                if address:
                    found.add(address)
        return found

    def _target(self, root: str, steps: tuple[str | int, ...]) -> str | None:
        """The address a reference depends on; "" for one that needs nothing,
        None for one to nothing the files define."""
        first = steps[0] if steps else None
        if root == "var":
            return "" if first in self.variables else None
        if root == "local":
            return f"local.{first}" if first in self.locals else None
        if root == "module":
            return f"module.{first}" if first in self.modules else None
        if root == "data":
            second = steps[1] if len(steps) > 1 else None
            found = isinstance(first, str) and second in self.data.get(first, {})
            return f"data.{first}.{second}" if found else None
        if root in _BUILTIN_ROOTS:
            return ""
        if isinstance(first, str) and first in self.resources.get(root, {}):
            return f"{root}.{first}"
        return None


def _bare_name(node: Node) -> str | None:
    if isinstance(node, Template) and len(node.parts) == 1 and isinstance(node.parts[0], Variable):
        return node.parts[0].name
    return None


def _dynamic_iterators(body: Mapping[str, Any]) -> set[str]:
    """The iterator names of the dynamic blocks in `body`, at any depth."""
    names: set[str] = set()
    for key, value in body.items():
        if not isinstance(value, list):
            continue
        for item in value:
            if key == "dynamic" and isinstance(item, Mapping):
                for label, spec in item.items():
                    names.add(label)
                    if isinstance(spec, Mapping) and "iterator" in spec:
                        names.add(_bare_name(parse_template(str(spec["iterator"]))) or label)
                    if isinstance(spec, Mapping):
                        names |= _dynamic_iterators(spec)
            elif isinstance(item, BlockBody):
                names |= _dynamic_iterators(item)
    return names
