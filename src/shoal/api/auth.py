"""Who may call: AWS Signature Version 4, access keys with roles, rate limits.

A server given access keys (`--credentials FILE`) verifies every request's
SigV4 signature the way AWS does: botocore's own signer computes the
signature the request should carry from the headers it says it signed, so
what the SDKs and the aws CLI send is checked by the code that made it.
Failures answer as AWS does (HTTP 403): an unknown key or a wrong session
token is `UnrecognizedClientException`, a wrong signature or a clock more
than five minutes off is `InvalidSignatureException`, no signature at all is
`MissingAuthenticationTokenException`, an operation the key's role does not
allow is `AccessDeniedException`; too many requests is 429
`TooManyRequestsException`.

Roles:
- `admin`: everything;
- `read`: Describe*, List*, Get* (Batch, Logs, EventBridge), the dashboard's
  pages and /metrics;
- `submit`: what `read` may, and SubmitJob, CancelJob and TerminateJob on the
  queues listed with the key (`"queues": [...]`; every queue when absent).

The credentials file (JSON):

    {"keys": [{"accessKeyId": "AKIA...", "secretAccessKey": "...", "role": "admin"},
              {"accessKeyId": "...", "secretAccessKey": "...", "sessionToken": "...",
               "role": "submit", "queues": ["low"]}],
     "rateLimit": {"requestsPerSecond": 100, "burst": 200}}

A browser or Prometheus cannot sign: /ui and /metrics also take HTTP Basic
authentication with an access key id and its secret (use them over TLS, or
on loopback).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROLES = ("admin", "read", "submit")
MAX_SKEW_SECONDS = 5 * 60  # AWS: 5 minutes
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_READ = re.compile(r"^(Describe|List|Get|Filter)")
_SUBMIT = {"SubmitJob", "CancelJob", "TerminateJob"}


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Key:
    access_key_id: str
    secret: str
    role: str
    session_token: str | None = None
    queues: frozenset[str] | None = None  # submit: the queues it may use; None = all


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class KeyRing:
    keys: dict[str, Key]
    rate: float | None = None  # requests per second per key
    burst: float = 0.0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Raises ValueError with what is wrong in the file."""
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read the credentials file {path}: {e}") from None
        keys: dict[str, Key] = {}
        for i, entry in enumerate(doc.get("keys") or []):
            where = f"{path}: keys[{i}]"
            try:
                key_id, secret = str(entry["accessKeyId"]), str(entry["secretAccessKey"])
            except (KeyError, TypeError):
                raise ValueError(f"{where} needs accessKeyId and secretAccessKey") from None
            role = entry.get("role", "admin")
            if role not in ROLES:
                raise ValueError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
            queues = entry.get("queues")
            keys[key_id] = Key(
                key_id,
                secret,
                role,
                entry.get("sessionToken"),
                frozenset(queues) if queues is not None else None,
            )
        if not keys:
            raise ValueError(f"{path} has no keys")
        limit = doc.get("rateLimit") or {}
        rate = limit.get("requestsPerSecond")
        burst = float(limit.get("burst", rate or 0))
        return cls(keys, float(rate) if rate else None, burst)

    # -- who --------------------------------------------------------------------
    def verify(
        self,
        *,
        method: str,
        raw_path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        region: str,
        allow_basic: bool = False,
        now: float | None = None,
    ) -> Key:
        """The key that signed the request (or, with `allow_basic`, that
        HTTP Basic names with its secret); AuthError if none did."""
        header = headers.get("authorization")
        if header is None:
            raise AuthError(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        if allow_basic and header.startswith("Basic "):
            return self._basic(header[len("Basic ") :])
        m = _AUTH.match(header.strip())
        if m is None:
            raise AuthError(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                "parameters (AWS4-HMAC-SHA256).",
            )
        key = self.keys.get(m["key"])
        if key is None or (key.session_token or None) != headers.get("x-amz-security-token"):
            raise AuthError(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        stamp = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise AuthError(
                403, "IncompleteSignatureException", "X-Amz-Date is missing or not valid."
            ) from None
        current = time.time() if now is None else now
        if abs(current - signed_at.timestamp()) > MAX_SKEW_SECONDS:
            limit = datetime.fromtimestamp(current - MAX_SKEW_SECONDS, UTC)
            raise AuthError(
                403,
                "InvalidSignatureException",
                f"Signature expired: {stamp} is now earlier than "
                f"{limit.strftime('%Y%m%dT%H%M%SZ')} (now - 5 min.)",
            )
        if m["date"] != stamp[:8]:
            raise AuthError(
                403, "InvalidSignatureException", "Credential date does not match X-Amz-Date."
            )
        if m["region"] != region:
            raise AuthError(
                403,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{m['region']}'. "
                f"This server is in '{region}'.",
            )
        signed = m["signed"].split(";")
        if "host" not in signed or any(h not in headers for h in signed):
            raise AuthError(
                403, "InvalidSignatureException", "Signed headers must include host and be sent."
            )
        try:
            expected = _signature(
                key, method, raw_path, query, headers, signed, body, stamp, region, m["service"]
            )
        except ValueError:  # a Host or path that makes no URL ("[", ...)
            expected = ""
        if not hmac.compare_digest(expected, m["signature"]):
            raise AuthError(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.",
            )
        return key

    def _basic(self, value: str) -> Key:
        """HTTP Basic with an access key id and its secret (dashboard, metrics)."""
        try:
            key_id, _, secret = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            key_id, secret = "", ""
        key = self.keys.get(key_id)
        # Bytes: compare_digest refuses str with characters beyond ASCII.
        if key is None or not hmac.compare_digest(key.secret.encode(), secret.encode()):
            raise AuthError(
                403, "UnrecognizedClientException", "The access key or secret is wrong."
            )
        return key

    # -- how often --------------------------------------------------------------
    def admit(self, key: Key, now: float | None = None) -> None:
        """Take one request from the key's budget; AuthError 429 when spent."""
        if self.rate is None:
            return
        current = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.setdefault(key.access_key_id, _Bucket(self.burst, current))
            bucket.tokens = min(self.burst, bucket.tokens + (current - bucket.at) * self.rate)
            bucket.at = current
            if bucket.tokens < 1:
                raise AuthError(
                    429, "TooManyRequestsException", "Too Many Requests: rate exceeded."
                )
            bucket.tokens -= 1


def _signature(
    key: Key,
    method: str,
    raw_path: str,
    query: str,
    headers: dict[str, str],
    signed: list[str],
    body: bytes,
    stamp: str,
    region: str,
    service: str,
) -> str:
    """The signature the request should carry, computed by botocore's signer
    from exactly the headers the client signed."""
    url = f"http://{headers['host']}{raw_path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers={h: headers[h] for h in signed})
    request.context["timestamp"] = stamp
    signer = SigV4Auth(
        Credentials(key.access_key_id, key.secret, key.session_token), service, region
    )
    canonical = signer.canonical_request(request)
    result: str = signer.signature(signer.string_to_sign(request, canonical), request)
    return result


def authorize(key: Key, operation: str, queue: str | None = None) -> None:
    """AuthError 403 unless the key's role allows `operation`; `queue` is
    the job queue (name or ARN) a SubmitJob, CancelJob or TerminateJob is
    about."""
    if key.role == "admin" or _READ.match(operation):
        return
    name = (queue or "").rsplit("/", 1)[-1]
    if key.role == "submit" and operation in _SUBMIT and (key.queues is None or name in key.queues):
        return
    on = f" on job queue {name}" if name else ""
    raise AuthError(
        403,
        "AccessDeniedException",
        f"User: {key.access_key_id} is not authorized to perform: {operation}{on} "
        f"(role {key.role}).",
    )
