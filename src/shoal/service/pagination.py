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


def decode(operation: str, token: str | None) -> Any:
    """The cursor inside `token`, or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        doc = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(doc, dict) and doc.get("op") == operation and "k" in doc:
            return doc["k"]
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        pass
    raise InvalidRequest(f"Invalid nextToken: {token!r} was not returned by {operation}.")


def page_size(requested: int | None, default: int, maximum: int) -> int:
    if requested is None:
        return default
    if not 1 <= requested <= maximum:
        raise InvalidRequest(f"maxResults must be between 1 and {maximum}; got {requested}.")
    return requested
