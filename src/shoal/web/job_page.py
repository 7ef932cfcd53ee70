"""A job's page (`/ui/jobs/<jobId>`) and the small documents its script polls."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from shoal.domain.records import Json
from shoal.web import graph
from shoal.web.html import (
    STATUSES,
    badge,
    duration,
    esc,
    job_href,
    jobs_href,
    key_values,
    link,
    page,
    progress,
    row,
    table,
    timestamp,
)
from shoal.web.pages import JOB_HEADERS, arn_name, job_rows
from shoal.web.reads import Graph, Listing, LogPage, log_group
from shoal.web.redact import HIDDEN, Redactor

DEFAULT_REASON = "Stopped from the shoal dashboard"
_TERMINAL = ("SUCCEEDED", "FAILED")
_JOB_ID = re.compile(r"^[A-Za-z0-9:#-]{1,128}$")
_FLASH = {
    "cancel": "Cancel requested (CancelJob): jobs that have not started fail; running ones go on.",
    "terminate": "Terminate requested (TerminateJob): the job is stopped if it runs.",
}


def flash_for(query: Mapping[str, str]) -> str:
    if _JOB_ID.match(query.get("from", "")):
        return f"Resubmitted: this job is a new submission of job {query['from']}."
    return _FLASH.get(query.get("done", ""), "")


def redactor_for(detail: Json) -> Redactor:
    """A Redactor that knows every value this job's page would hide."""
    redactor = Redactor()
    redactor.learn((detail.get("parameters") or {}).items())
    redactor.learn((detail.get("tags") or {}).items())
    for container in _containers(detail):
        redactor.learn(
            (e.get("name", ""), e.get("value")) for e in container.get("environment") or []
        )
        # A secret's reference is not shown either.
        redactor.learn(("secret", s.get("valueFrom")) for s in container.get("secrets") or [])
    return redactor


def _containers(detail: Json) -> list[Json]:
    found = [detail["container"]] if detail.get("container") else []
    for group in (detail.get("nodeProperties") or {}).get("nodeRangeProperties") or []:
        if group.get("container"):
            found.append(group["container"])
    return found


def attempt_rows(detail: Json) -> str:
    rows = []
    for number, attempt in enumerate(detail.get("attempts") or [], 1):
        container = attempt.get("container") or {}
        exit_code = container.get("exitCode")
        stream = container.get("logStreamName")
        log_link = (
            link(job_href(detail["jobId"], attempt=str(number)) + "#log", "log") if stream else ""
        )
        rows.append(
            row(
                str(number),
                timestamp(attempt.get("startedAt")),
                timestamp(attempt.get("stoppedAt")),
                esc("" if exit_code is None else exit_code),
                esc(container.get("reason") or ""),
                esc(attempt.get("statusReason") or ""),
                log_link,
            )
        )
    if not rows:
        rows.append('<tr><td colspan="7" class="muted">No attempt has ended yet.</td></tr>')
    return "".join(rows)


def status_doc(detail: Json) -> Json:
    """What the job page's script polls: the parts of the page that change."""
    array = detail.get("arrayProperties") or {}
    return {
        "status": detail["status"],
        "statusReason": detail.get("statusReason") or "",
        "startedAt": detail.get("startedAt"),
        "stoppedAt": detail.get("stoppedAt"),
        "terminal": detail["status"] in _TERMINAL,
        "attemptsHtml": attempt_rows(detail),
        "summary": array.get("statusSummary"),
        "size": array.get("size"),
    }


def _resources(container: Json) -> str:
    needs = {r["type"]: r["value"] for r in container.get("resourceRequirements") or []}
    for legacy, kind in (("vcpus", "VCPU"), ("memory", "MEMORY")):
        if container.get(legacy) is not None and kind not in needs:
            needs[kind] = str(container[legacy])
    units = {"MEMORY": " MiB"}
    return ", ".join(f"{esc(k)} {esc(v)}{units.get(k, '')}" for k, v in sorted(needs.items()))


def _container_section(container: Json, redactor: Redactor, title: str) -> str:
    command = container.get("command") or []
    facts = {
        "Image": esc(container.get("image") or ""),
        "Command": '<code class="command">'
        + " ".join(f"<span>{esc(redactor.free_text(str(part)))}</span>" for part in command)
        + "</code>",
        "Resources": _resources(container),
    }
    for label, key in (
        ("Exit code", "exitCode"),
        ("Reason", "reason"),
        ("Task", "taskArn"),
        ("Log stream", "logStreamName"),
        ("User", "user"),
    ):
        if container.get(key) is not None:
            facts[label] = esc(container[key])
    environment = sorted(container.get("environment") or [], key=lambda e: str(e.get("name")))
    env_rows = [
        row(
            f'<span class="mono">{esc(e.get("name"))}</span>',
            '<span class="mono">'
            + esc(redactor.value(str(e.get("name", "")), e.get("value")))
            + "</span>",
        )
        for e in environment
    ]
    env_rows += [
        row(f'<span class="mono">{esc(s.get("name"))}</span>', esc(f"{HIDDEN}: from a secret"))
        for s in container.get("secrets") or []
    ]
    env = (
        table(("Name", "Value"), env_rows, cls="env")
        if env_rows
        else '<p class="muted">No environment variables.</p>'
    )
    return f"<h2>{esc(title)}</h2>{key_values(facts)}<h3>Environment</h3>{env}"


