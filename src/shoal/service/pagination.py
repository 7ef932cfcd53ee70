"""Opaque nextToken values: a base64 envelope around a keyset cursor.

The token names the operation it belongs to, so a token from one call is
rejected by another instead of silently returning the wrong page.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from shoal.domain.errors import InvalidRequest


def encode(operation: str, key: Any) -> str:
    raw = orjson.dumps({"op": operation, "k": key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_MAX_INT = 2**63 - 1


def decode(operation: str, token: str | None) -> Any:
    """The cursor inside `token`, or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        doc = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(doc, dict) and doc.get("op") == operation and doc.get("k") is not None:
            return doc["k"]
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        pass
    raise _invalid(operation, token)


def _invalid(operation: str, token: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid nextToken: {token!r} was not returned by {operation}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT


def decode_name(operation: str, token: str | None) -> str | None:
    """A cursor that is a resource name (the last one of the previous page)."""
    cursor = decode(operation, token)
    if cursor is None or isinstance(cursor, str):
        return cursor
    raise _invalid(operation, str(token))


def decode_int(operation: str, token: str | None) -> int | None:
    """A cursor that is a sequence number."""
    cursor = decode(operation, token)
    if cursor is None:
        return None
    if _is_int(cursor):
        return int(cursor)
    raise _invalid(operation, str(token))


def decode_name_revision(operation: str, token: str | None) -> tuple[str, int] | None:
    """A cursor that is a (name, revision) pair."""
    cursor = decode(operation, token)
    if cursor is None:
        return None
    if (
        isinstance(cursor, list)
        and len(cursor) == 2
        and isinstance(cursor[0], str)
        and _is_int(cursor[1])
    ):
        return cursor[0], cursor[1]
    raise _invalid(operation, str(token))


def page_size(requested: int | None, default: int, maximum: int) -> int:
    if requested is None:
        return default
    if not 1 <= requested <= maximum:
        raise InvalidRequest(f"maxResults must be between 1 and {maximum}; got {requested}.")
    return requested
