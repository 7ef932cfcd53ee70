"""The overview (`/ui`) and the job list (`/ui/jobs`)."""

from __future__ import annotations

from shoal.domain.records import Json
from shoal.web.html import (
    STATUSES,
    badge,
    esc,
    job_href,
    jobs_href,
    link,
    page,
    progress,
    row,
    table,
    timestamp,
)
from shoal.web.reads import Listing, Overview


def arn_name(arn: str | None) -> str:
    return (arn or "").rsplit("/", 1)[-1]


def vcpus(value: float) -> str:
    return f"{value:g}"


def ce_max_vcpus(ce: Json) -> float | None:
    resources = ce.get("computeResources") or {}
    value = resources.get("maxvCpus", ce.get("unmanagedvCpus"))
    return None if value is None else float(value)


def overview_page(ov: Overview) -> str:
    queue_rows = []
    for q in sorted(ov.queues, key=lambda q: (-int(q["priority"]), q["jobQueueName"])):
        name = q["jobQueueName"]
        counts = ov.counts.get(name, {})
        cells = [
            link(jobs_href(queue=name), name),
            esc(q.get("state")),
            esc(q.get("status")),
            f'<span class="num">{esc(q["priority"])}</span>',
            esc(arn_name(q.get("schedulingPolicyArn")) or "FIFO"),
            ", ".join(
                esc(arn_name(o["computeEnvironment"]))
                for o in sorted(q.get("computeEnvironmentOrder") or [], key=lambda o: o["order"])
            ),
        ]
        for status in STATUSES:
            n = counts.get(status, 0)
            href = esc(jobs_href(queue=name, status=status))
            cells.append(
                f'<a class="num{" zero" if not n else ""}" href="{href}" '
                f'data-count="{esc(name)}|{status}">{n}</a>'
            )
        queue_rows.append(row(*cells))
    ce_rows = []
    for ce in sorted(ov.ces, key=lambda c: c["computeEnvironmentName"]):
        name = ce["computeEnvironmentName"]
        resources = ce.get("computeResources") or {}
        most = ce_max_vcpus(ce)
        used = ov.used.get(name, 0.0)
        meter = (
            f'<meter data-meter="{esc(name)}" min="0" max="{most:g}" value="{used:g}"></meter>'
            if most
            else ""
        )
        ce_rows.append(
            row(
                f"<strong>{esc(name)}</strong>",
                esc(" / ".join(str(t) for t in (ce.get("type"), resources.get("type")) if t)),
                esc(ce.get("state")),
                esc(ce.get("status")),
                esc((ce.get("tags") or {}).get("shoal:executor", "default")),
                f'<span class="num">{esc(vcpus(most) if most is not None else "host")}</span>',
                f'<span class="num" data-used="{esc(name)}">{vcpus(used)}</span> {meter}',
            )
        )
    body = (
        '<section data-live="overview">'
        "<h1>Job queues</h1>"
        + (
            table(
                (
                    "Queue",
                    "State",
                    "Status",
                    "Priority",
                    "Scheduling",
                    "Compute environments",
                    *STATUSES,
                ),
                queue_rows,
                cls="queues",
            )
            if queue_rows
            else '<p class="muted">No job queues yet.</p>'
        )
        + '<p class="muted small">Jobs stored, by status: an array counts once and so does '
        "each child made so far.</p>"
        "<h1>Compute environments</h1>"
        + (
            table(
                ("Name", "Type", "State", "Status", "Executor", "maxvCpus", "vCPUs in use"),
                ce_rows,
                cls="ces",
            )
            if ce_rows
            else '<p class="muted">No compute environments yet.</p>'
        )
        + "</section>"
    )
    return page("Overview", body, nav="overview")


def _filters(queues: list[str], queue: str, status: str, name: str) -> str:
    queue_options = '<option value="">every queue</option>' + "".join(
        f'<option value="{esc(q)}"{" selected" if q == queue else ""}>{esc(q)}</option>'
        for q in queues
    )
    status_options = '<option value="">every status</option>' + "".join(
        f"<option{' selected' if s == status else ''}>{s}</option>" for s in STATUSES
    )
    return (
        '<form class="filters" method="get" action="/ui/jobs">'
        f'<label>Queue <select name="queue">{queue_options}</select></label>'
        f'<label>Status <select name="status">{status_options}</select></label>'
        f'<label>Name <input name="name" value="{esc(name)}" '
        'placeholder="exact, or prefix*"></label>'
        '<button type="submit">Filter</button></form>'
    )


def job_rows(listing: Listing, *, with_queue: bool = True) -> list[str]:
    rows = []
    for job, summary in listing.rows:
        array = summary.get("arrayProperties") or {}
        if "statusSummary" in array:
            counts = array["statusSummary"]
            done = counts.get("SUCCEEDED", 0) + counts.get("FAILED", 0)
            array_cell = f"{progress(counts)}<span class='small'>{done}/{array['size']}</span>"
        elif "index" in array:
            array_cell = f"index {esc(array['index'])}"
        else:
            array_cell = ""
        exit_code = (summary.get("container") or {}).get("exitCode")
        cells = [
            link(job_href(job.job_id), job.job_id, "mono"),
            esc(job.job_name),
            *([link(jobs_href(queue=job.queue), job.queue)] if with_queue else []),
            badge(job.status.value),
            f'<span class="reason">{esc(job.status_reason or "")}</span>',
            timestamp(job.created_at),
            timestamp(job.started_at),
            timestamp(job.stopped_at),
            esc(f"{job.definition_name}:{job.definition_revision}"),
            esc("" if exit_code is None else exit_code),
            array_cell,
        ]
        rows.append(row(*cells))
    return rows


JOB_HEADERS = (
    "Job",
    "Name",
    "Queue",
    "Status",
    "Reason",
    "Created",
    "Started",
    "Stopped",
    "Definition",
    "Exit",
    "Array",
)


def jobs_page(
    listing: Listing, queues: list[str], queue: str, status: str, name: str, *, paged: bool
) -> str:
    pager = []
    if paged:
        pager.append(link(jobs_href(queue=queue, status=status, name=name), "← First page"))
    if listing.next_token:
        href = jobs_href(queue=queue, status=status, name=name, token=listing.next_token)
        pager.append(link(href, "Next page →", "next"))
    body = (
        "<h1>Jobs</h1>"
        + _filters(queues, queue, status, name)
        + '<p class="muted small">Newest first. Array children and multi-node nodes are '
        "listed when a status is chosen (as ListJobs does); otherwise only top-level jobs.</p>"
        + (
            table(JOB_HEADERS, job_rows(listing), cls="jobs")
            if listing.rows
            else '<p class="muted empty">No jobs match.</p>'
        )
        + f'<p class="pager">{" ".join(pager)}</p>'
    )
    return page("Jobs", body, nav="jobs", error=listing.error)