def _actions(detail: Json) -> str:
    job_id = detail["jobId"]
    base = job_href(job_id)
    stoppable = detail["status"] not in _TERMINAL
    off = "" if stoppable else " disabled"
    is_part = ":" in job_id or "#" in job_id  # an array child or a node
    resubmit = (
        '<p class="muted small">Resubmit the array or multi-node job this belongs to.</p>'
        if is_part
        else f'<form method="post" action="{esc(base)}/resubmit" class="inline">'
        f'<input type="hidden" name="nonce" value="{uuid.uuid4().hex}">'
        '<button id="resubmit" type="submit" '
        'data-confirm="Submit this job again, with the same queue, definition, parameters '
        'and overrides?">Resubmit</button></form>'
    )
    return (
        '<div class="actions">'
        f'<form method="post" action="{esc(base)}/cancel" class="inline">'
        f'<input name="reason" value="{esc(DEFAULT_REASON)}" aria-label="reason" size="34">'
        f'<button id="cancel" class="stop" type="submit"{off} data-stop '
        'data-confirm="Cancel this job? (CancelJob: it fails if it has not started)">'
        "Cancel</button>"
        f'<button id="terminate" class="stop danger" type="submit"{off} data-stop '
        f'formaction="{esc(base)}/terminate" '
        'data-confirm="Terminate this job? (TerminateJob: it is stopped even if it runs)">'
        "Terminate</button></form>"
        f"{resubmit}</div>"
    )


def _array_section(
    detail: Json, children: Listing, child_status: str, child_token: str, *, nodes: bool
) -> str:
    job_id = detail["jobId"]
    array = detail.get("arrayProperties") or {}
    summary: dict[str, int] = array.get("statusSummary") or {}
    body = ""
    if summary:
        size = array.get("size") or sum(summary.values())
        done = summary.get("SUCCEEDED", 0) + summary.get("FAILED", 0)
        legend = " ".join(
            f'<span class="legend"><i class="sw f-{s}"></i>{s} '
            f'<b data-summary="{s}">{summary.get(s, 0)}</b></span>'
            for s in STATUSES
        )
        body += (
            "<h2>Array progress</h2>"
            + progress(summary, "array-progress")
            + f'<p><b id="array-done">{done}</b> of <b>{esc(size)}</b> children finished. '
            f"{legend}</p>"
        )
    filters = [link(job_href(job_id) + "#children", "all")] + [
        link(job_href(job_id, cstatus=s) + "#children", s) for s in STATUSES
    ]
    headers = [h for h in JOB_HEADERS if h != "Queue"]
    pager = ""
    if children.next_token:
        href = job_href(job_id, cstatus=child_status, ctoken=children.next_token)
        pager = f'<p class="pager">{link(href + "#children", "Next page →")}</p>'
    title = "Nodes" if nodes else "Children"
    body += (
        f'<h2 id="children">{title}{" · " + esc(child_status) if child_status else ""}</h2>'
        f'<p class="filters-inline">{" · ".join(filters)}</p>'
        + (
            table(headers, job_rows(children, with_queue=False), cls="jobs")
            if children.rows
            else f'<p class="muted">None {"made yet" if not child_token else "more"}.</p>'
        )
        + pager
    )
    return body


def _log_section(detail: Json, log: LogPage, stream: str, attempt: str, redactor: Redactor) -> str:
    job_id = detail["jobId"]
    streams = [
        (str(n), (a.get("container") or {}).get("logStreamName"))
        for n, a in enumerate(detail.get("attempts") or [], 1)
    ]
    choices = [link(job_href(job_id) + "#log", "latest (live)")] + [
        link(job_href(job_id, attempt=n) + "#log", f"attempt {n}") for n, s in streams if s
    ]
    lines = "".join(
        f'<div class="line"><time data-ms="{ts}"></time>{esc(redactor.free_text(msg))}</div>'
        for ts, msg in log.lines
    )
    where = f"{log_group(detail)} / {stream}" if stream else "no output yet"
    return (
        '<h2 id="log">Log</h2>'
        f'<p class="small">{" · ".join(choices)} — <span class="mono" id="log-where">'
        f"{esc(where)}</span></p>"
        f'<div class="log" id="log-lines" data-stream="{esc(stream)}" '
        f'data-token="{esc(log.token or "")}" data-follow="{"0" if attempt else "1"}">'
        f"{lines}</div>"
    )


