"""Array jobs and dependencies, run by a live server's engine.

One server for the module (a compute environment per test keeps tests
apart); jobs coordinate with the test through files, never through sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, client_error
from engine_support import (
    EXITED,
    TIMEOUT_REASON,
    describe,
    job_log,
    make_env,
    sh,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
    wait_until,
)

STATUSES = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"}
DEPENDENT_FAILED = "Dependent Job failed"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_engine_server(
        tmp_path_factory.mktemp("arrays"),
        "--host-vcpus",
        "64",
        "--min-timeout-seconds",
        "1",
        "--kill-grace-seconds",
        "0.2",
    )
    yield srv
    shutdown(srv)


@pytest.fixture
def batch(server: Server) -> Any:
    return server.client("batch")


@pytest.fixture
def logs(server: Server) -> Any:
    return server.client("logs")


def gate_script(gate: Path, then: str = "true") -> list[str]:
    return sh(f"until [ -e {gate} ]; do sleep 0.02; done; {then}")


def children(batch: Any, parent: str, status: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"arrayJobId": parent, "jobStatus": status}
    while True:
        page = batch.list_jobs(**kwargs)
        out += page["jobSummaryList"]
        if not page.get("nextToken"):
            return out
        kwargs["nextToken"] = page["nextToken"]


def summary(batch: Any, parent: str) -> dict[str, int]:
    props = describe(batch, parent)["arrayProperties"]
    result: dict[str, int] = props["statusSummary"]
    return result


def test_children_get_their_index_size_and_id(batch: Any, logs: Any) -> None:
    env = make_env(batch, "idx")
    script = "echo $AWS_BATCH_JOB_ID $AWS_BATCH_JOB_ARRAY_INDEX $AWS_BATCH_JOB_ARRAY_SIZE"
    parent = submit(batch, env, sh(script), arrayProperties={"size": 3})
    detail = wait_for(batch, parent, timeout=30)
    assert detail["status"] == "SUCCEEDED", detail
    assert detail["attempts"] == []
    assert detail["arrayProperties"]["size"] == 3
    assert detail["arrayProperties"]["statusSummary"] == {
        **dict.fromkeys(STATUSES, 0),
        "SUCCEEDED": 3,
    }
    for i in range(3):
        child = describe(batch, f"{parent}:{i}")
        assert child["status"] == "SUCCEEDED"
        assert child["arrayProperties"] == {"index": i}
        assert child["jobName"] == detail["jobName"]
        assert job_log(logs, child) == [f"{parent}:{i} {i} 3"]
    listed = children(batch, parent, "SUCCEEDED")
    assert sorted(s["jobId"] for s in listed) == [f"{parent}:{i}" for i in range(3)]
    assert all(s["arrayProperties"]["index"] in range(3) for s in listed)


def test_parent_stays_pending_until_every_child_is_done(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "pend")
    gate = tmp_path / "gate"
    # Child 0 fails at once; the others wait for the gate.
    script = 'if [ "$AWS_BATCH_JOB_ARRAY_INDEX" = 0 ]; then exit 3; fi; ' + " ".join(
        gate_script(gate)[2:]
    )
    parent = submit(batch, env, sh(script), arrayProperties={"size": 4})
    wait_for(batch, f"{parent}:0", "FAILED")
    wait_until(lambda: len(children(batch, parent, "RUNNING")) == 3, what="3 running children")
    detail = describe(batch, parent)
    assert detail["status"] == "PENDING"  # never RUNNING, and not FAILED while children run
    counts = detail["arrayProperties"]["statusSummary"]
    assert set(counts) == STATUSES
    assert (counts["FAILED"], counts["RUNNING"], sum(counts.values())) == (1, 3, 4)
    running = batch.list_jobs(jobQueue=env["queue_name"], jobStatus="RUNNING")["jobSummaryList"]
    assert parent not in {s["jobId"] for s in running}
    gate.touch()
    detail = wait_for(batch, parent, timeout=30)
    assert detail["status"] == "FAILED"
    assert detail["arrayProperties"]["statusSummary"]["SUCCEEDED"] == 3
    assert describe(batch, f"{parent}:1")["status"] == "SUCCEEDED"


def test_retries_are_per_child(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "retry")
    # Child 1 fails its first attempt only.
    mark = tmp_path / "tried"
    script = (
        f'if [ "$AWS_BATCH_JOB_ARRAY_INDEX" = 1 ] && [ ! -e {mark} ]; then touch {mark}; exit 1; fi'
    )
    parent = submit(
        batch, env, sh(script), arrayProperties={"size": 3}, retryStrategy={"attempts": 2}
    )
    assert wait_for(batch, parent, timeout=30)["status"] == "SUCCEEDED"
    attempts = [len(describe(batch, f"{parent}:{i}")["attempts"]) for i in range(3)]
    assert attempts == [1, 2, 1]


def test_timeouts_are_per_child_and_not_retried(batch: Any) -> None:
    env = make_env(batch, "timeout")
    script = '[ "$AWS_BATCH_JOB_ARRAY_INDEX" = 0 ] || sleep 30'
    parent = submit(
        batch,
        env,
        sh(script),
        arrayProperties={"size": 3},
        timeout={"attemptDurationSeconds": 3},
        retryStrategy={"attempts": 3},
    )
    assert wait_for(batch, parent, timeout=30)["status"] == "FAILED"
    kids = [describe(batch, f"{parent}:{i}") for i in range(3)]
    assert kids[0]["status"] == "SUCCEEDED"
    for kid in kids[1:]:
        assert (kid["status"], kid["statusReason"]) == ("FAILED", TIMEOUT_REASON)
        assert len(kid["attempts"]) == 1


def test_ten_thousand_children_complete(batch: Any) -> None:
    env = make_env(batch, "big", max_vcpus=64)
    parent = submit(batch, env, ["true"], arrayProperties={"size": 10_000})
    detail = wait_for(batch, parent, timeout=240)
    assert detail["status"] == "SUCCEEDED", detail["arrayProperties"]
    assert detail["arrayProperties"]["statusSummary"]["SUCCEEDED"] == 10_000
    assert describe(batch, f"{parent}:9999")["status"] == "SUCCEEDED"


def test_n_to_n_child_waits_for_its_partner(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "n2n")
    gates = tmp_path / "gates"
    gates.mkdir()
    first = submit(
        batch,
        env,
        sh(f"until [ -e {gates}/$AWS_BATCH_JOB_ARRAY_INDEX ]; do sleep 0.02; done"),
        arrayProperties={"size": 3},
        name="first",
    )
    second = submit(
        batch,
        env,
        ["true"],
        arrayProperties={"size": 3},
        dependsOn=[{"jobId": first, "type": "N_TO_N"}],
        name="second",
    )
    wait_until(lambda: len(children(batch, first, "RUNNING")) == 3, what="first array running")
    (gates / "1").touch()
    done = wait_for(batch, f"{second}:1", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert done["startedAt"] >= describe(batch, f"{first}:1")["stoppedAt"]
    # Its neighbours still wait for theirs.
    assert describe(batch, f"{second}:0")["status"] == "PENDING"
    assert describe(batch, f"{second}:2")["status"] == "PENDING"
    (gates / "0").touch()
    (gates / "2").touch()
    assert wait_for(batch, second, timeout=20)["status"] == "SUCCEEDED"
    for i in range(3):
        child = describe(batch, f"{second}:{i}")
        assert child["startedAt"] >= describe(batch, f"{first}:{i}")["stoppedAt"]


def test_sequential_array_stops_at_the_failed_child(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "seq")
    order = tmp_path / "order"
    script = f'echo $AWS_BATCH_JOB_ARRAY_INDEX >> {order}; [ "$AWS_BATCH_JOB_ARRAY_INDEX" != 2 ]'
    parent = submit(
        batch, env, sh(script), arrayProperties={"size": 5}, dependsOn=[{"type": "SEQUENTIAL"}]
    )
    detail = wait_for(batch, parent, timeout=30)
    assert detail["status"] == "FAILED"
    assert order.read_text().split() == ["0", "1", "2"]  # one at a time, in order
    kids = [describe(batch, f"{parent}:{i}") for i in range(5)]
    assert [k["status"] for k in kids] == ["SUCCEEDED", "SUCCEEDED", "FAILED", "FAILED", "FAILED"]
    assert kids[2]["statusReason"] == EXITED
    for later in kids[3:]:
        assert later["statusReason"] == DEPENDENT_FAILED
        assert "startedAt" not in later and later["attempts"] == []
    assert kids[1]["startedAt"] >= kids[0]["stoppedAt"]
    assert kids[2]["startedAt"] >= kids[1]["stoppedAt"]


def test_failure_runs_down_a_three_level_chain(batch: Any) -> None:
    env = make_env(batch, "chain")
    first = submit(batch, env, sh("exit 1"), name="first")
    second = submit(batch, env, ["true"], name="second", dependsOn=[{"jobId": first}])
    third = submit(batch, env, ["true"], name="third", dependsOn=[{"jobId": second}])
    assert wait_for(batch, third, timeout=20)["status"] == "FAILED"
    for job_id, reason in ((first, EXITED), (second, DEPENDENT_FAILED), (third, DEPENDENT_FAILED)):
        detail = describe(batch, job_id)
        assert (detail["status"], detail["statusReason"]) == ("FAILED", reason)
    for job_id in (second, third):
        assert "startedAt" not in describe(batch, job_id)


def test_a_chain_runs_in_order(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "order")
    out = tmp_path / "out"
    previous: list[dict[str, str]] = []
    ids = []
    for i in range(20):
        job_id = submit(batch, env, sh(f"echo {i} >> {out}"), name=f"c{i}", dependsOn=previous)
        ids.append(job_id)
        previous = [{"jobId": job_id}]
    assert wait_for(batch, ids[-1], timeout=30)["status"] == "SUCCEEDED"
    assert out.read_text().split() == [str(i) for i in range(20)]


def test_depending_on_a_parent_waits_for_the_whole_array(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "whole")
    gate = tmp_path / "gate"
    script = f'[ "$AWS_BATCH_JOB_ARRAY_INDEX" = 0 ] || {" ".join(gate_script(gate)[2:])}'
    parent = submit(batch, env, sh(script), arrayProperties={"size": 3})
    after = submit(batch, env, ["true"], name="after", dependsOn=[{"jobId": parent}])
    wait_for(batch, f"{parent}:0", "SUCCEEDED")
    assert describe(batch, after)["status"] == "PENDING"
    gate.touch()
    done = wait_for(batch, after, timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert done["startedAt"] >= describe(batch, parent)["stoppedAt"]


def test_a_pending_job_says_which_dependencies_it_waits_for(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "saywait")
    gate = tmp_path / "gate"
    first = submit(batch, env, gate_script(gate), name="first")
    done = wait_for(batch, submit(batch, env, ["true"], name="done"), "SUCCEEDED")
    wait_for(batch, first, "RUNNING")
    after = submit(
        batch, env, ["true"], name="after", dependsOn=[{"jobId": first}, {"jobId": done["jobId"]}]
    )
    detail = wait_until(
        lambda: (
            (d := describe(batch, after))["status"] == "PENDING" and d.get("statusReason") and d
        ),
        timeout=20,
        what="a PENDING reason",
    )
    # Only the dependency not done yet, with its status.
    assert detail["statusReason"] == f"DEPENDENCY - Waiting for {first} (RUNNING) to succeed."
    gate.touch()
    finished = wait_for(batch, after, timeout=20)
    assert finished["status"] == "SUCCEEDED"


def test_a_child_can_be_depended_on(batch: Any) -> None:
    env = make_env(batch, "onechild")
    parent = submit(
        batch, env, sh('[ "$AWS_BATCH_JOB_ARRAY_INDEX" != 1 ]'), arrayProperties={"size": 2}
    )
    ok = submit(batch, env, ["true"], name="ok", dependsOn=[{"jobId": f"{parent}:0"}])
    bad = submit(batch, env, ["true"], name="bad", dependsOn=[{"jobId": f"{parent}:1"}])
    assert wait_for(batch, ok, timeout=20)["status"] == "SUCCEEDED"
    detail = wait_for(batch, bad, timeout=20)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", DEPENDENT_FAILED)


def test_unknown_dependency_is_rejected(batch: Any) -> None:
    env = make_env(batch, "unknown")
    base = {"jobName": "j", "jobQueue": env["queue_name"], "jobDefinition": env["definition_name"]}
    unknown = "00000000-0000-0000-0000-000000000000"
    message = client_error(batch.submit_job, **base, dependsOn=[{"jobId": unknown}])
    assert unknown in message
    message = client_error(batch.submit_job, **base, dependsOn=[{"type": "SEQUENTIAL"}])
    assert "SEQUENTIAL" in message
    # A child reference must name a child: an array job and an index inside it.
    plain = submit(batch, env, ["true"], name="plain")
    array = submit(batch, env, ["true"], name="arr", arrayProperties={"size": 2})
    for ref in (f"{plain}:0", f"{array}:2", f"{array}:x", f"{array}:-1"):
        message = client_error(batch.submit_job, **base, dependsOn=[{"jobId": ref}])
        assert ref in message, message
    listed = batch.list_jobs(
        jobQueue=env["queue_name"], filters=[{"name": "JOB_NAME", "values": ["j"]}]
    )
    assert listed["jobSummaryList"] == []  # nothing half-written


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_stopping_a_parent_mid_run_reaches_every_child(
    batch: Any, tmp_path: Path, kind: str
) -> None:
    env = make_env(batch, f"stop-{kind}", max_vcpus=1)  # one child at a time
    gate = tmp_path / "gate"
    parent = submit(batch, env, gate_script(gate), arrayProperties={"size": 4})
    wait_until(lambda: children(batch, parent, "RUNNING"), what="a running child")
    [running] = children(batch, parent, "RUNNING")
    call = batch.cancel_job if kind == "cancel" else batch.terminate_job
    call(jobId=parent, reason="not needed")
    queued = [f"{parent}:{i}" for i in range(4) if f"{parent}:{i}" != running["jobId"]]
    for job_id in queued:
        detail = wait_for(batch, job_id, "FAILED")
        assert detail["statusReason"] == "not needed"
        assert "startedAt" not in detail
    if kind == "cancel":
        # CancelJob leaves a running child alone; the parent waits for it.
        assert describe(batch, running["jobId"])["status"] == "RUNNING"
        assert describe(batch, parent)["status"] == "PENDING"
        gate.touch()
        assert wait_for(batch, running["jobId"])["status"] == "SUCCEEDED"
    else:
        stopped = wait_for(batch, running["jobId"], timeout=40)
        assert (stopped["status"], stopped["statusReason"]) == ("FAILED", "not needed")
        assert stopped["isTerminated"] is True
    detail = wait_for(batch, parent, timeout=20)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "not needed")
    counts = detail["arrayProperties"]["statusSummary"]
    # Cancel leaves the running child to succeed; terminate stops it too.
    expected = (1, 3) if kind == "cancel" else (0, 4)
    assert (counts["SUCCEEDED"], counts["FAILED"]) == expected, counts


def test_cancelling_one_child_fails_the_parent(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "onecancel", max_vcpus=1)
    gate = tmp_path / "gate"
    parent = submit(batch, env, gate_script(gate), arrayProperties={"size": 3})
    wait_until(lambda: children(batch, parent, "RUNNING"), what="a running child")
    waiting = wait_until(lambda: children(batch, parent, "RUNNABLE"), what="a waiting child")[0]
    batch.cancel_job(jobId=waiting["jobId"], reason="just this one")
    assert wait_for(batch, waiting["jobId"])["statusReason"] == "just this one"
    gate.touch()
    detail = wait_for(batch, parent, timeout=20)
    assert detail["status"] == "FAILED"
    counts = detail["arrayProperties"]["statusSummary"]
    assert (counts["SUCCEEDED"], counts["FAILED"]) == (2, 1)
