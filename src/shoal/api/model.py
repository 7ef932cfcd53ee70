"""Requests checked against botocore's own service model.

botocore ships the exact shapes the SDKs serialise. Walking them here gives
type, required-member, enum and minimum checks for every operation without
retyping a hundred shapes, and prunes members the model does not know (newer
SDKs may send them; AWS ignores what it does not know, and so does shoal).
"""

from __future__ import annotations

import functools
import reprlib
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel

from shoal.domain.errors import InvalidRequest

# Enums that AWS matches case-insensitively, so they are not checked here.
_LENIENT_ENUMS = frozenset({"RetryAction"})

# The model's `integer` is a 32-bit and `long` a 64-bit signed number; larger
# values cannot be what the caller meant (and do not fit a SQLite INTEGER).
_INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


@functools.cache
def service_model(name: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object" if isinstance(value, dict) else type(value).__name__


# A value shown in a message: its start, and never more than three levels
# deep (repr() of a list nested 1000 deep, which JSON allows, would raise
# RecursionError).
_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxother = 3, 80, 80


def _wrong(path: str, expected: str, value: Any) -> InvalidRequest:
    shown = _PREVIEW.repr(value)
    return InvalidRequest(
        f"Invalid type for {path}: expected {expected}, got {_json_type(value)} {shown:.60}."
    )


def _check_min(shape: Any, path: str, value: Any, size: int | None = None) -> None:
    minimum = shape.metadata.get("min")
    if minimum is None:
        return
    if size is not None and size < minimum:
        unit = "characters" if isinstance(value, str) else "entries"
        raise InvalidRequest(f"{path} must have at least {minimum} {unit}.")
    if size is None and value < minimum:
        raise InvalidRequest(f"{path} must be at least {minimum}; got {value}.")


def clean(shape: Any, value: Any, path: str) -> Any:
    """`value` checked against `shape`, with unknown structure members dropped.

    A member sent as JSON null is treated as absent.
    """
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise _wrong(path, "object", value)
        out: dict[str, Any] = {}
        members = shape.members
        for key, item in value.items():
            if key in members and item is not None:
                out[key] = clean(members[key], item, f"{path}.{key}" if path else key)
        for required in shape.required_members:
            if required not in out and members[required].serialization.get("location") is None:
                where = f"{path}.{required}" if path else required
                raise InvalidRequest(f"Missing required parameter {where}.")
        return out
    if kind == "list":
        if not isinstance(value, list):
            raise _wrong(path, "list", value)
        _check_min(shape, path, value, len(value))
        return [clean(shape.member, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _wrong(path, "object", value)
        return {
            clean(shape.key, k, f"{path} key"): clean(shape.value, v, f"{path}.{k}")
            for k, v in value.items()
        }
    if kind == "string":
        if not isinstance(value, str):
            raise _wrong(path, "string", value)
        _check_min(shape, path, value, len(value))
        if shape.enum and shape.name not in _LENIENT_ENUMS and value not in shape.enum:
            raise InvalidRequest(
                f"Invalid value for {path}: {value!r} is not one of {', '.join(shape.enum)}."
            )
        return value
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(path, "integer", value)
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise InvalidRequest(
                f"Invalid value for {path}: {value} is out of range for a {kind} ({low} to {high})."
            )
        _check_min(shape, path, value)
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong(path, "number", value)
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _wrong(path, "boolean", value)
        return value
    return value


def clean_input(operation: OperationModel, params: dict[str, Any]) -> dict[str, Any]:
    shape = operation.input_shape
    if shape is None:
        return {}
    result: dict[str, Any] = clean(shape, params, "")
    return result
