"""`shoal cost`: what the work cost, and what it would have cost elsewhere.

Work is every attempt that ran: of SUCCEEDED and FAILED jobs, and the
current attempt of RUNNING ones (up to now). An array job is its children;
a multi-node job is its attempts with the resources of all its nodes
together (what the engine holds for the gang), its node rows are not counted
again. An attempt that never started costs nothing and is not counted.

Each attempt is priced by the type of the compute environment it ran on (in
its task ARN), and the whole work again as if it had all run on each model
(EC2 on-demand, EC2 Spot, Fargate, Fargate Spot); see `prices.Prices`.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shoal.cli import inventory
from shoal.cli.inventory import Json
from shoal.cli.prices import MODELS, Prices
from shoal.cli.table import render

# Statuses whose jobs ran; PENDING is read for array parents whose children run.
_RAN = ("SUCCEEDED", "FAILED", "RUNNING")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now_ms: int) -> int:
    """`--since`: epoch ms, an ISO date/time (local time unless it says), or
    an age such as `90m`, `24h`, `7d`. Raises ValueError."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    age = _DURATION.match(text)
    if age:
        return now_ms - round(float(age.group(1)) * _UNIT_SECONDS[age.group(2)] * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give epoch ms, an ISO date/time or an age like 24h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the user's local time
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptUsage:
    """One attempt that ran, and what it held."""

    job_id: str
    job_name: str
    queue: str
    share: str | None
    status: str
    attempt: int  # 1-based
    started_at: int
    stopped_at: int | None  # None: still running
    seconds: float
    vcpus: float
    memory_mib: int
    gpus: int
    compute_environment: str | None
    pricing: str  # one of prices.MODELS

    @property
    def vcpu_seconds(self) -> float:
        return self.vcpus * self.seconds

    @property
    def memory_gib_seconds(self) -> float:
        return self.memory_mib / 1024 * self.seconds

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * self.seconds

    def dollars(self, prices: Prices, model: str) -> float:
        return prices.rate(model).dollars(
            self.vcpu_seconds, self.memory_gib_seconds, self.gpu_seconds
        )


@dataclass(slots=True)
class Tally:
    """Sums over attempts: of a queue, a share, a job or everything."""

    jobs: set[str] = field(default_factory=set)
    attempts: int = 0
    vcpu_seconds: float = 0.0
    memory_gib_seconds: float = 0.0
    gpu_seconds: float = 0.0
    as_run: float = 0.0
    what_if: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODELS, 0.0))

    def add(self, usage: AttemptUsage, prices: Prices) -> None:
        self.jobs.add(usage.job_id)
        self.attempts += 1
        self.vcpu_seconds += usage.vcpu_seconds
        self.memory_gib_seconds += usage.memory_gib_seconds
        self.gpu_seconds += usage.gpu_seconds
        self.as_run += usage.dollars(prices, usage.pricing)
        for model in MODELS:
            self.what_if[model] += usage.dollars(prices, model)

    def as_json(self) -> Json:
        return {
            "jobs": len(self.jobs),
            "attempts": self.attempts,
            "vcpuSeconds": self.vcpu_seconds,
            "memoryGibSeconds": self.memory_gib_seconds,
            "gpuSeconds": self.gpu_seconds,
            "vcpuHours": self.vcpu_seconds / 3600,
            "memoryGibHours": self.memory_gib_seconds / 3600,
            "gpuHours": self.gpu_seconds / 3600,
            "cost": self.as_run,
            "whatIf": dict(self.what_if),
        }


# -- reading the work -----------------------------------------------------------------


