"""The dashboard's routes under `/ui`, and how its responses are written.

Pages are HTML rendered here; the live parts of a page poll small JSON
documents under `/ui/api/`. Actions are POSTs from forms, answered with a
redirect to the page that shows the result (so a reload never repeats them),
and refused when the browser says they come from another site.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from shoal.domain.errors import DomainError, NotFound
from shoal.logs.store import LogStore
from shoal.service.context import Context
from shoal.web import actions, assets, reads
from shoal.web.html import esc, job_href, page
from shoal.web.job_page import DEFAULT_REASON, flash_for, job_page, log_doc, status_doc
from shoal.web.pages import jobs_page, overview_page

log = logging.getLogger("shoal.web")

Send = Callable[[dict[str, Any]], Awaitable[None]]
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"
_SECURITY = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
]
_JOB_ID = re.compile(r"^[A-Za-z0-9:#-]{1,128}$")


class Request(Protocol):
    """What the dashboard needs of the API's request (shoal.api.app.Request)."""

    method: str
    path: str  # raw (percent-encoded), without the query
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = _HTML
    headers: list[tuple[str, str]] = field(default_factory=list)
    cache: str = "no-store"


class HttpError(Exception):
    def __init__(self, status: int, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.allow = status, message, allow


def is_dashboard(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


async def serve(ctx: Context, logs: LogStore | None, request: Request, send: Send) -> None:
    """Answer one request under /ui (ASGI `send`)."""
    response = respond(ctx, logs, request)
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        (b"cache-control", response.cache.encode()),
        *((k.encode(), v.encode()) for k, v in _SECURITY + response.headers),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def respond(ctx: Context, logs: LogStore | None, request: Request) -> Response:
    wants_json = request.path.startswith("/ui/api/")
    try:
        if not ctx.settings.serve_api:
            raise HttpError(404, "This shoal process runs the engine only: no dashboard here.")
        return _route(ctx, logs, request)
    except HttpError as e:
        extra = [("allow", e.allow)] if e.allow else []
        return _error(e.status, e.message, wants_json, extra)
    except DomainError as e:
        return _error(404 if isinstance(e, NotFound) else 400, e.message, wants_json)
    except Exception:
        log.exception("dashboard request %s %s failed", request.method, request.path)
        return _error(500, "Internal error; see the shoal server log.", wants_json)


def _error(status: int, message: str, as_json: bool, headers: Any = ()) -> Response:
    if as_json:
        return Response(status, orjson.dumps({"error": message}), _JSON, list(headers))
    body = page("Error", f"<h1>{status}</h1><p>{esc(message)}</p>")
    return Response(status, body.encode(), _HTML, list(headers))


def _html(text: str, status: int = 200) -> Response:
    return Response(status, text.encode())


def _json(doc: Any) -> Response:
    return Response(200, orjson.dumps(doc), _JSON)


def _redirect(location: str) -> Response:
    return Response(303, b"", _HTML, [("location", location)])


def _params(text: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _route(ctx: Context, logs: LogStore | None, request: Request) -> Response:
    parts = [unquote(p) for p in request.path[len("/ui") :].split("/") if p]
    query = _params(request.query)
    method = request.method
    match parts:
        case []:
            _only(method, "GET")
            return _html(overview_page(reads.overview(ctx)))
        case ["jobs"]:
            _only(method, "GET")
            return _jobs(ctx, query)
        case ["jobs", job_id]:
            _only(method, "GET")
            return _job(ctx, logs, _job_id(job_id), query)
        case ["jobs", job_id, ("cancel" | "terminate" | "resubmit") as action]:
            _only(method, "POST")
            return _act(ctx, logs, request, _job_id(job_id), action)
        case ["api", "overview"]:
            _only(method, "GET")
            counts, used = reads.counts_and_usage(ctx)
            return _json({"counts": counts, "used": used})
        case ["api", "jobs", job_id]:
            _only(method, "GET")
            return _json(status_doc(_detail(ctx, _job_id(job_id))))
        case ["api", "jobs", job_id, "log"]:
            _only(method, "GET")
            return _json(_log(ctx, logs, _job_id(job_id), query))
        case ["static", name] if name in assets.FILES:
            _only(method, "GET")
            content_type, body = assets.FILES[name]
            return Response(200, body, content_type, cache="public, max-age=86400")
    raise HttpError(404, f"No dashboard page at {request.path}.")


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, f"This takes {allowed}, not {method}.", allow=allowed)


def _job_id(text: str) -> str:
    if not _JOB_ID.match(text):
        raise HttpError(404, "That is not a job id.")
    return text


def _detail(ctx: Context, job_id: str) -> dict[str, Any]:
    detail = reads.describe_job(ctx, job_id)
    if detail is None:
        raise HttpError(404, f"Job {job_id} not found (finished jobs are purged after a while).")
    return detail


def _jobs(ctx: Context, query: dict[str, str]) -> Response:
    queue, status = query.get("queue", ""), query.get("status", "")
    name = query.get("name", "").strip()
    token = query.get("token", "")
    listing = reads.list_jobs(ctx, queue=queue, status=status, name=name, token=token)
    queues = reads.queue_names(ctx)
    return _html(jobs_page(listing, queues, queue, status, name, paged=bool(token)))


def _job(
    ctx: Context,
    logs: LogStore | None,
    job_id: str,
    query: dict[str, str],
    *,
    error: str = "",
    status: int = 200,
) -> Response:
    detail = _detail(ctx, job_id)
    child_status, child_token = query.get("cstatus", ""), query.get("ctoken", "")
    children = None
    if "statusSummary" in (detail.get("arrayProperties") or {}) or detail.get("nodeProperties"):
        children = reads.list_jobs(ctx, parent=job_id, status=child_status, token=child_token)
    streams = reads.log_streams(detail)
    attempt = query.get("attempt", "")
    stream = ""
    if attempt.isdigit() and 0 < int(attempt) <= len(detail.get("attempts") or []):
        container = detail["attempts"][int(attempt) - 1].get("container") or {}
        stream = container.get("logStreamName") or ""
    else:
        attempt = ""
        stream = streams[-1] if streams else ""
    text = job_page(
        detail,
        deps=reads.dependencies(ctx, detail),
        children=children,
        child_status=child_status,
        child_token=child_token,
        log=reads.read_log(logs, reads.log_group(detail), stream, None, limit=500),
        stream=stream,
        attempt=attempt,
        flash="" if error else flash_for(query),
        error=error,
    )
    return _html(text, status)


def _log(ctx: Context, logs: LogStore | None, job_id: str, query: dict[str, str]) -> dict[str, Any]:
    """New lines of the stream the page shows; with follow=1, the stream of
    the latest attempt, switching to it (from its head) when a retry starts."""
    detail = _detail(ctx, job_id)
    streams = reads.log_streams(detail)
    stream, token = query.get("stream", ""), query.get("token", "")
    switched = False
    if query.get("follow") == "1" and streams and stream != streams[-1]:
        stream, token, switched = streams[-1], "f/0", True
    if stream and stream not in streams:
        raise HttpError(404, "That log stream is not one of this job's.")
    page_ = reads.read_log(logs, reads.log_group(detail), stream, token or "f/0")
    return log_doc(page_.lines, page_.token, stream, detail, switched)


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site."""
    origin = request.headers.get("origin")
    if origin:
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")


def _act(
    ctx: Context, logs: LogStore | None, request: Request, job_id: str, action: str
) -> Response:
    if not _same_origin(request):
        raise HttpError(403, "Actions are taken from the dashboard's own pages only.")
    form = _params(request.body.decode("utf-8", "replace"))
    try:
        if action == "resubmit":
            new_id = actions.resubmit(ctx, job_id, form.get("nonce", ""))
            return _redirect(job_href(new_id, **{"from": job_id}))
        reason = form.get("reason", "").strip() or DEFAULT_REASON
        if action == "cancel":
            actions.cancel(ctx, job_id, reason)
        else:
            actions.terminate(ctx, job_id, reason)
        return _redirect(job_href(job_id, done=action))
    except DomainError as e:
        if reads.describe_job(ctx, job_id) is None:
            raise
        return _job(
            ctx, logs, job_id, {}, error=f"{action.capitalize()} failed: {e.message}", status=400
        )
