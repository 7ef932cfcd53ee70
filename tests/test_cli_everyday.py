"""The everyday CLI (`shoal submit`, `jobs`, `describe`, `wait`, `cancel`,
`terminate`, `queues`, `envs`, `defs`, `completion`), run as a user runs it
(`python -m shoal ...`, its own process) against live servers: one that only
serves the API (jobs stay where the control plane puts them) and one whose
engine runs jobs. Output is checked against what boto3 sees."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CREDENTIALS,
    REGION,
    Server,
    client_error,
    fails_cleanly,
    free_port,
    make_ce,
    make_definition,
    make_queue,
)
from engine_support import describe, make_env, sh, shutdown, start_engine_server, wait_for

BAR = re.compile(r"\[[#.]+\]\s+(\d+)/(\d+)")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The jobs here only sleep: let the host offer more than this machine's CPUs.
    srv = start_engine_server(tmp_path_factory.mktemp("everyday"), "--host-vcpus", "16")
    yield srv
    shutdown(srv)


@pytest.fixture(scope="module")
def engine_batch(engine: Server) -> Any:
    return engine.client()


def cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    for name in ("COLUMNS", "NO_COLOR"):
        env.pop(name, None)
    env.update(extra)
    return env


def shoal(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`shoal ARGS`, a process of its own, finding the server through
    $AWS_ENDPOINT_URL as the aws CLI does (an --endpoint-url at the end
    would land in a command given after `--`)."""
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(server.url, **env),
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def shoal_json(server: Server, *args: str) -> Any:
    return json.loads(ok(shoal(server, *args, "--json")))