def attempts_of(job: Json, ces: dict[str, Json], now_ms: int) -> list[AttemptUsage]:
    """Every attempt of `job` that started, the running one up to `now_ms`."""
    need = inventory.resources(job)
    ended = job.get("attempts") or []
    # (number, startedAt, stoppedAt, taskArn); numbers count the attempts
    # that never started too, as the job's attempts list does.
    runs: list[tuple[int, int, int | None, str | None]] = [
        (n, a["startedAt"], a.get("stoppedAt"), (a.get("container") or {}).get("taskArn"))
        for n, a in enumerate(ended, start=1)
        if a.get("startedAt") is not None
    ]
    if job["status"] == "RUNNING" and job.get("startedAt") is not None:
        task_arn = (job.get("container") or {}).get("taskArn")
        runs.append((len(ended) + 1, job["startedAt"], None, task_arn))
    usages: list[AttemptUsage] = []
    for number, started, stopped, task_arn in runs:
        ce = inventory.ce_of_task(task_arn)
        usages.append(
            AttemptUsage(
                job_id=job["jobId"],
                job_name=job["jobName"],
                queue=inventory.name_of(job["jobQueue"]),
                share=job.get("shareIdentifier"),
                status=job["status"],
                attempt=number,
                started_at=started,
                stopped_at=stopped,
                seconds=max(0, (now_ms if stopped is None else stopped) - started) / 1000,
                vcpus=need.vcpus or 0.0,
                memory_mib=need.memory_mib or 0,
                gpus=need.gpus,
                compute_environment=ce,
                pricing=inventory.pricing_type(ces.get(ce) if ce else None),
            )
        )
    return usages


def _job_ids(batch: Any, queue: str) -> list[str]:
    """The jobs of `queue` that may have run: array children instead of
    their parents. shoal lists children by queue too; the children of a
    parent none of whose children were listed so are asked of the parent
    (ListJobs arrayJobId), for servers that list only top-level jobs."""
    ids: list[str] = []
    parents: list[str] = []
    for status in (*_RAN, "PENDING"):
        for summary in inventory.list_jobs(batch, status, jobQueue=queue):
            if inventory.is_array_parent(summary):
                parents.append(summary["jobId"])
            elif status != "PENDING":
                ids.append(summary["jobId"])
    listed_parents = {i.rpartition(":")[0] for i in ids if ":" in i}
    for parent in parents:
        if parent in listed_parents:
            continue
        for status in _RAN:
            ids.extend(s["jobId"] for s in inventory.list_jobs(batch, status, arrayJobId=parent))
    return list(dict.fromkeys(ids))


def collect(
    batch: Any,
    *,
    queues: Iterable[str] = (),
    share: str | None = None,
    since_ms: int | None = None,
    now_ms: int | None = None,
) -> list[AttemptUsage]:
    """The attempts of the selected queues (all when none is given).
    Raises inventory.NotFound for a queue that does not exist."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    known = [q["jobQueueName"] for q in inventory.job_queues(batch)]
    wanted = [inventory.name_of(q) for q in queues]
    for name in wanted:
        if name not in known:
            raise inventory.NotFound(f"job queue {name} not found")
    selected = list(dict.fromkeys(wanted)) or known
    ces = inventory.compute_environments(batch)
    usages: list[AttemptUsage] = []
    for queue in selected:
        for job in inventory.describe_jobs(batch, _job_ids(batch, queue)):
            if inventory.is_array_parent(job) or inventory.is_node(job):
                continue
            if share is not None and job.get("shareIdentifier") != share:
                continue
            usages.extend(
                u
                for u in attempts_of(job, ces, now)
                if since_ms is None or u.started_at >= since_ms
            )
    return usages


# -- the report -----------------------------------------------------------------------


def report(
    usages: list[AttemptUsage],
    prices: Prices,
    *,
    by_job: bool,
    since_ms: int | None,
    now_ms: int,
) -> Json:
    """The numbers, as `--json` prints them: rows per queue (and share, when
    any job has one) or per job, a total, and every job's attempts."""
    with_shares = any(u.share is not None for u in usages)
    rows: dict[tuple[str, ...], Tally] = {}
    jobs: dict[str, Tally] = {}
    per_job: dict[str, list[AttemptUsage]] = {}
    total = Tally()
    for u in usages:
        if by_job:
            key: tuple[str, ...] = (u.queue, u.job_id)
        else:
            key = (u.queue, u.share or "") if with_shares else (u.queue,)
        rows.setdefault(key, Tally()).add(u, prices)
        jobs.setdefault(u.job_id, Tally()).add(u, prices)
        per_job.setdefault(u.job_id, []).append(u)
        total.add(u, prices)
    first = {job_id: runs[0] for job_id, runs in per_job.items()}
    doc_rows: list[Json] = []
    for key in sorted(rows):
        row: Json = {"queue": key[0]}
        if by_job:
            row.update(
                jobId=key[1], jobName=first[key[1]].job_name, shareIdentifier=first[key[1]].share
            )
        elif with_shares:
            row["shareIdentifier"] = key[1] or None
        doc_rows.append({**row, **rows[key].as_json()})
    return {
        "now": now_ms,
        "since": since_ms,
        "groupBy": "job" if by_job else ("share" if with_shares else "queue"),
        "prices": prices.as_dict(),
        "rows": doc_rows,
        "total": total.as_json(),
        "jobs": [
            {
                "jobId": job_id,
                "jobName": first[job_id].job_name,
                "queue": first[job_id].queue,
                "shareIdentifier": first[job_id].share,
                "status": first[job_id].status,
                **tally.as_json(),
                "attempts": [
                    {
                        "attempt": u.attempt,
                        "startedAt": u.started_at,
                        "stoppedAt": u.stopped_at,
                        "seconds": u.seconds,
                        "vcpus": u.vcpus,
                        "memoryMiB": u.memory_mib,
                        "gpus": u.gpus,
                        "computeEnvironment": u.compute_environment,
                        "pricedAs": u.pricing,
                        "cost": u.dollars(prices, u.pricing),
                    }
                    for u in per_job[job_id]
                ],
            }
            for job_id, tally in jobs.items()
        ],
    }