def job_page(
    detail: Json,
    *,
    deps: Graph,
    children: Listing | None,
    child_status: str,
    child_token: str,
    log: LogPage,
    stream: str,
    attempt: str,
    flash: str = "",
    error: str = "",
) -> str:
    redactor = redactor_for(detail)
    job_id = detail["jobId"]
    status = detail["status"]
    queue = arn_name(detail.get("jobQueue"))
    definition = arn_name(detail.get("jobDefinition"))
    array = detail.get("arrayProperties") or {}
    facts: dict[str, str] = {
        "Job id": f'<span class="mono">{esc(job_id)}</span>',
        "Queue": link(jobs_href(queue=queue), queue),
        "Definition": esc(definition),
        "Created": timestamp(detail.get("createdAt")),
        "Started": f'<span id="job-started">{timestamp(detail.get("startedAt"))}</span>',
        "Stopped": f'<span id="job-stopped">{timestamp(detail.get("stoppedAt"))}</span>',
    }
    now = detail.get("stoppedAt") or detail.get("startedAt") or 0
    if detail.get("startedAt") and detail.get("stoppedAt"):
        facts["Ran for"] = esc(duration(detail["startedAt"], detail["stoppedAt"], now))
    if "index" in array:
        parent = job_id.rsplit(":", 1)[0]
        facts["Array job"] = link(job_href(parent), parent, "mono") + f" · index {array['index']}"
    if "#" in job_id:
        parent = job_id.rsplit("#", 1)[0]
        facts["Multi-node job"] = link(job_href(parent), parent, "mono")
    for label, key in (("Share", "shareIdentifier"), ("Scheduling priority", "schedulingPriority")):
        if detail.get(key) is not None:
            facts[label] = esc(detail[key])
    retry = detail.get("retryStrategy") or {}
    if retry.get("attempts"):
        facts["Retry attempts"] = esc(retry["attempts"])
    timeout = (detail.get("timeout") or {}).get("attemptDurationSeconds")
    if timeout:
        facts["Timeout"] = esc(f"{timeout} s per attempt")
    if detail.get("isCancelled"):
        facts["Cancelled"] = "yes"
    if detail.get("isTerminated"):
        facts["Terminated"] = "yes"
    tags = detail.get("tags") or {}
    if tags:
        facts["Tags"] = ", ".join(
            f'<span class="mono">{esc(k)}={esc(redactor.value(k, v))}</span>'
            for k, v in sorted(tags.items())
        )
    parameters = detail.get("parameters") or {}
    param_rows = [
        row(
            f'<span class="mono">{esc(k)}</span>',
            f'<span class="mono">{esc(redactor.value(k, v))}</span>',
        )
        for k, v in sorted(parameters.items())
    ]
    sections = [
        f'<section class="job" data-job-id="{esc(job_id)}" '
        f'data-terminal="{"1" if status in _TERMINAL else "0"}">'
        f"<h1>{esc(detail.get('jobName'))} {badge(status, 'job-status')}</h1>"
        f'<p class="reason" id="job-reason">{esc(detail.get("statusReason") or "")}</p>',
        _actions(detail),
        key_values(facts),
    ]
    is_array = "statusSummary" in array
    if is_array:
        sections.append(
            '<p class="muted">An array job runs as its children: their pages have the '
            "attempts and the logs.</p>"
        )
    else:
        sections.append(
            "<h2>Attempts</h2>"
            + table(
                ("#", "Started", "Stopped", "Exit code", "Reason", "Status reason", "Log"),
                [attempt_rows(detail)],
                body_id="attempts",
            )
        )
    if children is not None:
        nodes = "nodeProperties" in detail and not is_array
        sections.append(_array_section(detail, children, child_status, child_token, nodes=nodes))
    sections.append("<h2>Dependencies</h2>" + graph.render(deps))
    sections.append(
        "<h2>Parameters</h2>"
        + (
            table(("Name", "Value"), param_rows, cls="env")
            if param_rows
            else '<p class="muted">No parameters.</p>'
        )
    )
    if detail.get("container"):
        sections.append(_container_section(detail["container"], redactor, "Container"))
    for group in (detail.get("nodeProperties") or {}).get("nodeRangeProperties") or []:
        if group.get("container"):
            title = f"Node range {group.get('targetNodes')}"
            sections.append(_container_section(group["container"], redactor, title))
    if not is_array:
        sections.append(_log_section(detail, log, stream, attempt, redactor))
    sections.append("</section>")
    return page(f"{detail.get('jobName')} ({status})", "".join(sections), flash=flash, error=error)


def log_doc(
    lines: list[tuple[int, str]], token: str | None, stream: str, detail: Json, switched: bool
) -> dict[str, Any]:
    redactor = redactor_for(detail)
    return {
        "stream": stream,
        "where": f"{log_group(detail)} / {stream}" if stream else "no output yet",
        "switched": switched,
        "token": token or "",
        "events": [[ts, redactor.free_text(msg)] for ts, msg in lines],
        "terminal": detail["status"] in _TERMINAL,
    }
