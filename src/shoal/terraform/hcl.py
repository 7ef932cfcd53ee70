"""Reading .tf files with python-hcl2, keeping where each block is.

python-hcl2 (7.x, `with_meta=True`) gives every block `__start_line__` and
`__end_line__`; attributes have no lines of their own, so a message about one
finds it by text inside its block's lines (`Configuration.line_of`).
Nested blocks become `BlockBody` dicts, which is how the evaluator tells a
`compute_environment_order { ... }` block from an attribute holding a list of
objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcl2.api import loads as hcl_loads
from lark.exceptions import UnexpectedInput

from shoal.terraform.errors import ApplyError, Where

_META = ("__start_line__", "__end_line__")


class BlockBody(dict[str, Any]):
    """A nested block's arguments (a dict), with the line it starts on."""

    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """A top-level block (resource, data, module, variable, output, provider,
    terraform) or one local value, with where it is."""

    kind: str
    labels: tuple[str, ...]
    body: dict[str, Any]
    where: Where
    end_line: int

    @property
    def address(self) -> str:
        return self.where.address


@dataclass(slots=True)
class Configuration:
    """All blocks of the files of one directory (or one file), in file order."""

    directory: Path
    blocks: list[Block] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)
    tfvars: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind]

    def line_of(self, block: Block, text: str) -> int:
        """The first line of `block` mentioning `text` as a whole word (else its start)."""
        lines = self.sources.get(block.where.file, [])
        pattern = re.compile(r"(?<![\w.-])" + re.escape(text) + r"(?![\w-])")
        for number in range(block.where.line, min(block.end_line, len(lines)) + 1):
            if pattern.search(lines[number - 1]):
                return number
        return block.where.line

    def line_of_argument(self, block: Block, name: str) -> int:
        """The line where `name = ...` (or `name {`) is written in `block`."""
        lines = self.sources.get(block.where.file, [])
        pattern = re.compile(r"^\s*" + re.escape(name) + r"\s*[={]")
        for number in range(block.where.line, min(block.end_line, len(lines)) + 1):
            if pattern.search(lines[number - 1]):
                return number
        return block.where.line


def _nested(value: Any) -> Any:
    """python-hcl2's value with its block dicts made BlockBody (meta keys removed)."""
    if isinstance(value, list):
        return [_nested(v) for v in value]
    if isinstance(value, dict):
        items = {k: _nested(v) for k, v in value.items() if k not in _META}
        if "__start_line__" in value:
            body = BlockBody(items)
            body.line = int(value["__start_line__"])
            return body
        return items
    return value


def _block(kind: str, labels: tuple[str, ...], raw: dict[str, Any], file: str) -> Block:
    address = {
        "resource": ".".join(labels),
        "data": "data." + ".".join(labels),
        "module": f"module.{labels[0]}" if labels else "module",
        "variable": f"var.{labels[0]}" if labels else "variable",
        "output": f"output.{labels[0]}" if labels else "output",
        "provider": f"provider.{labels[0]}" if labels else "provider",
    }.get(kind, kind)
    body = {k: _nested(v) for k, v in raw.items() if k not in _META}
    return Block(
        kind=kind,
        labels=labels,
        body=body,
        where=Where(file, int(raw.get("__start_line__", 1)), address),
        end_line=int(raw.get("__end_line__", raw.get("__start_line__", 1))),
    )


def _parse(path: Path, shown: str) -> tuple[dict[str, Any], list[str]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ApplyError(f"{shown}: cannot read: {e.strerror}") from None
    try:
        doc: dict[str, Any] = hcl_loads(text, with_meta=True)
    except UnexpectedInput as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ApplyError(f"{shown}:{e.line}:{e.column}: HCL syntax error: {first}") from None
    except Exception as e:  # python-hcl2 raises assorted errors on bad input
        raise ApplyError(f"{shown}: HCL syntax error: {e}") from None
    return doc, text.splitlines()


def _labelled(items: list[dict[str, Any]], depth: int) -> list[tuple[tuple[str, ...], Any]]:
    """python-hcl2 nests labels as dict keys: {"aws_x": {"name": body}}."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for item in items:
        if depth == 0:
            out.append(((), item))
            continue
        for label, inner in item.items():
            if label in _META:
                continue
            for labels, body in _labelled([inner], depth - 1):
                out.append(((label, *labels), body))
    return out


_LABELS = {
    "resource": 2,
    "data": 2,
    "module": 1,
    "variable": 1,
    "output": 1,
    "provider": 1,
    "terraform": 0,
}


def load(path: Path) -> Configuration:
    """The configuration in `path`: one .tf file, or every .tf file of a directory
    (with the directory's terraform.tfvars and *.auto.tfvars). Raises ApplyError with the
    file (and line, for syntax errors)."""
    if path.is_dir():
        files = sorted(path.glob("*.tf"))
        if not files:
            raise ApplyError(f"{path}: no .tf files in this directory")
        directory = path
    elif path.is_file():
        files, directory = [path], path.parent
    else:
        raise ApplyError(f"{path}: no such file or directory")
    config = Configuration(directory=directory)
    for file in files:
        shown = str(file) if path.is_dir() else str(path)
        doc, lines = _parse(file, shown)
        config.sources[shown] = lines
        for kind, items in doc.items():
            if kind == "locals":
                config.blocks.extend(_locals(items, shown, lines))
            elif kind in _LABELS:
                for labels, raw in _labelled(items, _LABELS[kind]):
                    config.blocks.append(_block(kind, labels, raw, shown))
    # Variable files are read from the configuration's directory, as Terraform does.
    for var_file in [directory / "terraform.tfvars", *sorted(directory.glob("*.auto.tfvars"))]:
        if var_file.is_file():
            doc, _ = _parse(var_file, str(var_file))
            config.tfvars.update({k: _nested(v) for k, v in doc.items() if k not in _META})
    return config


def _locals(items: list[dict[str, Any]], file: str, lines: list[str]) -> list[Block]:
    out: list[Block] = []
    for item in items:
        start = int(item.get("__start_line__", 1))
        end = int(item.get("__end_line__", start))
        for name, raw in item.items():
            if name in _META:
                continue
            line = start
            pattern = re.compile(r"^\s*" + re.escape(name) + r"\s*=")
            for number in range(start, min(end, len(lines)) + 1):
                if pattern.search(lines[number - 1]):
                    line = number
                    break
            out.append(
                Block(
                    kind="local",
                    labels=(name,),
                    body={"value": _nested(raw)},
                    where=Where(file, line, f"local.{name}"),
                    end_line=end,
                )
            )
    return out
