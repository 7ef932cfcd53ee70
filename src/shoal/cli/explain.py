"""`shoal explain`: the whole story of one job, from the Batch API.

What it is and where it stands; what it depends on; each attempt and the
retry decision that followed it, recomputed with shoal's own retry rules
(`shoal.domain.retry`); and for a job that waits, what it waits for: the
jobs ahead of it in its queue and the capacity in use (RUNNABLE), or the
dependencies not yet done (PENDING).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from shoal.cli import inventory
from shoal.cli.inventory import Json
from shoal.domain.retry import AttemptOutcome, Decision, decide

# AWS's statusReason of an attempt stopped by its timeout, which is never
# retried (shoal's engine writes the same words).
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
_CONDITIONS = ("onStatusReason", "onReason", "onExitCode")


# -- retry decisions ------------------------------------------------------------------


def matching_rule(rules: list[Json], outcome: AttemptOutcome) -> int | None:
    """The index of the first `evaluateOnExit` rule that matches `outcome`.

    Asked of shoal's own `decide`, so that the answer is the engine's: a rule
    alone, with action EXIT and attempts to spare, decides EXIT exactly when
    it matches (no match means RETRY)."""
    retryable = AttemptOutcome(
        exit_code=outcome.exit_code, reason=outcome.reason, status_reason=outcome.status_reason
    )
    for index, rule in enumerate(rules):
        probe = {"attempts": 2, "evaluateOnExit": [{**rule, "action": "EXIT"}]}
        if decide(probe, 1, retryable) is Decision.EXIT:
            return index
    return None


def rule_text(rule: Json) -> str:
    conditions = [f"{key}={rule[key]!r}" for key in _CONDITIONS if rule.get(key) is not None]
    return ", ".join(conditions) or "no condition"


def retry_decision(job: Json, number: int, attempt: Json) -> Json:
    """What followed attempt `number` (1-based) of `job`: `decision` (RETRY,
    EXIT, or None when the job succeeded), `why` (a sentence) and, when a
    rule decided, `rule` (1-based) and `ruleDefinition`."""
    attempts = job.get("attempts") or []
    last = number == len(attempts)
    container = attempt.get("container") or {}
    status_reason = attempt.get("statusReason") or ""
    if last and job["status"] == "SUCCEEDED":
        return {"decision": None, "why": "succeeded"}
    # The attempt that ended the job on a TerminateJob: never retried. (A
    # job terminated or cancelled while it waited to run again ended later.)
    terminated = (
        last
        and job["status"] == "FAILED"
        and bool(job.get("isTerminated"))
        and job.get("stoppedAt") == attempt.get("stoppedAt")
    )
    timed_out = status_reason == TIMEOUT_REASON
    outcome = AttemptOutcome(
        exit_code=container.get("exitCode"),
        reason=container.get("reason"),
        status_reason=status_reason,
        retryable=not (timed_out or terminated),
    )
    strategy: Json = job.get("retryStrategy") or {}
    decision = decide(strategy, number, outcome)
    out: Json = {"decision": decision.value}
    allowed = int(strategy.get("attempts") or 1)
    if timed_out:
        out["why"] = "not retried: timeout"
    elif terminated:
        out["why"] = f"terminated: {job.get('statusReason') or status_reason}"
    elif number >= allowed:
        out["why"] = f"attempts exhausted ({number} of {allowed})"
    else:
        rules = list(strategy.get("evaluateOnExit") or [])
        index = matching_rule(rules, outcome)
        if index is None:
            out["why"] = "no rule matched: RETRY"
        else:
            out.update(rule=index + 1, ruleDefinition=rules[index])
            out["why"] = f"rule {index + 1} ({rule_text(rules[index])}) matched → {decision.value}"
    if last and decision is Decision.RETRY and job["status"] == "FAILED":
        # Retried, then cancelled or terminated before the next attempt ran.
        out["why"] += f"; then the job was stopped: {job.get('statusReason')}"
    return out


# -- gathering ------------------------------------------------------------------------


def _seconds(start: int | None, stop: int | None) -> float | None:
    return None if start is None or stop is None else max(0, stop - start) / 1000


def _attempts(job: Json, now_ms: int) -> list[Json]:
    out: list[Json] = []
    for number, attempt in enumerate(job.get("attempts") or [], start=1):
        container = attempt.get("container") or {}
        out.append(
            {
                "attempt": number,
                "startedAt": attempt.get("startedAt"),
                "stoppedAt": attempt.get("stoppedAt"),
                "durationSeconds": _seconds(attempt.get("startedAt"), attempt.get("stoppedAt")),
                "exitCode": container.get("exitCode"),
                "reason": container.get("reason"),
                "statusReason": attempt.get("statusReason"),
                "logStreamName": container.get("logStreamName"),
                "computeEnvironment": inventory.ce_of_task(container.get("taskArn")),
                "retry": retry_decision(job, number, attempt),
            }
        )
    if job["status"] in ("STARTING", "RUNNING"):
        container = job.get("container") or {}
        started = job.get("startedAt") if job["status"] == "RUNNING" else None
        out.append(
            {
                "attempt": len(out) + 1,
                "startedAt": started,
                "stoppedAt": None,
                "durationSeconds": _seconds(started, now_ms),
                "running": True,
                "logStreamName": container.get("logStreamName"),
                "computeEnvironment": inventory.ce_of_task(container.get("taskArn")),
            }
        )
    return out


def _dependencies(batch: Any, job: Json) -> list[Json]:
    deps = [dict(d) for d in job.get("dependsOn") or []]
    found = {
        j["jobId"]: j
        for j in inventory.describe_jobs(batch, [d["jobId"] for d in deps if d.get("jobId")])
    }
    for dep in deps:
        if dep.get("jobId"):
            other = found.get(dep["jobId"])
            dep["status"] = other["status"] if other else "NOT FOUND"
            if other and other.get("statusReason"):
                dep["statusReason"] = other["statusReason"]
    return deps


def _need(job: Json) -> Json:
    need = inventory.resources(job)
    return {"vcpus": need.vcpus or 0.0, "memoryMiB": need.memory_mib, "gpus": need.gpus}


def _front_of_queue(batch: Any, queue: str) -> list[str] | None:
    """GetJobQueueSnapshot's frontOfQueue job ids, or None if the server (or
    this SDK) does not answer it."""
    try:
        snapshot = batch.get_job_queue_snapshot(jobQueue=queue)
    except (ClientError, AttributeError):
        return None
    jobs = (snapshot.get("frontOfQueue") or {}).get("jobs") or []
    return [str(j["jobArn"]).rsplit("/", 1)[-1] for j in jobs]


def _capacity(batch: Any, queue: Json) -> list[Json]:
    """Each compute environment of `queue`, in order: its state, its ceiling
    and the vCPUs that running and starting jobs (of any queue) hold on it."""
    order = sorted(queue.get("computeEnvironmentOrder") or [], key=lambda o: o["order"])
    names = [inventory.name_of(o["computeEnvironment"]) for o in order]
    ces = inventory.compute_environments(batch, names) if names else {}

    def uses_ours(q: Json) -> bool:
        order = q.get("computeEnvironmentOrder") or []
        return any(inventory.name_of(o["computeEnvironment"]) in names for o in order)

    sharing = [q["jobQueueName"] for q in inventory.job_queues(batch) if uses_ours(q)]
    in_use = dict.fromkeys(names, 0.0)
    jobs_on = dict.fromkeys(names, 0)
    ids = [
        s["jobId"]
        for q in sharing
        for status in ("STARTING", "RUNNING")
        for s in inventory.list_jobs(batch, status, jobQueue=q)
    ]
    for other in inventory.describe_jobs(batch, ids):
        if inventory.is_node(other) or inventory.is_array_parent(other):
            continue
        on = inventory.ce_of_task((other.get("container") or {}).get("taskArn"))
        if on in in_use:
            in_use[on] += inventory.resources(other).vcpus or 0.0
            jobs_on[on] += 1
    out: list[Json] = []
    for name in names:
        ce = ces.get(name)
        if ce is None:
            out.append({"computeEnvironment": name, "status": "NOT FOUND"})
            continue
        resources = ce.get("computeResources") or {}
        out.append(
            {
                "computeEnvironment": name,
                "type": resources.get("type") or ce.get("type"),
                "state": ce.get("state"),
                "status": ce.get("status"),
                "maxvCpus": resources.get("maxvCpus", ce.get("unmanagedvCpus")),
                "vcpusInUse": in_use[name],
                "jobsRunning": jobs_on[name],
            }
        )
    return out


def _runnable_wait(batch: Any, job: Json, queue_name: str) -> Json:
    # ListJobs lists newest first; the queue is served oldest first.
    waiting = [
        s["jobId"]
        for s in reversed(list(inventory.list_jobs(batch, "RUNNABLE", jobQueue=queue_name)))
    ]
    doc: Json = {
        "position": waiting.index(job["jobId"]) + 1 if job["jobId"] in waiting else None,
        "runnable": len(waiting),
        "ahead": waiting[: waiting.index(job["jobId"])] if job["jobId"] in waiting else [],
        "needs": _need(job),
    }
    front = _front_of_queue(batch, queue_name)
    if front is not None:
        doc["frontOfQueuePosition"] = (
            front.index(job["jobId"]) + 1 if job["jobId"] in front else None
        )
    queues = batch.describe_job_queues(jobQueues=[queue_name])["jobQueues"]
    if queues:
        queue = queues[0]
        doc["queue"] = {k: queue.get(k) for k in ("state", "status", "priority")}
        doc["computeEnvironments"] = _capacity(batch, queue)
    return doc


def _pending_wait(batch: Any, job: Json, deps: list[Json]) -> Json:
    waits = [
        d for d in deps if d.get("jobId") and d.get("status") != "SUCCEEDED" and not d.get("type")
    ]
    doc: Json = {"waitingFor": [{k: d.get(k) for k in ("jobId", "status")} for d in waits]}
    if not waits and inventory.is_array_parent(job):
        doc["children"] = (job.get("arrayProperties") or {}).get("statusSummary")
    return doc


def gather(batch: Any, job_id: str, now_ms: int) -> Json:
    """The explanation of `job_id` as a JSON document. Raises
    inventory.NotFound when the job is not found."""
    jobs = inventory.describe_jobs(batch, [job_id])
    if not jobs:
        raise inventory.NotFound(f"job {job_id} not found")
    job = jobs[0]
    queue = inventory.name_of(job["jobQueue"])
    deps = _dependencies(batch, job)
    doc: Json = {
        "jobId": job["jobId"],
        "jobName": job["jobName"],
        "jobQueue": queue,
        "jobDefinition": job.get("jobDefinition"),
        "status": job["status"],
        "statusReason": job.get("statusReason"),
        "createdAt": job.get("createdAt"),
        "startedAt": job.get("startedAt"),
        "stoppedAt": job.get("stoppedAt"),
        "shareIdentifier": job.get("shareIdentifier"),
        "retryStrategy": job.get("retryStrategy"),
        "timeout": job.get("timeout"),
        "dependsOn": deps,
        "arrayProperties": job.get("arrayProperties"),
        "attempts": [] if inventory.is_array_parent(job) else _attempts(job, now_ms),
    }
    if job["status"] == "RUNNABLE":
        doc["waiting"] = _runnable_wait(batch, job, queue)
    elif job["status"] == "PENDING":
        doc["waiting"] = _pending_wait(batch, job, deps)
    return doc


# -- text -----------------------------------------------------------------------------


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


def text(doc: Json) -> str:
    lines = [f"Job {doc['jobId']} ({doc['jobName']}): {doc['status']}"]

    def field(label: str, value: object) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"  {label:<13} {value}")

    field("queue", doc["jobQueue"])
    field("definition", doc["jobDefinition"])
    field("status reason", doc["statusReason"])
    field("share", doc["shareIdentifier"])
    field("created", _when(doc["createdAt"]))
    field("started", doc["startedAt"] and _when(doc["startedAt"]))
    field("stopped", doc["stoppedAt"] and _when(doc["stoppedAt"]))
    if doc["timeout"]:
        field("timeout", f"{doc['timeout'].get('attemptDurationSeconds')} s per attempt")
    strategy = doc["retryStrategy"] or {}
    rules = strategy.get("evaluateOnExit") or []
    field("retry", f"up to {strategy.get('attempts') or 1} attempt(s)")
    for i, rule in enumerate(rules, start=1):
        lines.append(f"  {'':<13}   rule {i}: {rule_text(rule)} → {rule.get('action')}")
    array = doc["arrayProperties"] or {}
    if "size" in array:
        summary = array.get("statusSummary") or {}
        counts = ", ".join(f"{k} {v}" for k, v in summary.items() if v)
        field("array", f"{array['size']} children ({counts or 'none made yet'})")
    elif "index" in array:
        field("array index", array["index"])
    if doc["dependsOn"]:
        lines.append("Dependencies")
        for dep in doc["dependsOn"]:
            kind = f" ({dep['type']})" if dep.get("type") else ""
            if dep.get("jobId"):
                lines.append(f"  {dep['jobId']}{kind}: {dep.get('status')}")
            else:
                lines.append(f"  {kind.strip()}: each child after the one before it")
    if doc["attempts"]:
        lines.append("Attempts")
    for a in doc["attempts"]:
        where = f" on {a['computeEnvironment']}" if a.get("computeEnvironment") else ""
        if a.get("running"):
            lines.append(
                f"  #{a['attempt']}  started {_when(a['startedAt'])}, running for "
                f"{_duration(a['durationSeconds'])}{where}"
            )
            if a.get("logStreamName"):
                lines.append(f"      log stream     {a['logStreamName']}")
            continue
        lines.append(
            f"  #{a['attempt']}  {_when(a['startedAt'])} → {_when(a['stoppedAt'])} "
            f"({_duration(a['durationSeconds'])}){where}"
        )
        exit_code = "none" if a["exitCode"] is None else a["exitCode"]
        lines.append(f"      exit code      {exit_code}")
        if a.get("reason"):
            lines.append(f"      reason         {a['reason']}")
        lines.append(f"      status reason  {a['statusReason'] or '-'}")
        if a.get("logStreamName"):
            lines.append(f"      log stream     {a['logStreamName']}")
        lines.append(f"      then           {a['retry']['why']}")
    if not doc["attempts"] and "size" not in array:
        lines.append("No attempt has run.")
    waiting = doc.get("waiting")
    if waiting is not None and doc["status"] == "RUNNABLE":
        lines += _runnable_text(waiting)
    elif waiting is not None:
        lines += _pending_text(waiting)
    return "\n".join(lines)


def _runnable_text(w: Json) -> list[str]:
    lines = ["Waiting to run"]
    if w["position"] is not None:
        lines.append(f"  position       {w['position']} of {w['runnable']} RUNNABLE in its queue")
    if w.get("frontOfQueuePosition") is not None:
        lines.append(
            f"  snapshot       position {w['frontOfQueuePosition']} in GetJobQueueSnapshot's "
            "frontOfQueue"
        )
    need = w["needs"]
    memory = f", {need['memoryMiB']} MiB" if need["memoryMiB"] else ""
    gpus = f", {need['gpus']} GPU" if need["gpus"] else ""
    lines.append(f"  needs          {need['vcpus']:g} vCPU{memory}{gpus}")
    queue = w.get("queue")
    if queue:
        lines.append(f"  queue          {queue['state']}, {queue['status']}")
    for ce in w.get("computeEnvironments") or []:
        if ce.get("status") == "NOT FOUND":
            lines.append(f"  {ce['computeEnvironment']}: not found")
            continue
        ceiling = ce["maxvCpus"] if ce["maxvCpus"] is not None else "host"
        lines.append(
            f"  {ce['computeEnvironment']} ({ce['type']}, {ce['state']}, {ce['status']}): "
            f"{ce['vcpusInUse']:g} of {ceiling} vCPU in use by {ce['jobsRunning']} job(s)"
        )
    return lines


def _pending_text(w: Json) -> list[str]:
    lines = ["Waiting for"]
    for dep in w["waitingFor"]:
        lines.append(f"  {dep['jobId']} ({dep['status']})")
    if w.get("children"):
        counts = ", ".join(f"{k} {v}" for k, v in w["children"].items() if v)
        lines.append(f"  its children: {counts}")
    if len(lines) == 1:
        lines.append("  nothing: it is about to become RUNNABLE")
    return lines


def as_json(doc: Json) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)
