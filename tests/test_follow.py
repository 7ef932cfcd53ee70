"""Jobs placed on the slot of a running short job, to start the moment it ends.

A compute environment whose jobs have lately been short is a stream: a job
that finds it full is placed (STARTING) behind one of its attempts, and the
launcher starts it as soon as that attempt is reaped, without the round trip
through the engine. These tests check that such a job never shares its slot,
that one waiting too long (a long job among short ones) goes back to
RUNNABLE, that TerminateJob stops a waiting one before it runs, and that a
server killed while one waits neither loses it nor starts it twice.
"""

from __future__ import annotations

import itertools
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

from conftest import Server
from engine_support import (
    engine_server,
    make_env,
    restart,
    sh,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

# Every job counts as short: these tests are about what happens once jobs
# follow one another, not about when (a loaded machine runs short jobs long).
FOLLOW = ("--host-vcpus", "4", "--follow-below-ms", "60000")
GATE_WAIT = "i=0; until [ -e {gate} ] || [ $i -ge 600 ]; do sleep 0.05; i=$((i+1)); done"


def followers(server: Server, event: str) -> float:
    """shoal_slot_followers_total{event=...} from /metrics."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "shoal_slot_followers_total" and s.labels.get("event") == event
    )


def one_slot(server: Server, prefix: str) -> tuple[Any, dict[str, str]]:
    """A client and a compute environment of one vCPU, warmed with short
    jobs so that the engine takes it for a stream of them."""
    batch = server.client()
    env = make_env(batch, prefix, max_vcpus=1)
    warm = [submit(batch, env, ["true"], name=f"warm{i}") for i in range(4)]
    for job_id in warm:
        assert wait_for(batch, job_id)["status"] == "SUCCEEDED"
    return batch, env


def line_up(
    server: Server, prefix: str, gate: Path, *commands: list[str], long_tail: str = ""
) -> tuple[Any, dict[str, str], str, list[str]]:
    """On a warmed one-vCPU compute environment, a job that runs until `gate`
    exists (then `long_tail`), and behind it on its slot a job per command,
    each submitted once the one before is placed there."""
    batch, env = one_slot(server, prefix)
    long_job = submit(batch, env, sh(GATE_WAIT.format(gate=gate) + long_tail), name="long")
    wait_for(batch, long_job, "RUNNING")
    placed = followers(server, "placed")
    waiting = []
    for i, command in enumerate(commands):
        waiting.append(submit(batch, env, command, name=f"waiting{i}"))
        wait_until(
            lambda n=i + 1: followers(server, "placed") == placed + n,
            what=f"job {i + 1} placed behind the long one",
        )
    return batch, env, long_job, waiting


def test_jobs_following_on_one_slot_never_overlap(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    # Each job writes when it begins and ends, by the clock, to one file.
    script = f'echo "b $(date +%s%N)" >> {trace}; echo "e $(date +%s%N)" >> {trace}'
    with engine_server(tmp_path, *FOLLOW) as server:
        batch, env = one_slot(server, "stream")
        placed_before = followers(server, "placed")
        jobs = [submit(batch, env, sh(script), name=f"j{i}") for i in range(40)]
        details = [wait_for(batch, job_id) for job_id in jobs]
        for detail in details:
            assert detail["status"] == "SUCCEEDED", detail
            assert len(detail["attempts"]) == 1, detail["attempts"]
        # As DescribeJobs tells it too: each starts once the one before stopped.
        spans = sorted((d["startedAt"], d["stoppedAt"]) for d in details)
        for (_, stopped), (started, _) in itertools.pairwise(spans):
            assert started >= stopped, spans
        # Jobs did follow one another on the slot...
        assert followers(server, "placed") > placed_before
        assert followers(server, "called_off") == 0
    # ...and one began only once the one before had ended.
    events = sorted(
        (int(stamp), kind)
        for kind, stamp in (line.split() for line in trace.read_text().split("\n") if line)
    )
    assert len(events) == 80
    assert [kind for _, kind in events] == ["b", "e"] * 40, events


def test_a_job_waiting_behind_a_long_one_goes_back_to_runnable(tmp_path: Path) -> None:
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    with engine_server(tmp_path, *FOLLOW, "--follow-wait-seconds", "0.3") as server:
        batch, _, long_job, [waiting] = line_up(server, "long", gate, sh(f"echo x >> {ran}"))
        # Called off after 0.3 s: RUNNABLE again, and the engine stops taking
        # this compute environment for a stream of short jobs.
        wait_until(lambda: followers(server, "called_off") == 1, what="the job called off")
        detail = wait_for(batch, waiting, "RUNNABLE")
        assert "attempts" not in detail or detail["attempts"] == []
        assert "container" not in detail or "taskArn" not in detail["container"]
        assert not ran.exists()
        gate.touch()
        assert wait_for(batch, long_job)["status"] == "SUCCEEDED"
        detail = wait_for(batch, waiting)
        assert detail["status"] == "SUCCEEDED", detail
        assert len(detail["attempts"]) == 1, detail["attempts"]
        assert detail["attempts"][0]["startedAt"] >= describe_stopped(batch, long_job)
        assert ran.read_text() == "x\n"


def describe_stopped(batch: Any, job_id: str) -> int:
    stopped: int = batch.describe_jobs(jobs=[job_id])["jobs"][0]["stoppedAt"]
    return stopped


def test_terminating_a_job_waiting_on_a_slot_means_it_never_runs(tmp_path: Path) -> None:
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    with engine_server(tmp_path, *FOLLOW, "--follow-wait-seconds", "60") as server:
        batch, env, long_job, [waiting] = line_up(server, "term", gate, sh(f"echo x >> {ran}"))
        assert wait_for(batch, waiting, "STARTING")["status"] == "STARTING"
        batch.terminate_job(jobId=waiting, reason="not wanted")
        detail = wait_for(batch, waiting)
        assert detail["status"] == "FAILED"
        assert detail["statusReason"] == "not wanted"
        assert "startedAt" not in detail["attempts"][-1]
        # The slot's job is untouched, and when it ends nothing else starts.
        assert wait_for(batch, long_job, "RUNNING")["status"] == "RUNNING"
        gate.touch()
        assert wait_for(batch, long_job)["status"] == "SUCCEEDED"
        after = submit(batch, env, ["true"], name="after")
        assert wait_for(batch, after)["status"] == "SUCCEEDED"
        assert not ran.exists()
        assert followers(server, "called_off") == 0


def test_a_job_waiting_on_a_slot_survives_a_kill_9_and_runs_once(tmp_path: Path) -> None:
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    server = start_engine_server(tmp_path, *FOLLOW, "--follow-wait-seconds", "60")
    servers = [server]
    try:
        batch, env, long_job, [waiting] = line_up(server, "kill", gate, sh(f"echo x >> {ran}"))
        assert wait_for(batch, waiting, "STARTING")["status"] == "STARTING"
        server.stop(signal.SIGKILL)
        # The launcher outlives the server (with the long job): what waited
        # in it must not start when that job ends, nor be lost.
        server = restart(server)
        servers.append(server)
        batch = server.client()
        assert wait_for(batch, waiting, "RUNNABLE")["status"] == "RUNNABLE"
        gate.touch()
        assert wait_for(batch, long_job)["status"] == "SUCCEEDED"
        detail = wait_for(batch, waiting)
        assert detail["status"] == "SUCCEEDED", detail
        assert len(detail["attempts"]) == 1, detail["attempts"]
        after = submit(batch, env, ["true"], name="after")
        assert wait_for(batch, after)["status"] == "SUCCEEDED"
        assert ran.read_text() == "x\n"
    finally:
        for each in servers:
            shutdown(each)


def test_longer_jobs_do_not_follow_one_another(tmp_path: Path) -> None:
    # With the default threshold (50 ms on average): jobs of 0.2 s wait
    # RUNNABLE for a free slot, as on AWS.
    with engine_server(tmp_path, "--host-vcpus", "4") as server:
        batch = server.client()
        env = make_env(batch, "longer", max_vcpus=1)
        jobs = [submit(batch, env, ["sleep", "0.2"], name=f"j{i}") for i in range(4)]
        details = [wait_for(batch, job_id) for job_id in jobs]
        assert all(d["status"] == "SUCCEEDED" for d in details), details
        assert followers(server, "placed") == 0
        spans = sorted((d["startedAt"], d["stoppedAt"]) for d in details)
        for (_, stopped), (started, _) in itertools.pairwise(spans):
            assert started >= stopped, spans


def test_a_line_of_two_on_a_slot_keeps_its_order_when_the_first_is_called_off(
    tmp_path: Path,
) -> None:
    # F waits behind a long job; G waits behind F. When F is called off, G
    # waits for the long job itself: it must not start early beside it, nor
    # beside F when F is placed again.
    gate, trace = tmp_path / "gate", tmp_path / "trace"
    script = 'echo "b $(date +%s%N)" >> {t}; sleep 0.2; echo "e $(date +%s%N)" >> {t}'
    with engine_server(tmp_path, *FOLLOW, "--follow-wait-seconds", "1") as server:
        job = sh(script.format(t=trace))
        tail = f"; {script.format(t=trace)}"
        batch, _, long_job, [first, second] = line_up(
            server, "line", gate, job, job, long_tail=tail
        )
        wait_until(lambda: followers(server, "called_off") >= 1, what="the first called off")
        gate.touch()
        for job_id in (long_job, first, second):
            assert wait_for(batch, job_id)["status"] == "SUCCEEDED"
    events = sorted(
        (int(stamp), kind)
        for kind, stamp in (line.split() for line in trace.read_text().split("\n") if line)
    )
    assert [kind for _, kind in events] == ["b", "e"] * 3, events


def test_terminating_the_first_of_a_line_of_two_leaves_the_second_waiting(
    tmp_path: Path,
) -> None:
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    with engine_server(tmp_path, *FOLLOW, "--follow-wait-seconds", "60") as server:
        batch, env, long_job, [first, second] = line_up(
            server, "lineterm", gate, ["true"], sh(f"echo x >> {ran}")
        )
        batch.terminate_job(jobId=first, reason="not the first")
        assert wait_for(batch, first)["status"] == "FAILED"
        # The second still waits for the long job, and can still be stopped.
        assert wait_for(batch, second, "STARTING")["status"] == "STARTING"
        batch.terminate_job(jobId=second, reason="not the second")
        detail = wait_for(batch, second)
        assert detail["status"] == "FAILED"
        assert detail["statusReason"] == "not the second"
        gate.touch()
        assert wait_for(batch, long_job)["status"] == "SUCCEEDED"
        assert wait_for(batch, submit(batch, env, ["true"], name="after"))["status"] == "SUCCEEDED"
        assert not ran.exists()


def launcher_pid(server: Server) -> int:
    assert server.proc is not None
    for tid in os.listdir(f"/proc/{server.proc.pid}/task"):
        for kid in Path(f"/proc/{server.proc.pid}/task/{tid}/children").read_text().split():
            if b"shoal.executors.launcher" in Path(f"/proc/{kid}/cmdline").read_bytes():
                return int(kid)
    raise AssertionError("the server has no launcher process")


def test_a_line_on_a_slot_carries_on_when_the_launcher_dies(tmp_path: Path) -> None:
    # The launcher held the line; killed, the server runs it itself, in
    # order, once the long job (now the server's) has ended. The first fails
    # to start: the second runs all the same.
    gate, trace = tmp_path / "gate", tmp_path / "trace"
    with engine_server(tmp_path, *FOLLOW, "--follow-wait-seconds", "60") as server:
        batch, _, long_job, [first, second] = line_up(
            server,
            "lost",
            gate,
            ["no-such-program-here"],
            sh(f"echo second >> {trace}"),
            long_tail=f"; echo long >> {trace}",
        )
        os.kill(launcher_pid(server), signal.SIGKILL)
        gate.touch()
        assert wait_for(batch, long_job)["status"] == "SUCCEEDED"
        detail = wait_for(batch, first)
        assert detail["status"] == "FAILED"
        assert "no-such-program-here" in detail["attempts"][-1]["container"]["reason"]
        assert wait_for(batch, second)["status"] == "SUCCEEDED"
        assert trace.read_text() == "long\nsecond\n"


def test_jobs_do_not_follow_an_attempt_reattached_after_a_restart(tmp_path: Path) -> None:
    # The new launcher did not start the reattached job, so it could not
    # start what follows it when it ends: a job follows the other slot's.
    gate, gate2, ran = tmp_path / "gate", tmp_path / "gate2", tmp_path / "ran"
    server = start_engine_server(tmp_path, *FOLLOW, "--follow-wait-seconds", "60")
    servers = [server]
    try:
        batch = server.client()
        env = make_env(batch, "reattached", max_vcpus=2)
        old = submit(batch, env, sh(GATE_WAIT.format(gate=gate)), name="old")
        wait_for(batch, old, "RUNNING")
        server.stop(signal.SIGKILL)
        server = restart(server)
        servers.append(server)
        batch = server.client()
        assert wait_for(batch, old, "RUNNING")["status"] == "RUNNING"
        for i in range(3):  # short runs on the other slot
            short = submit(batch, env, ["true"], name=f"w{i}")
            assert wait_for(batch, short)["status"] == "SUCCEEDED"
        new = submit(batch, env, sh(GATE_WAIT.format(gate=gate2)), name="new")
        wait_for(batch, new, "RUNNING")
        waiting = submit(batch, env, sh(f"echo x >> {ran}"), name="waiting")
        wait_until(lambda: followers(server, "placed") == 1, what="the job placed")
        gate.touch()
        assert wait_for(batch, old)["status"] == "SUCCEEDED"
        # It follows the new job, not the old one (nor did it start at once).
        assert wait_for(batch, waiting, "STARTING")["status"] == "STARTING"
        assert not ran.exists()
        gate2.touch()
        assert wait_for(batch, waiting)["status"] == "SUCCEEDED"
        assert ran.read_text() == "x\n"
    finally:
        gate.touch()
        gate2.touch()
        for each in servers:
            shutdown(each)


def test_after_the_launcher_dies_a_line_waits_for_the_job_that_holds_the_slot(
    tmp_path: Path,
) -> None:
    # long <- first <- second, then the launcher is killed: the server holds
    # the line. The first is called off (it waited too long); the second must
    # still wait for the long job, not start beside it. Likewise when the
    # first is terminated while the launcher still lived.
    for how in ("called off", "terminated"):
        gate, trace = tmp_path / f"gate-{how[0]}", tmp_path / f"trace-{how[0]}"
        (tmp_path / how[0]).mkdir()
        wait = "1" if how == "called off" else "60"
        with engine_server(tmp_path / how[0], *FOLLOW, "--follow-wait-seconds", wait) as server:
            batch, _, long_job, [first, second] = line_up(
                server,
                f"dead{how[0]}",
                gate,
                ["true"],
                sh(f"echo second >> {trace}"),
                long_tail=f"; echo long >> {trace}",
            )
            if how == "terminated":
                batch.terminate_job(jobId=first, reason="not the first")
                assert wait_for(batch, first)["status"] == "FAILED"
            os.kill(launcher_pid(server), signal.SIGKILL)
            if how == "called off":
                wait_until(lambda s=server: followers(s, "called_off") >= 1, what="called off")
            gate.touch()
            for job_id in (long_job, second):
                assert wait_for(batch, job_id)["status"] == "SUCCEEDED"
            assert trace.read_text() == "long\nsecond\n", how
