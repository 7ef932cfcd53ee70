"""Terraform's built-in functions that Batch configurations commonly call.

Each takes and returns plain values (str, numbers, bool, None, list, dict);
lazily computed objects (a resource's attributes) are turned into dicts
first. Functions whose result is not deterministic (timestamp, uuid) are left
out on purpose: a re-apply must compute the same values to change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shoal.terraform.errors import EvalError
from shoal.terraform.expressions import equal, to_bool, to_number, to_str, type_name


def plain(value: Any) -> Any:
    """`value` with every Mapping made a dict (json and callers need real ones)."""
    if isinstance(value, Mapping):
        return {str(k): plain(value[k]) for k in value}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _list(value: Any, fn: str) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    raise EvalError(f"{fn}() wants a list, not a {type_name(value)}")


def _map(value: Any, fn: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise EvalError(f"{fn}() wants a map, not a {type_name(value)}")


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def format_(fmt: Any, *args: Any) -> str:
    """Go-style verbs as Terraform's format() has them: %s %v %d %f %q %t %x %%."""
    values = list(args)

    def verb(m: re.Match[str]) -> str:
        flags, width, precision, kind = m.group(1), m.group(2), m.group(3), m.group(4)
        if kind == "%":
            return "%"
        if not values:
            raise EvalError("not enough arguments for the format string")
        value = values.pop(0)
        spec = flags.replace("#", "") + (width or "") + (f".{precision}" if precision else "")
        if kind in "sv":
            text = to_str(value) if not isinstance(value, list | dict) else jsonencode(value)
            return f"{text:{'<' if '-' in flags else '>'}{width or ''}}"
        if kind == "q":
            return json.dumps(to_str(value))
        if kind == "t":
            return "true" if to_bool(value) else "false"
        number = to_number(value)
        if kind == "d":
            return format(int(number), spec.replace("-", "<") + "d")
        if kind in "xXob":
            return format(int(number), spec + kind)
        if kind in "feEgG":
            return format(float(number), spec.replace("-", "<") + kind)
        raise EvalError(f"unsupported format verb %{kind}")

    return _VERB.sub(verb, to_str(fmt))


def jsonencode(value: Any) -> str:
    # Terraform orders object keys by name and writes no spaces.
    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def jsondecode(text: Any) -> Any:
    try:
        return json.loads(to_str(text))
    except json.JSONDecodeError as e:
        raise EvalError(f"invalid JSON: {e}") from None


def _replace(text: Any, search: Any, repl: Any) -> str:
    s, pattern, r = to_str(text), to_str(search), to_str(repl)
    if len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/"):
        # Terraform's regex replacements name groups $1 or ${1}.
        python_repl = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", r)
        return re.sub(pattern[1:-1], python_repl, s)
    return s.replace(pattern, r)


def _substr(text: Any, offset: Any, length: Any) -> str:
    s, start, n = to_str(text), int(to_number(offset)), int(to_number(length))
    if start < 0:
        start += len(s)
    return s[start:] if n < 0 else s[start : start + n]