def on_terminal(
    server: Server,
    args: list[str],
    stream: str,
    columns: int = 120,
    when: tuple[str, Callable[[], None]] | None = None,
    **env: str,
) -> tuple[int, str, str]:
    """Run with `stream` (stdout or stderr) on a pseudo-terminal `columns`
    wide and the other a pipe: (exit status, terminal output, pipe output).
    `when` = (text, action): do `action` once `text` is on the terminal."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", *args],
        stdout=streams["stdout"],
        stderr=streams["stderr"],
        env=cli_env(server.url, **env),
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if when is not None and when[0].encode() in seen:
                when[1]()
                when = None
        else:
            raise AssertionError(f"still running after 60 s; seen: {seen!r}")
    finally:
        os.close(master)
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
    out, err = proc.communicate(timeout=60)
    other = (err if stream == "stdout" else out) or b""
    return proc.returncode, seen.decode(), other.decode()


def ids_of(doc: dict[str, Any]) -> list[str]:
    return [j["jobId"] for j in doc["jobSummaryList"]]


def list_all(batch: Any, **args: Any) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for page in batch.get_paginator("list_jobs").paginate(**args):
        jobs.extend(page["jobSummaryList"])
    return jobs


# -- submit ------------------------------------------------------------------------------


def test_submit_sends_what_was_asked(server: Server, batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    queue = f"{unique}-q"
    make_queue(batch, queue, [ce])
    batch.register_job_definition(
        jobDefinitionName=f"{unique}-def",
        type="container",
        parameters={"who": "world", "greeting": "hello"},
        containerProperties={
            "image": "busybox",
            "command": ["echo", "Ref::greeting", "Ref::who"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "128"},
            ],
        },
    )
    out = ok(
        shoal(
            server,
            "submit",
            queue,
            f"{unique}-def",
            "--name",
            "greet",
            "--param",
            "who=there",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--command",
            "echo 'a b' Ref::who",
            "--vcpus",
            "2",
            "--memory",
            "256",
            "--attempts",
            "3",
            "--timeout",
            "60",
        )
    )
    job_id = out.strip()
    job = describe(batch, job_id)
    assert job["jobName"] == "greet"
    assert job["jobQueue"].endswith(f"job-queue/{queue}")
    assert job["parameters"] == {"who": "there", "greeting": "hello"}
    container = job["container"]
    assert container["command"] == ["echo", "a b", "there"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["A"] == "1" and env["B"] == "x=y"
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {
        "VCPU": "2",
        "MEMORY": "256",
    }
    assert job["retryStrategy"]["attempts"] == 3
    assert job["timeout"] == {"attemptDurationSeconds": 60}

    # The command after `--`; the name defaults to the definition's.
    out = ok(shoal(server, "submit", queue, f"{unique}-def:1", "--json", "--", "sh", "-c", "x y"))
    reply = json.loads(out)
    assert set(reply) == {"jobArn", "jobName", "jobId"}
    job = describe(batch, reply["jobId"])
    assert job["jobName"] == reply["jobName"] == f"{unique}-def"
    assert job["jobArn"] == reply["jobArn"]
    assert job["container"]["command"] == ["sh", "-c", "x y"]


def test_submit_arrays_and_dependencies(server: Server, batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    queue = f"{unique}-q"
    make_queue(batch, queue, [ce])
    make_definition(batch, f"{unique}-def")
    first = ok(shoal(server, "submit", queue, f"{unique}-def", "--array-size", "3")).strip()
    assert describe(batch, first)["arrayProperties"]["size"] == 3
    second = ok(
        shoal(
            server,
            "submit",
            queue,
            f"{unique}-def",
            "--array-size",
            "3",
            "--depends-on",
            f"{first}:N_TO_N",
            "--depends-on",
            "SEQUENTIAL",
        )
    )
    # A plain id, and an array child's id (its `:1` is no dependency type).
    third = ok(
        shoal(
            server,
            "submit",
            queue,
            f"{unique}-def",
            "--depends-on",
            first,
            "--depends-on",
            f"{first}:1",
        )
    )
    assert describe(batch, second.strip())["dependsOn"] == [
        {"jobId": first, "type": "N_TO_N"},
        {"type": "SEQUENTIAL"},
    ]
    assert [d["jobId"] for d in describe(batch, third.strip())["dependsOn"]] == [
        first,
        f"{first}:1",
    ]


def test_submit_wait_tells_success_from_failure(
    engine: Server, engine_batch: Any, unique: str
) -> None:
    env = make_env(engine_batch, unique)
    queue, definition = env["queue_name"], env["definition_name"]
    good = shoal(engine, "submit", queue, definition, "--wait", "--", "sh", "-c", "exit 0")
    assert good.returncode == 0, good.stderr
    job_id = good.stdout.strip()
    assert describe(engine_batch, job_id)["status"] == "SUCCEEDED"
    assert f"{job_id}  SUCCEEDED" in good.stderr

    bad = shoal(engine, "submit", queue, definition, "--wait", "--", "sh", "-c", "exit 3")
    assert bad.returncode == 1, bad.stderr
    job = describe(engine_batch, bad.stdout.strip())
    assert job["status"] == "FAILED" and job["container"]["exitCode"] == 3
    assert f"{job['jobId']}  FAILED" in bad.stderr
    assert "Traceback" not in bad.stderr

    # --json with --wait: the ended job, as DescribeJobs has it.
    done = shoal(engine, "submit", queue, definition, "--wait", "--json", "--", "true")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "SUCCEEDED"
    assert doc == describe(engine_batch, doc["jobId"])


# -- jobs -----------------------------------------------------------------------------


@pytest.fixture
def listed(server: Server, batch: Any, unique: str) -> dict[str, Any]:
    """Two queues with jobs in two statuses (SUBMITTED; FAILED by CancelJob)
    and two name prefixes."""
    ce = make_ce(batch, f"{unique}-ce")
    queues = [f"{unique}-a", f"{unique}-b"]
    for q in queues:
        make_queue(batch, q, [ce])
    make_definition(batch, f"{unique}-def")

    def submit(queue: str, name: str, **kw: Any) -> str:
        job_id: str = batch.submit_job(
            jobName=name, jobQueue=queue, jobDefinition=f"{unique}-def", **kw
        )["jobId"]
        return job_id

    first = submit(queues[0], "alpha-1")
    submit(queues[0], "alpha-2", dependsOn=[{"jobId": first}])
    doomed = submit(queues[0], "beta-1")
    batch.cancel_job(jobId=doomed, reason="not wanted " + "very " * 40 + "much")
    submit(queues[1], "alpha-3")
    submit(queues[1], "beta-2")
    return {"queues": queues, "doomed": doomed}


def test_jobs_lists_newest_first_as_list_jobs(
    server: Server, batch: Any, listed: dict[str, Any]
) -> None:
    qa, qb = listed["queues"]
    every = {"filters": [{"name": "JOB_NAME", "values": ["*"]}]}
    in_a = list_all(batch, jobQueue=qa, **every)
    in_b = list_all(batch, jobQueue=qb, **every)
    assert {j["status"] for j in in_a} == {"SUBMITTED", "FAILED"}

    doc = shoal_json(server, "jobs", "--queue", qa)
    assert ids_of(doc) == [j["jobId"] for j in in_a]
    assert [{k: v for k, v in j.items() if k != "jobQueue"} for j in doc["jobSummaryList"]] == in_a
    arn = batch.describe_job_queues(jobQueues=[qa])["jobQueues"][0]["jobQueueArn"]
    assert {j["jobQueue"] for j in doc["jobSummaryList"]} == {arn}

    both = shoal_json(server, "jobs", "--queue", qa, "--queue", qb)
    merged = sorted(in_a + in_b, key=lambda j: j["createdAt"], reverse=True)
    assert ids_of(both) == [j["jobId"] for j in merged]
    assert ids_of(shoal_json(server, "jobs", "--queue", qa, "--queue", qb, "--limit", "2")) == [
        j["jobId"] for j in merged[:2]
    ]

    failed = shoal_json(server, "jobs", "--queue", qa, "--status", "FAILED")
    assert ids_of(failed) == [j["jobId"] for j in list_all(batch, jobQueue=qa, jobStatus="FAILED")]
    assert ids_of(failed) == [listed["doomed"]]
    waiting = shoal_json(
        server, "jobs", "--queue", qa, "--status", "submitted", "--status", "PENDING"
    )
    assert sorted(ids_of(waiting)) == sorted(
        j["jobId"]
        for s in ("SUBMITTED", "PENDING")
        for j in list_all(batch, jobQueue=qa, jobStatus=s)
    )

    for prefix in ("alpha", "BETA"):
        named = shoal_json(server, "jobs", "--queue", qa, "--queue", qb, "--name", prefix)
        expected = [
            j
            for q in (qa, qb)
            for j in list_all(
                batch, jobQueue=q, filters=[{"name": "JOB_NAME", "values": [f"{prefix}*"]}]
            )
        ]
        assert sorted(ids_of(named)) == sorted(j["jobId"] for j in expected)
        assert all(j["jobName"].lower().startswith(prefix.lower()) for j in named["jobSummaryList"])
    named_failed = shoal_json(server, "jobs", "--queue", qa, "--name", "beta", "--status", "FAILED")
    assert ids_of(named_failed) == [listed["doomed"]]

    # Every queue by default: these jobs are among the newest of the server's.
    everywhere = shoal_json(server, "jobs", "--limit", "0")
    assert set(ids_of(both)) <= set(ids_of(everywhere))


def test_jobs_table_fits_the_terminal(server: Server, batch: Any, listed: dict[str, Any]) -> None:
    qa, _ = listed["queues"]
    text = ok(shoal(server, "jobs", "--queue", qa, COLUMNS="140"))
    lines = text.splitlines()
    assert lines[0].split() == [
        "JOB",
        "ID",
        "NAME",
        "QUEUE",
        "STATUS",
        "CREATED",
        "STARTED",
        "STOPPED",
        "REASON",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert all(len(line) <= 140 for line in lines), lines
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {
        j["jobId"]
        for j in list_all(batch, jobQueue=qa, filters=[{"name": "JOB_NAME", "values": ["*"]}])
    }
    doomed = rows[listed["doomed"]]
    assert " FAILED " in doomed and "not wanted very" in doomed and doomed.endswith("…")
    assert re.search(r"\d+s ago", doomed)
    assert "\x1b[" not in text  # not a terminal: no colour

    # Into a pipe without COLUMNS, cells are whole.
    whole = ok(shoal(server, "jobs", "--queue", qa))
    assert "very " * 40 + "much" in whole

    # On a terminal: colours, unless NO_COLOR.
    code, seen, _ = on_terminal(server, ["jobs", "--queue", qa], "stdout")
    assert code == 0 and "\x1b[31mFAILED" in seen
    code, seen, _ = on_terminal(server, ["jobs", "--queue", qa], "stdout", NO_COLOR="1")
    assert code == 0 and "FAILED" in seen and "\x1b[" not in seen


# -- describe ----------------------------------------------------------------------------


def test_describe_shows_attempts_and_exit_codes(
    engine: Server, engine_batch: Any, unique: str
) -> None:
    env = make_env(engine_batch, unique, command=sh("exit 3"), retry={"attempts": 2})
    job_id = engine_batch.submit_job(
        jobName="flaky", jobQueue=env["queue"], jobDefinition=env["definition_name"]
    )["jobId"]
    job = wait_for(engine_batch, job_id, "FAILED")
    text = ok(shoal(engine, "describe", job_id))
    assert text.startswith(f"{job_id}  flaky")
    assert re.search(r"status:\s+FAILED", text)
    assert re.search(rf"queue:\s+{env['queue_name']}$", text, re.M)
    assert re.search(rf"definition:\s+{env['definition_name']}:1$", text, re.M)
    assert re.search(r"attempts:\s+2$", text, re.M)
    assert re.search(r"#1  exit 3 ", text) and re.search(r"#2  exit 3 ", text)
    assert job["container"]["logStreamName"] in text

    doc = shoal_json(engine, "describe", job_id)
    assert doc == {"jobs": [job]}

    array = engine_batch.submit_job(
        jobName="many",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        arrayProperties={"size": 2},
        containerOverrides={"command": ["true"]},
    )["jobId"]
    wait_for(engine_batch, array, "SUCCEEDED")
    assert re.search(r"array:\s+size 2: SUCCEEDED 2$", ok(shoal(engine, "describe", array)), re.M)

    # Several ids; an unknown one is an error after the others are shown.
    both = shoal(engine, "describe", job_id, "no-such-job")
    assert both.stdout.startswith(f"{job_id}  flaky")
    fails_cleanly(both, "Job no-such-job not found.")


# -- wait --------------------------------------------------------------------------------


def test_wait_on_an_array_draws_its_progress(
    engine: Server, engine_batch: Any, unique: str
) -> None:
    env = make_env(engine_batch, unique, command=sh("sleep 0.3"))
    array = engine_batch.submit_job(
        jobName="arr",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        arrayProperties={"size": 4},
    )["jobId"]
    result = shoal(engine, "wait", array)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{array}  SUCCEEDED"
    # Not a terminal: a line per change, the children ended only ever growing.
    bars = [BAR.search(line) for line in result.stderr.splitlines()]
    progress = [(int(m.group(1)), int(m.group(2))) for m in bars if m]
    assert progress and progress[-1] == (4, 4), result.stderr
    assert all(size == 4 for _, size in progress)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert "SUCCEEDED 4" in result.stderr.splitlines()[-1]
    assert "\r" not in result.stderr

    # The children, listed with --array, are ListJobs' arrayJobId listing.
    children = shoal_json(engine, "jobs", "--array", array)
    expected = [
        j for s in ("SUCCEEDED",) for j in list_all(engine_batch, arrayJobId=array, jobStatus=s)
    ]
    assert sorted(ids_of(children)) == sorted(j["jobId"] for j in expected)
    assert sorted(ids_of(children)) == [f"{array}:{i}" for i in range(4)]


def test_wait_redraws_in_place_on_a_terminal(
    engine: Server, engine_batch: Any, unique: str, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    env = make_env(engine_batch, unique, command=sh(f"until [ -e {gate} ]; do sleep 0.05; done"))
    array = engine_batch.submit_job(
        jobName="arr",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        arrayProperties={"size": 3},
    )["jobId"]
    # The children are let go once the bar shows all three running.
    code, seen, out = on_terminal(
        engine, ["wait", array], "stderr", columns=150, when=("0/3  RUNNING 3", gate.touch)
    )
    assert code == 0, seen
    assert out.strip() == f"{array}  SUCCEEDED"
    # Bars while it runs are redrawn on one line (\r, no newline); the last
    # bar, 3/3, is a line of its own that starts over that one.
    lines = seen.replace("\r\n", "\n").split("\n")
    redrawn = next(line for line in lines if "0/3  RUNNING 3" in line)
    assert "3/3" in redrawn
    draws = redrawn.split("\r")
    assert any(d.startswith(f"{array}  [....") and "0/3  RUNNING 3" in d for d in draws)
    assert draws[-1].startswith(f"{array}  [####") and "3/3  SUCCEEDED 3" in draws[-1]


def test_wait_exit_status(
    server: Server, batch: Any, engine: Server, engine_batch: Any, unique: str
) -> None:
    env = make_env(engine_batch, unique)

    def run(command: str) -> str:
        job_id: str = engine_batch.submit_job(
            jobName="j",
            jobQueue=env["queue"],
            jobDefinition=env["definition_name"],
            containerOverrides={"command": sh(command)},
        )["jobId"]
        return job_id

    good, bad = run("exit 0"), run("exit 1")
    assert shoal(engine, "wait", good).returncode == 0
    both = shoal(engine, "wait", good, bad)
    assert both.returncode == 1
    assert f"{good}  SUCCEEDED" in both.stdout
    assert f"{bad}  FAILED" in both.stdout
    quiet = shoal(engine, "wait", "--quiet", good, bad)
    assert quiet.returncode == 1 and quiet.stdout == "" and quiet.stderr == ""

    # Never ends (no engine): --timeout gives up, exit 1, one line.
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, f"{unique}-q", [ce])
    make_definition(batch, f"{unique}-def")
    stuck = batch.submit_job(jobName="s", jobQueue=f"{unique}-q", jobDefinition=f"{unique}-def")
    started = time.monotonic()
    result = shoal(server, "wait", stuck["jobId"], "--timeout", "1", "--quiet")
    assert time.monotonic() - started >= 1
    fails_cleanly(result, "timed out after 1 s")
    assert stuck["jobId"] in result.stderr

    fails_cleanly(shoal(server, "wait", "no-such-job"), "Job no-such-job not found.")


# -- cancel / terminate ---------------------------------------------------------------------


def test_cancel_and_terminate_take_effect(
    server: Server, batch: Any, engine: Server, engine_batch: Any, unique: str
) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, f"{unique}-q", [ce])
    make_definition(batch, f"{unique}-def")
    ids = [
        batch.submit_job(jobName=f"j{i}", jobQueue=f"{unique}-q", jobDefinition=f"{unique}-def")[
            "jobId"
        ]
        for i in range(3)
    ]
    result = shoal(server, "cancel", ids[0], "no-such-job", ids[1], "--reason", "changed my mind")
    fails_cleanly(result, "Job no-such-job not found.")
    for job_id in ids[:2]:
        job = describe(batch, job_id)
        assert (job["status"], job["statusReason"]) == ("FAILED", "changed my mind")
        assert f"{job_id}  FAILED  changed my mind" in result.stdout
    assert describe(batch, ids[2])["status"] == "SUBMITTED"
    out = ok(shoal(server, "terminate", ids[2], "--reason", "enough"))
    assert out.strip() == f"{ids[2]}  FAILED  enough"
    assert describe(batch, ids[2])["statusReason"] == "enough"

    # A running job: CancelJob leaves it be (and says so), TerminateJob stops it.
    env = make_env(engine_batch, unique)
    running = engine_batch.submit_job(
        jobName="long",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        containerOverrides={"command": ["sleep", "30"]},
    )["jobId"]
    wait_for(engine_batch, running, "RUNNING")
    out = ok(shoal(engine, "cancel", running, "--reason", "please"))
    assert "RUNNING" in out and "shoal terminate" in out
    assert describe(engine_batch, running)["status"] == "RUNNING"
    ok(shoal(engine, "terminate", running, "--reason", "now"))
    job = wait_for(engine_batch, running, "FAILED")
    assert job["statusReason"] == "now" and job.get("isTerminated") is True

    fails_cleanly(shoal(server, "terminate", "no-such-job", "--reason", "x"), "not found")


# -- errors --------------------------------------------------------------------------------


def test_errors_are_the_servers_message_on_one_line(
    server: Server, batch: Any, unique: str
) -> None:
    make_definition(batch, f"{unique}-def")
    message = client_error(
        batch.submit_job, jobName="x", jobQueue="no-such-queue", jobDefinition=f"{unique}-def"
    )
    fails_cleanly(shoal(server, "submit", "no-such-queue", f"{unique}-def"), message)
    fails_cleanly(shoal(server, "jobs", "--queue", "no-such-queue"), "no-such-queue not found")
    fails_cleanly(shoal(server, "describe", "no-such-job"), "Job no-such-job not found.")
    fails_cleanly(shoal(server, "jobs", "--array", "no-such-job"), "Job no-such-job not found.")
    fails_cleanly(shoal(server, "logs", "no-such-job"), "Job no-such-job not found.")


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "q", "def"],
        ["jobs"],
        ["describe", "x"],
        ["wait", "x"],
        ["cancel", "x", "--reason", "r"],
        ["terminate", "x", "--reason", "r"],
        ["queues"],
        ["envs"],
        ["defs"],
        ["logs", "x"],
    ],
)
def test_no_server_listening(tmp_path: Path, args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "shoal", *args, "--endpoint-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env("http://127.0.0.1:1"),
    )
    fails_cleanly(result, f"cannot reach the shoal server at {url}")


# -- queues, envs, defs --------------------------------------------------------------------


def test_queues_envs_defs(server: Server, batch: Any, unique: str) -> None:
    first = make_ce(batch, f"{unique}-one", tags={"shoal:executor": "process"})
    second = make_ce(batch, f"{unique}-two", kind="SPOT", max_vcpus=4)
    queue = f"{unique}-q"
    make_queue(batch, queue, [second, first], priority=7)
    for revision in range(3):
        batch.register_job_definition(
            jobDefinitionName=f"{unique}-def",
            type="container",
            retryStrategy={"attempts": 2 + revision},
            timeout={"attemptDurationSeconds": 90},
            containerProperties={
                "image": f"busybox:{revision}",
                "command": ["true"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "0.5"},
                    {"type": "MEMORY", "value": "512"},
                ],
            },
        )
    batch.deregister_job_definition(jobDefinition=f"{unique}-def:3")
    jobs = [
        batch.submit_job(jobName="j", jobQueue=queue, jobDefinition=f"{unique}-def:2")["jobId"]
        for _ in range(3)
    ]
    batch.cancel_job(jobId=jobs[0], reason="no")

    # queues
    doc = shoal_json(server, "queues")
    mine = {q["jobQueueName"]: q for q in doc["jobQueues"]}[queue]
    described = batch.describe_job_queues(jobQueues=[queue])["jobQueues"][0]
    assert {k: v for k, v in mine.items() if k != "jobCounts"} == described
    assert mine["jobCounts"] == {
        "SUBMITTED": 2,
        "PENDING": 0,
        "RUNNABLE": 0,
        "STARTING": 0,
        "RUNNING": 0,
        "SUCCEEDED": 0,
        "FAILED": 1,
    }
    bare = shoal_json(server, "queues", "--no-counts")
    assert all("jobCounts" not in q for q in bare["jobQueues"])
    row = next(line for line in ok(shoal(server, "queues")).splitlines() if line.startswith(queue))
    assert row.split()[:4] == [queue, "ENABLED", "VALID", "7"]
    assert f"{unique}-two, {unique}-one" in row
    assert "SUBMITTED 2, FAILED 1" in row

    # envs
    envs = shoal_json(server, "envs")["computeEnvironments"]
    by_name = {ce["computeEnvironmentName"]: ce for ce in envs}
    for name in (f"{unique}-one", f"{unique}-two"):
        assert (
            by_name[name]
            == batch.describe_compute_environments(computeEnvironments=[name])[
                "computeEnvironments"
            ][0]
        )
    table = ok(shoal(server, "envs")).splitlines()
    assert table[0].split() == [
        "NAME",
        "TYPE",
        "RESOURCES",
        "STATE",
        "STATUS",
        "MAX",
        "VCPUS",
        "EXECUTOR",
    ]
    rows = {line.split()[0]: line.split() for line in table[2:]}
    assert rows[f"{unique}-one"] == [
        f"{unique}-one",
        "MANAGED",
        "EC2",
        "ENABLED",
        "VALID",
        "16",
        "process",
    ]
    assert rows[f"{unique}-two"] == [
        f"{unique}-two",
        "MANAGED",
        "SPOT",
        "ENABLED",
        "VALID",
        "4",
        "default",
    ]

    # defs: the latest ACTIVE revision; --all: every revision.
    latest = [
        d
        for d in shoal_json(server, "defs")["jobDefinitions"]
        if d["jobDefinitionName"] == f"{unique}-def"
    ]
    assert (
        latest
        == batch.describe_job_definitions(jobDefinitions=[f"{unique}-def:2"])["jobDefinitions"]
    )
    every = [
        d
        for d in shoal_json(server, "defs", "--all")["jobDefinitions"]
        if d["jobDefinitionName"] == f"{unique}-def"
    ]
    assert [(d["revision"], d["status"]) for d in every] == [
        (1, "ACTIVE"),
        (2, "ACTIVE"),
        (3, "INACTIVE"),
    ]
    row = next(line for line in ok(shoal(server, "defs")).splitlines() if line.startswith(unique))
    assert row.split() == [
        f"{unique}-def:2",
        "container",
        "busybox:1",
        "0.5",
        "512",
        "MiB",
        "3",
        "90s",
    ]
    rows = [
        line.split()
        for line in ok(shoal(server, "defs", "--all")).splitlines()
        if line.startswith(unique)
    ]
    assert [(r[0], r[-1]) for r in rows] == [
        (f"{unique}-def:1", "ACTIVE"),
        (f"{unique}-def:2", "ACTIVE"),
        (f"{unique}-def:3", "INACTIVE"),
    ]


def test_completion_script(server: Server) -> None:
    bash = ok(shoal(server, "completion", "bash"))
    assert "_SHOAL_COMPLETE=bash_complete" in bash and "complete " in bash
    assert "_SHOAL_COMPLETE=zsh_complete" in ok(shoal(server, "completion", "zsh"))
    assert "_SHOAL_COMPLETE=fish_complete" in ok(shoal(server, "completion", "fish"))
    # The script's callback answers from the commands themselves.
    answer = subprocess.run(
        [str(Path(sys.executable).parent / "shoal")],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(
            server.url, _SHOAL_COMPLETE="bash_complete", COMP_WORDS="shoal su", COMP_CWORD="1"
        ),
    )
    assert "plain,submit" in answer.stdout.splitlines()