def _amount(value: float) -> str:
    """Small amounts keep their significant digits (a test job costs
    millionths of a dollar); larger ones need fewer decimals."""
    if value == 0:
        return "0"
    if abs(value) < 0.01:
        return f"{value:.6f}"
    return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.2f}"


def _money(value: float) -> str:
    return "$" + _amount(value)


def _hours(seconds: float) -> str:
    return _amount(seconds / 3600)


def text(doc: Json) -> str:
    """The report as an aligned table with a total line and a legend."""
    by_job = doc["groupBy"] == "job"
    with_shares = doc["groupBy"] == "share" or any(r.get("shareIdentifier") for r in doc["rows"])
    head = ["QUEUE"]
    if by_job:
        head += ["JOB ID", "NAME"]
    if with_shares:
        head.append("SHARE")
    if not by_job:
        head.append("JOBS")
    head += ["ATTEMPTS", "vCPU-h", "GiB-h", "GPU-h", "COST", *_WHAT_IF_HEADS]
    lead = len(head) - (9 if by_job else 10)  # the columns before the numbers

    def numbers(n: Json) -> list[str]:
        return [
            *([] if by_job else [str(n["jobs"])]),
            str(n["attempts"]),
            _hours(n["vcpuSeconds"]),
            _hours(n["memoryGibSeconds"]),
            _hours(n["gpuSeconds"]),
            _money(n["cost"]),
            *(_money(n["whatIf"][m]) for m in MODELS),
        ]

    body: list[list[str]] = []
    for row in doc["rows"]:
        cells = [row["queue"]]
        if by_job:
            cells += [row["jobId"], row["jobName"]]
        if with_shares:
            cells.append(row.get("shareIdentifier") or "-")
        body.append(cells + numbers(row))
    footer = ["TOTAL", *[""] * (lead - 1), *numbers(doc["total"])]
    since = doc["since"]
    window = "" if since is None else f" (attempts started since {_iso(since)})"
    legend = (
        f"COST: as run{window}, each attempt priced by its compute environment's type. "
        "The other columns price the same work as if it had all run on EC2 on-demand, "
        "EC2 Spot, Fargate or Fargate Spot (prices: the seed's cost breakdown, or --prices)."
    )
    if not doc["rows"]:
        return "No attempts ran" + window + "."
    return render(head, body, footer, right_from=lead) + "\n\n" + textwrap.fill(legend, 100)


_WHAT_IF_HEADS = ["ON-DEMAND", "SPOT", "FARGATE", "FARGATE SPOT"]


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