def _merge(*maps: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in maps:
        if m is not None:
            out.update(plain(_map(m, "merge")))
    return out


def _concat(*lists: Any) -> list[Any]:
    return [item for lst in lists for item in _list(lst, "concat")]


def _length(value: Any) -> int:
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise EvalError(f"length() of a {type_name(value)}")


def _lookup(mapping: Any, key: Any, *default: Any) -> Any:
    m = _map(mapping, "lookup")
    name = to_str(key)
    if name in m:
        return m[name]
    if default:
        return default[0]
    raise EvalError(f"lookup(): no key {name!r} and no default")


def _element(lst: Any, index: Any) -> Any:
    items = _list(lst, "element")
    if not items:
        raise EvalError("element() of an empty list")
    return items[int(to_number(index)) % len(items)]


def _distinct(lst: Any) -> list[Any]:
    out: list[Any] = []
    for item in _list(lst, "distinct"):
        if not any(equal(item, seen) for seen in out):
            out.append(item)
    return out


def _flatten(lst: Any) -> list[Any]:
    out: list[Any] = []
    for item in _list(lst, "flatten"):
        out.extend(_flatten(item) if isinstance(item, list | tuple) else [item])
    return out


def _toset(lst: Any) -> list[Any]:
    # Terraform's sets of strings iterate in lexical order.
    items = _distinct(lst)
    return sorted(items, key=to_str) if all(isinstance(i, str) for i in items) else items


def _coalesce(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    raise EvalError("coalesce(): every argument is null or empty")


def _coalescelist(*lists: Any) -> list[Any]:
    for lst in lists:
        if _list(lst, "coalescelist"):
            return list(lst)
    return []


def _index(lst: Any, value: Any) -> int:
    for i, item in enumerate(_list(lst, "index")):
        if equal(item, value):
            return i
    raise EvalError("index(): the value is not in the list")


def _range(*args: Any) -> list[int | float]:
    nums = [to_number(a) for a in args]
    start, stop, step = (0, nums[0], 1) if len(nums) == 1 else (*nums[:2], 1)
    if len(nums) == 3:
        step = nums[2]
    out: list[int | float] = []
    x = start
    while (step > 0 and x < stop) or (step < 0 and x > stop):
        out.append(x)
        x += step
    return out


def _one(lst: Any) -> Any:
    items = _list(lst, "one")
    if len(items) > 1:
        raise EvalError("one(): the list has more than one element")
    return items[0] if items else None


def _file(path: Any) -> str:
    try:
        return Path(to_str(path)).read_text()
    except OSError as e:
        raise EvalError(f"file(): {e}") from None


def _digest(name: str) -> Callable[[Any], str]:
    return lambda text: hashlib.new(name, to_str(text).encode()).hexdigest()


def _tomap(value: Any) -> dict[str, Any]:
    return dict(plain(_map(value, "tomap")))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "format": format_,
    "formatlist": lambda fmt, *lists: [
        format_(fmt, *row) for row in zip(*[_list(x, "formatlist") for x in lists], strict=True)
    ],
    "join": lambda sep, *lists: to_str(sep).join(to_str(x) for x in _concat(*lists)),
    "split": lambda sep, text: to_str(text).split(to_str(sep)),
    "lower": lambda s: to_str(s).lower(),
    "upper": lambda s: to_str(s).upper(),
    "title": lambda s: to_str(s).title(),
    "trimspace": lambda s: to_str(s).strip(),
    "trim": lambda s, chars: to_str(s).strip(to_str(chars)),
    "trimprefix": lambda s, p: to_str(s).removeprefix(to_str(p)),
    "trimsuffix": lambda s, p: to_str(s).removesuffix(to_str(p)),
    "startswith": lambda s, p: to_str(s).startswith(to_str(p)),
    "endswith": lambda s, p: to_str(s).endswith(to_str(p)),
    "strrev": lambda s: to_str(s)[::-1],
    "replace": _replace,
    "substr": _substr,
    "concat": _concat,
    "merge": _merge,
    "tostring": lambda v: None if v is None else to_str(v),
    "tonumber": lambda v: None if v is None else to_number(v),
    "tobool": lambda v: None if v is None else to_bool(v),
    "tolist": lambda v: _list(v, "tolist"),
    "toset": _toset,
    "tomap": _tomap,
    "length": _length,
    "jsonencode": jsonencode,
    "jsondecode": jsondecode,
    "lookup": _lookup,
    "element": _element,
    "contains": lambda lst, v: any(equal(x, v) for x in _list(lst, "contains")),
    "keys": lambda m: sorted(_map(m, "keys")),
    "values": lambda m: [_map(m, "values")[k] for k in sorted(_map(m, "values"))],
    "coalesce": _coalesce,
    "coalescelist": _coalescelist,
    "compact": lambda lst: [x for x in _list(lst, "compact") if x is not None and x != ""],
    "distinct": _distinct,
    "flatten": _flatten,
    "slice": lambda lst, a, b: _list(lst, "slice")[int(to_number(a)) : int(to_number(b))],
    "sort": lambda lst: sorted(to_str(x) for x in _list(lst, "sort")),
    "reverse": lambda lst: _list(lst, "reverse")[::-1],
    "index": _index,
    "range": _range,
    "one": _one,
    "zipmap": lambda ks, vs: dict(
        zip([to_str(k) for k in _list(ks, "zipmap")], _list(vs, "zipmap"), strict=True)
    ),
    "min": lambda *xs: min(to_number(x) for x in xs),
    "max": lambda *xs: max(to_number(x) for x in xs),
    "sum": lambda lst: sum(to_number(x) for x in _list(lst, "sum")),
    "abs": lambda x: abs(to_number(x)),
    "ceil": lambda x: math.ceil(to_number(x)),
    "floor": lambda x: math.floor(to_number(x)),
    "base64encode": lambda s: base64.b64encode(to_str(s).encode()).decode(),
    "base64decode": lambda s: base64.b64decode(to_str(s)).decode(),
    "md5": _digest("md5"),
    "sha1": _digest("sha1"),
    "sha256": _digest("sha256"),
    "file": _file,
    "fileexists": lambda p: Path(to_str(p)).is_file(),
    "basename": lambda p: os.path.basename(to_str(p)),
    "dirname": lambda p: os.path.dirname(to_str(p)),
}
