"""The ASGI application: one listener for everything shoal serves.

Routing is on the raw path: the ARN in `/v1/tags/{resourceArn}` arrives
percent-encoded with `%2F` for its slashes, so decoding before routing would
split it. The handlers are synchronous use-cases run on the event loop: the
store calls are short, and running them inline keeps the hot SubmitJob path
free of thread hand-offs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from shoal import web
from shoal.api import auth, batch
from shoal.api import events as events_api
from shoal.api import logs as logs_api
from shoal.api.auth import AuthError, Key, KeyRing
from shoal.api.errors import WireError, to_wire
from shoal.api.model import clean_input
from shoal.logs.store import LogStore
from shoal.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from shoal.metrics import Metrics
from shoal.service import interrupt
from shoal.service.context import Context

log = logging.getLogger("shoal.api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 1024 * 1024  # far above any Batch limit; guards memory, not semantics
_JSON = b"application/json"
_JSON_11 = b"application/x-amz-json-1.1"


# Answered without credentials: load balancers and tests probe it.
_OPEN = frozenset({"/health"})


class Request:
    __slots__ = ("body", "content_type", "headers", "key", "method", "path", "query", "service")

    def __init__(self, scope: Scope, body: bytes) -> None:
        self.method: str = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode()
        self.path: str = raw.decode("latin-1")
        self.query: str = scope.get("query_string", b"").decode("latin-1")
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        self.body = body
        self.service = "batch"  # decides how errors are encoded
        self.content_type = _JSON
        self.key: Key | None = None  # who signed it, when the server has keys

    def json_body(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            doc = orjson.loads(self.body)
        except orjson.JSONDecodeError as e:
            raise WireError(
                400, "ClientException", f"The request body is not valid JSON: {e}"
            ) from None
        if not isinstance(doc, dict):
            raise WireError(400, "ClientException", "The request body must be a JSON object.")
        return doc


Hook = Callable[[], Awaitable[None]]


class ShoalApp:
    def __init__(
        self,
        ctx: Context,
        *,
        logs: LogStore | None = None,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        metrics: Metrics | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        """`keys`: the access keys every request must be signed with (None:
        no authentication, for a server that listens on loopback only)."""
        self.ctx = ctx
        self.logs = logs
        self.metrics = metrics
        self.keys = keys
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        request: Request | None = None
        try:
            body = await _read_body(receive)
            if body is None:  # the client left mid-request: act on none of it
                return
            request = Request(scope, body)
            signed_in = self.keys is None or request.path in _OPEN
            if not signed_in and not await self._authenticate(request, send, request_id):
                return
            if web.is_dashboard(request.path):  # HTML pages, not an AWS API
                self._allow_dashboard(request)
                await web.serve(self.ctx, self.logs, request, send)
                return
            status, doc = self._dispatch(request)
            payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)  # bytes: as they are
            await _respond(send, status, payload, request_id, request.content_type)
        except Exception as e:  # every failure becomes an AWS-shaped error
            if isinstance(e, AuthError):
                e = WireError(e.status, e.code, e.message)
            err = to_wire(e, request.service if request else "batch")
            if err.status >= 500:
                log.exception("request %s failed", request_id)
            payload = orjson.dumps({"__type": err.code, "message": err.message})
            content_type = request.content_type if request else _JSON
            await _respond(send, err.status, payload, request_id, content_type, error_type=err.code)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._on_startup is not None:
                    await self._on_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        path = request.path
        if path == "/shoal/v1/interrupt" and self.ctx.settings.serve_api:
            # shoal's own (not an AWS API): Spot interruptions on demand.
            if request.method != "POST":
                raise WireError(405, "ClientException", "interrupt takes POST.")
            self._allow(request, "Interrupt")
            return 200, interrupt.interrupt(self.ctx, request.json_body())
        # An endpoint_url with a path prefix makes botocore send /prefix/v1/...
        v1 = path.find("/v1/")
        if v1 > 0:
            path = path[v1:]
        if path == "/health" and request.method in ("GET", "HEAD"):
            return 200, {"status": "ok"}
        if path == "/metrics" and request.method == "GET" and self.metrics is not None:
            # Prometheus text, on every role (an engine-only process has
            # the capacity numbers).
            self._allow(request, "GetMetrics")
            body = self.metrics.scrape()
            request.content_type = METRICS_CONTENT_TYPE
            return 200, body
        if not self.ctx.settings.serve_api:
            raise WireError(
                404,
                "UnknownOperationException",
                "This shoal process runs the engine only (--role engine): send API calls to "
                "a process with --role api or all.",
            )
        if path.startswith("/v1/tags/"):
            return 200, self._tags(request, path[len("/v1/tags/") :])
        name = batch.OPERATIONS_BY_PATH.get(path.lower())
        if name is None:
            if path == "/" and request.method == "POST":
                return 200, self._json_protocol(request)
            raise WireError(404, "UnknownOperationException", f"No operation at {path}.")
        if request.method != "POST":
            raise WireError(405, "ClientException", f"{name} takes POST, not {request.method}.")
        return 200, self._call(name, request.json_body(), request)

    def _json_protocol(self, request: Request) -> Any:
        """JSON 1.1 services on `POST /`, chosen by the X-Amz-Target prefix."""
        target = request.headers.get("x-amz-target", "")
        request.content_type = _JSON_11
        if target.startswith(logs_api.TARGET_PREFIX) and self.logs is not None:
            request.service = "logs"
            name = target[len(logs_api.TARGET_PREFIX) :]
            operation = logs_api.operation_model(name)
            if operation is None:
                raise WireError(400, "UnknownOperationException", f"Unknown operation {target}.")
            params = clean_input(operation, request.json_body())
            self._allow(request, name)
            return logs_api.handler(name)(self.ctx, self.logs, params)
        if target.startswith(events_api.TARGET_PREFIX):
            request.service = "events"
            name = target[len(events_api.TARGET_PREFIX) :]
            operation = events_api.operation_model(name)
            if operation is None:
                raise WireError(400, "UnknownOperationException", f"Unknown operation {target}.")
            params = clean_input(operation, request.json_body())
            self._allow(request, name)
            return events_api.handler(name)(self.ctx, params)
        raise WireError(
            400,
            "UnknownOperationException",
            f"Unknown operation {target or '(no X-Amz-Target header)'}.",
        )

    def _tags(self, request: Request, encoded_arn: str) -> Any:
        arn = unquote(encoded_arn)
        if request.method == "GET":
            name, params = "ListTagsForResource", {}
        elif request.method == "POST":
            name, params = "TagResource", request.json_body()
        elif request.method == "DELETE":
            name = "UntagResource"
            params = {"tagKeys": parse_qs(request.query).get("tagKeys", [])}
        else:
            raise WireError(405, "ClientException", f"{request.method} is not a tag operation.")
        params["resourceArn"] = arn
        return self._call(name, params, request)

    # -- who may ------------------------------------------------------------------
    async def _authenticate(self, request: Request, send: Send, request_id: str) -> bool:
        """Check the request's signature (or, for the dashboard and metrics,
        HTTP Basic); False when a browser was asked to log in instead."""
        assert self.keys is not None
        basic = web.is_dashboard(request.path) or request.path == "/metrics"
        if basic and "authorization" not in request.headers:
            # A browser asks its user for a key id and secret.
            payload = b"Authentication required: an access key id and its secret."
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(payload)).encode()),
                (b"www-authenticate", b'Basic realm="shoal", charset="UTF-8"'),
                (b"x-amzn-requestid", request_id.encode()),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return False
        request.key = self.keys.verify(
            method=request.method,
            raw_path=request.path,
            query=request.query,
            headers=request.headers,
            body=request.body,
            region=self.ctx.settings.region,
            allow_basic=basic,
        )
        self.keys.admit(request.key)
        return True

    def _allow(self, request: Request, operation: str, queue: str | None = None) -> None:
        if request.key is not None:
            auth.authorize(request.key, operation, queue)

    def _allow_dashboard(self, request: Request) -> None:
        """Pages are reads; the actions are the API calls they make."""
        if request.key is None:
            return
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and len(parts) == 4 and parts[:2] == ["ui", "jobs"]:
            operation = {"cancel": "CancelJob", "terminate": "TerminateJob"}.get(
                parts[3], "SubmitJob"
            )
            self._allow(request, operation, self._queue_of_job(parts[2]))
        elif request.method == "POST":
            self._allow(request, "UpdateDashboard")
        else:
            self._allow(request, "GetDashboard")

    def _queue_of_job(self, job_id: str) -> str | None:
        with self.ctx.store.read() as tx:
            job = tx.get_jobs([job_id]).get(job_id)
        return job.queue if job is not None else None

    def _call(self, name: str, params: dict[str, Any], request: Request) -> Any:
        cleaned = clean_input(batch.operation_model(name), params)
        if request.key is not None:
            queue = cleaned.get("jobQueue")
            if name in ("CancelJob", "TerminateJob"):
                queue = self._queue_of_job(str(cleaned.get("jobId", "")))
            self._allow(request, name, queue)
        call = batch.Call(
            payload_size=len(request.body),
            invocation_id=request.headers.get("amz-sdk-invocation-id"),
        )
        return batch.handler_for(name)(self.ctx, cleaned, call)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise WireError(400, "ClientException", f"The request body is over {MAX_BODY} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    payload: bytes,
    request_id: str,
    content_type: bytes,
    *,
    error_type: str | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(payload)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
    ]
    if error_type is not None:
        headers.append((b"x-amzn-errortype", error_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
