"""Batches on the ray executor, on a real three-node Ray cluster on loopback.

While a shape's attempts run short, the dispatcher's runners (streaming
tasks holding one attempt's resources, `run_runner`) take them a few at a
time and run them one after another, their results going with the call for
the next few. These tests drive a batch task (`run_batch`, which runs its
attempts as a runner does), a dispatcher of their own directly from this
process (a Ray driver for the module), and a stream of jobs through a shoal
server."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server
from engine_support import (
    job_log,
    read_pid,
    sh,
    shutdown,
    start_engine_server,
    wait_gone,
    wait_until,
)
from ray_support import HEAD_IP, RayCluster, in_ray_group, needs_ray, ray_cluster  # noqa: F401
from test_ray_executor import cluster, lose_node_of, ray_queue  # noqa: F401  (a fixture)

pytestmark = [needs_ray, in_ray_group]

ENV = {"PATH": "/usr/bin:/bin"}
NAMESPACE = "shoal-test-batches"
# run_attempt looks its dispatcher up only for a job that prints or runs past
# 50 ms, and carries on when there is none.
NOBODY = ("no-such-dispatcher", NAMESPACE, "none")


@pytest.fixture(scope="module")
def ray(ray_cluster: RayCluster) -> Iterator[Any]:  # noqa: F811
    import ray as ray_module

    from shoal.executors import cgroups, ray_remote, which

    for module in (ray_remote, cgroups, which):
        ray_module.cloudpickle.register_pickle_by_value(module)
    ray_module.init(
        address=ray_cluster.address,
        _node_ip_address=HEAD_IP,
        namespace=NAMESPACE,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    yield ray_module
    ray_module.shutdown()


def attempt(command: list[str]) -> dict[str, Any]:
    return {"command": command, "environment": ENV, "num_cpus": 1, "num_gpus": 0}


def dispatcher(ray: Any) -> Any:
    """A dispatcher of this driver's, on the head node (which tests never
    lose). Its attempts run "short" under a second, not 50 ms: a machine
    loaded by the rest of the suite may take longer than 50 ms for `true`."""
    from shoal.executors import ray_remote

    handle = (
        ray.remote(ray_remote.Dispatcher)
        .options(
            name=f"test-{uuid.uuid4().hex[:8]}",
            namespace=ray_remote.NAMESPACE,
            num_cpus=0,
            max_concurrency=1000,
            resources={f"node:{HEAD_IP}": 0.001},
        )
        .remote(1000.0)
    )
    ray.get(handle.identity.remote())
    return handle


def run_all(ray: Any, d: Any, requests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Submit, then poll until every attempt has ended: their exits."""
    ray.get(d.submit.remote(requests))
    return collect(ray, d, [task for task, _ in requests])


def collect(ray: Any, d: Any, tasks: list[str]) -> dict[str, Any]:
    exits: dict[str, Any] = {}
    interest = {task: [0, False] for task in tasks}
    deadline = time.monotonic() + 120
    while interest:
        assert time.monotonic() < deadline, f"no exit for {sorted(interest)[:3]}"
        news = ray.get(d.poll.remote(interest, 1.0))
        for task, item in news.items():
            if "exit" in item:
                exits[task] = item["exit"]
                del interest[task]
            elif "info" in item:
                interest[task][1] = True
    return exits


def batch_task(ray: Any) -> Any:
    """`run_batch` as a task of this driver's (not a dispatcher's)."""
    from shoal.executors import ray_remote

    return ray.remote(ray_remote.run_batch).options(
        num_returns="streaming", num_cpus=1, max_retries=0
    )


def primed_dispatcher(ray: Any) -> Any:
    """A dispatcher that batches: one whose attempts of the shape have run
    short (see `dispatcher`) once they have run at all."""
    d = dispatcher(ray)
    deadline = time.monotonic() + 120
    while not ray.get(d.counts.remote()).get("batches"):
        assert time.monotonic() < deadline, "no batch of quick attempts"
        run_all(ray, d, [(uuid.uuid4().hex, attempt(["true"])) for _ in range(12)])
    return d


def test_a_batch_sends_a_result_before_a_long_attempt_ends_and_starts_none_past_its_span(
    ray: Any, tmp_path: Path
) -> None:
    batch = batch_task(ray)
    late = tmp_path / "late"
    commands = [
        ["sh", "-c", "exit 3"],
        ["sleep", "0.8"],
        ["touch", str(late)],  # due after the batch's span
    ]
    # Task ids are unique, as shoal's are: each names its working directory.
    attempts = [(uuid.uuid4().hex, command, ENV, None) for command in commands]
    arrivals: list[tuple[float, list[tuple[str, dict[str, Any]]]]] = []
    for ref in batch.remote(NOBODY, attempts):
        arrivals.append((time.monotonic(), ray.get(ref)))
    # Each result names its attempt.
    assert [[(t, r["code"]) for t, r in results] for _, results in arrivals] == [
        [(attempts[0][0], 3)],
        [(attempts[1][0], 0)],
    ]
    quick, long = arrivals[0][1][0][1], arrivals[1][1][0][1]
    assert long["ended_at"] - long["at"] >= 800
    # The quick one's result came while the long one ran, not with it.
    assert arrivals[1][0] - arrivals[0][0] >= 0.5
    assert quick["ended_at"] <= long["at"]
    # The batch ended without starting the attempt past its span: the
    # dispatcher, which had no result for it, submits it again.
    assert not late.exists()


def test_a_batch_cancelled_while_its_attempt_runs_takes_the_job_with_it(
    ray: Any, tmp_path: Path
) -> None:
    # A stop before the attempt has said where it runs cancels its task;
    # Ray then interrupts the task, and the job must not run on unwatched.
    batch = batch_task(ray)
    pid_file = tmp_path / "pid"
    held = sh(f"echo $$ > {pid_file}; exec sleep 60")
    results = batch.remote(NOBODY, [(uuid.uuid4().hex, held, ENV, None)])
    pid = read_pid(pid_file, timeout=60)
    ray.cancel(results, force=False)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        for ref in results:
            ray.get(ref)
    wait_gone(pid, timeout=30)


def test_a_dispatcher_batches_short_attempts_runs_each_once_and_resubmits_those_not_started(
    ray: Any, tmp_path: Path
) -> None:
    d = primed_dispatcher(ray)
    before = ray.get(d.counts.remote())
    # Twelve at once, on four CPUs: four runners take a share each, so the
    # first takes three (12 / 4): a long attempt, then two that its batch
    # will not start, being past its span by then.
    marks = [tmp_path / f"ran-{i}" for i in range(12)]
    requests = [
        (f"a{i}", attempt(sh(f"{'sleep 0.8; ' if i == 0 else ''}echo ran >> {mark}")))
        for i, mark in enumerate(marks)
    ]
    exits = run_all(ray, d, requests)
    assert {task: e.get("code") for task, e in exits.items()} == {t: 0 for t, _ in requests}, exits
    # Each ran once, those its batch did not start included.
    assert [m.read_text() for m in marks] == ["ran\n"] * 12
    after = ray.get(d.counts.remote())
    assert after["batches"] > before["batches"], (before, after)
    assert after.get("again", 0) - before.get("again", 0) >= 2, (before, after)


def test_a_stopped_attempt_still_waiting_in_the_dispatcher_never_runs(
    ray: Any, tmp_path: Path
) -> None:
    d = primed_dispatcher(ray)
    # A hundred at once, on four CPUs. Each of four runners takes eight, and
    # at once asks for its next eight (to run after them), which comes back
    # before the stop below may; so the last is taken no sooner than with a
    # fourth share, once a runner has run two shares of 50 ms jobs (0.8 s).
    last = 99
    marks = [tmp_path / f"ran-{i}" for i in range(last + 1)]
    requests = [(f"s{i}", attempt(sh(f"sleep 0.05; touch {mark}"))) for i, mark in enumerate(marks)]
    ray.get(d.submit.remote(requests))
    ray.get(d.stop.remote(f"s{last}", 1.0))
    exits = collect(ray, d, [task for task, _ in requests])
    assert exits[f"s{last}"] == {"cancelled": True}
    assert not marks[last].exists()
    assert all(exits[f"s{i}"].get("code") == 0 for i in range(last)), exits
    assert all(mark.exists() for mark in marks[:last])


def test_runners_free_their_resources_once_they_have_nothing_to_run(ray: Any) -> None:
    d = primed_dispatcher(ray)
    before = ray.get(d.counts.remote())
    exits = run_all(ray, d, [(uuid.uuid4().hex, attempt(["true"])) for _ in range(40)])
    assert all(e.get("code") == 0 for e in exits.values()), exits
    after = ray.get(d.counts.remote())
    # They ran in runners (no task of their own), which then ended: the
    # cluster's four CPUs are all free again.
    assert after.get("tasks", 0) == before.get("tasks", 0), (before, after)
    assert after["batched"] > before["batched"], (before, after)
    # Results came with the runners' calls for more work, not only on their own.
    assert after.get("reported", 0) > before.get("reported", 0), (before, after)
    wait_until(
        lambda: ray.available_resources().get("CPU") == 4.0,
        timeout=30,
        what="the runners to end",
    )


def test_a_few_slow_attempts_among_short_ones_leave_the_shape_in_runners(ray: Any) -> None:
    # Whether a shape runs short is the median of its last attempts' run
    # times: three slow ones, the last to end, among twelve quick ones (as a
    # loaded node makes of a few `true`s) do not send the next stream to
    # tasks of their own. (A moving average weighted to the newest, as
    # before, put the shape at over a second: long.)
    d = dispatcher(ray)  # short: under a second
    slow = [(uuid.uuid4().hex, attempt(["sleep", "2.5"])) for _ in range(3)]
    quick = [(uuid.uuid4().hex, attempt(["true"])) for _ in range(12)]
    first = run_all(ray, d, slow + quick)  # tasks: no run time known yet
    assert all(e.get("code") == 0 for e in first.values()), first
    before = ray.get(d.counts.remote())
    exits = run_all(ray, d, [(uuid.uuid4().hex, attempt(["true"])) for _ in range(20)])
    assert all(e.get("code") == 0 for e in exits.values()), exits
    after = ray.get(d.counts.remote())
    assert after.get("tasks", 0) == before.get("tasks", 0) == 15, (before, after)
    assert after.get("runners", 0) > before.get("runners", 0), (before, after)


def test_attempts_go_in_tasks_of_their_own_when_a_runner_fails_before_taking_any(
    ray: Any,
) -> None:
    # A dispatcher without a name: its runners cannot look it up, and fail
    # before they take anything. Its attempts must still run (each in a task
    # of its own, which needs no dispatcher for a quick job), not wait for
    # runners that fail again and again.
    from shoal.executors import ray_remote

    d = (
        ray.remote(ray_remote.Dispatcher)
        .options(num_cpus=0, max_concurrency=1000, resources={f"node:{HEAD_IP}": 0.001})
        .remote(1000.0)
    )
    first = run_all(ray, d, [(uuid.uuid4().hex, attempt(["true"])) for _ in range(4)])
    assert all(e.get("code") == 0 for e in first.values()), first  # tasks: no run time known yet
    exits = run_all(ray, d, [(uuid.uuid4().hex, attempt(["true"])) for _ in range(12)])
    assert all(e.get("code") == 0 for e in exits.values()), exits
    counts = ray.get(d.counts.remote())
    assert counts.get("runner_failures", 0) >= 1, counts
    assert counts["tasks"] == 16, counts
    # Nor are runners started again for a while: the next go in tasks too.
    exits = run_all(ray, d, [(uuid.uuid4().hex, attempt(["true"])) for _ in range(8)])
    assert all(e.get("code") == 0 for e in exits.values()), exits
    after = ray.get(d.counts.remote())
    assert after["tasks"] == 24 and after["runners"] == counts["runners"], (counts, after)


def test_an_attempt_a_runner_took_ends_as_a_lost_host_when_its_node_dies(
    ray: Any,
    cluster: RayCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    d = primed_dispatcher(ray)
    before = ray.get(d.counts.remote())
    pid_file, gate = tmp_path / "pid", tmp_path / "go"
    held = sh(f"echo $$ > {pid_file}; until [ -e {gate} ]; do sleep 0.05; done")
    task = uuid.uuid4().hex  # unique, as shoal's are: it names the working directory
    ray.get(d.submit.remote([(task, attempt(held))]))
    pid = read_pid(pid_file, timeout=60)
    after = ray.get(d.counts.remote())
    assert after.get("tasks", 0) == before.get("tasks", 0), (before, after)  # in a runner
    ip = lose_node_of(cluster, pid)
    wait_gone(pid, timeout=30)  # no orphan
    exits = collect(ray, d, [task])
    assert set(exits[task]) == {"node_lost"}, exits
    assert ip in ("127.0.0.3", "127.0.0.4")


def test_a_stopped_attempt_still_waiting_in_ray_never_runs(ray: Any, tmp_path: Path) -> None:
    # Long attempts go to Ray one per task as they come; those beyond the
    # cluster's four CPUs wait in Ray's queue, where a stop cancels them.
    d = dispatcher(ray)
    gate = tmp_path / "go"
    marks = [tmp_path / f"ran-{i}" for i in range(6)]
    requests = [
        (f"w{i}", attempt(sh(f"echo ran > {mark}; until [ -e {gate} ]; do sleep 0.05; done")))
        for i, mark in enumerate(marks)
    ]
    ray.get(d.submit.remote(requests))
    wait_until(lambda: sum(m.exists() for m in marks) == 4 or None, timeout=60, what="4 running")
    waiting = next(f"w{i}" for i, mark in enumerate(marks) if not mark.exists())
    ray.get(d.stop.remote(waiting, 1.0))
    gate.touch()
    exits = collect(ray, d, [task for task, _ in requests])
    assert exits[waiting] == {"cancelled": True}
    assert sum(m.exists() for m in marks) == 5  # the stopped one never ran
    assert all(e.get("code") == 0 for task, e in exits.items() if task != waiting), exits


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_engine_server(tmp_path_factory.mktemp("ray-batches"))
    yield srv
    shutdown(srv)


def test_a_stream_of_short_jobs_runs_in_batches_each_job_once_with_its_own_result(
    ray: Any,
    server: Server,
    ray_cluster: RayCluster,  # noqa: F811
) -> None:
    batch = server.client("batch")
    logs = server.client("logs")
    env = ray_queue(batch, ray_cluster.address, managed_vcpus=None)
    # A stream arrives faster than the cluster ends jobs, so a queue builds up
    # in the dispatcher; submitted one by one from here, the jobs might not
    # (under load each submit may take longer than a job). So: hold them in
    # RUNNABLE behind a disabled compute environment, then let them all go.
    batch.update_compute_environment(computeEnvironment=env["queue"], state="DISABLED")
    jobs = {}
    for n in range(80):
        jobs[n] = batch.submit_job(
            jobName=f"short-{n}",
            jobQueue=env["queue"],
            jobDefinition=env["definition"],
            containerOverrides={
                "command": sh('echo "job $N"; exit $((N % 3))'),
                "environment": [{"name": "N", "value": str(n)}],
            },
        )["jobId"]

    def described() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        ids = list(jobs.values())
        for i in range(0, len(ids), 100):
            found += batch.describe_jobs(jobs=ids[i : i + 100])["jobs"]
        return found

    def held() -> bool:
        return all(j["status"] == "RUNNABLE" for j in described())

    wait_until(held, timeout=60, what="jobs to be RUNNABLE")
    batch.update_compute_environment(computeEnvironment=env["queue"], state="ENABLED")

    def finished() -> list[dict[str, Any]] | None:
        found = described()
        done = all(j["status"] in ("SUCCEEDED", "FAILED") for j in found)
        return found if done else None

    details = {d["jobId"]: d for d in wait_until(finished, timeout=180, what="jobs to end")}
    for n, job_id in jobs.items():
        detail = details[job_id]
        assert detail["status"] == ("SUCCEEDED" if n % 3 == 0 else "FAILED"), detail
        assert len(detail["attempts"]) == 1
        assert detail["container"]["exitCode"] == n % 3
        assert job_log(logs, detail) == [f"job {n}"]
    # Through the server's own dispatcher (one per store, named for it).
    installation = hashlib.sha1(str(server.data_dir.resolve()).encode()).hexdigest()[:12]
    from shoal.executors import ray_remote

    name = f"shoal-dispatcher-{installation}-v{ray_remote.PROTOCOL}"
    counts = ray.get(ray.get_actor(name, namespace=ray_remote.NAMESPACE).counts.remote())
    assert counts.get("batched", 0) > 0, counts


def test_a_runner_busy_with_its_share_waits_for_a_full_share_rather_than_take_one(
    ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner asks for its next share as it starts its last: while fewer
    than a share wait, the call waits for more rather than come back with the
    one or two there are (each call costs about as much as a job like
    `true`). This test is the runner, calling the dispatcher's `take` as a
    runner does, on a dispatcher made in this process."""
    from shoal.executors import ray_remote

    # Bounded by arrivals alone here (a runner's own wait is bounded by the
    # time its share should take); the second part has the real bounds.
    monkeypatch.setattr(ray_remote, "_FILL_PART", 1e6)
    monkeypatch.setattr(ray_remote, "_FILL_MOST", 600.0)

    async def scenario() -> None:
        d = ray_remote.Dispatcher(1000.0)
        request = attempt(["true"])
        shape = ray_remote._shape(request)
        d.running[shape] = 1000  # as many runners as it wants: it starts none
        d.run_ms[shape] = collections.deque([1.0] * 5)  # a share is 8 of them (at most)
        runner = ray_remote._Runner(shape)
        d.runners[runner.id] = runner
        await d.submit([(f"first-{n}", request) for n in range(3)])
        # Idle, it takes what there is.
        assert len(await d.take(runner.id, None, [])) == 3
        # Busy with those three, its call for more waits for a full share.
        asking = asyncio.ensure_future(d.take(runner.id, None, []))
        await d.submit([("second-0", request)])
        # Turns of the loop for the call to answer in: without the wait it
        # would at the first, with the one attempt queued.
        for _ in range(50):
            await asyncio.sleep(0)
        assert not asking.done()
        await d.submit([(f"second-{n}", request) for n in range(1, 8)])
        share = await asyncio.wait_for(asking, 30)
        assert [a[0] for a in share] == [f"second-{n}" for n in range(8)]
        # With the real bounds, a call that no share fills comes back with
        # what there is once the runner's share should be half done.
        monkeypatch.undo()
        await d.submit([("third-0", request)])
        again = await asyncio.wait_for(d.take(runner.id, None, []), 30)
        assert [a[0] for a in again] == ["third-0"]

    asyncio.run(scenario())


def test_a_runner_channel_answers_only_a_runner_with_the_dispatcher_token(ray: Any) -> None:
    """Runners talk to the dispatcher over a socket of their own: a peer
    that does not say the dispatcher's token is cut off, unanswered, and
    takes nothing; a runner that does gets its share, and the results it
    sends on its own and with its `end` are recorded before `end` is
    answered. This test is the runner, on a dispatcher made in this process."""
    import msgpack  # type: ignore[import-untyped]

    from shoal.executors import ray_remote

    async def send(writer: asyncio.StreamWriter, message: Any) -> None:
        data = msgpack.packb(message)
        writer.write(len(data).to_bytes(4, "big") + data)
        await writer.drain()

    async def receive(reader: asyncio.StreamReader) -> Any:
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 30), "big")
        return msgpack.unpackb(await asyncio.wait_for(reader.readexactly(size), 30))

    async def scenario() -> None:
        d = ray_remote.Dispatcher(1000.0)
        request = attempt(["true"])
        shape = ray_remote._shape(request)
        d.running[shape] = 1000  # as many runners as it wants: it starts none
        d.run_ms[shape] = collections.deque([1.0] * 5)  # short: queued for runners
        runner = ray_remote._Runner(shape)
        d.runners[runner.id] = runner
        await d.submit([(f"a-{n}", request) for n in range(3)])
        host, port, token = await d.channel()

        # A stranger, with the id of a real runner but not the token.
        reader, writer = await asyncio.open_connection(host, port)
        await send(writer, ["runner", "not-the-token", runner.id])
        await send(writer, ["take", None, []])
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed, unanswered
        writer.close()
        assert len(d.queued[shape]) == 3 and not runner.taken and not runner.connected

        reader, writer = await asyncio.open_connection(host, port)
        await send(writer, ["runner", token, runner.id])
        await send(writer, ["take", {"node": "n", "ip": host}, []])
        share = await receive(reader)
        assert [a[0] for a in share] == ["a-0", "a-1", "a-2"]
        assert set(runner.taken) == {"a-0", "a-1", "a-2"}
        assert runner.where == {"node": "n", "ip": host}
        ended = {"node": "n", "ip": host, "code": 0, "oom": False, "at": 1, "ended_at": 2}
        await send(writer, ["results", [["a-0", ended]]])
        await send(writer, ["end", [["a-1", ended], ["a-2", dict(ended, code=3)]]])
        assert await receive(reader) == []
        assert not runner.taken
        assert {t: d.runs[t].exit["code"] for t in ("a-0", "a-1", "a-2")} == {  # type: ignore[index]
            "a-0": 0,
            "a-1": 0,
            "a-2": 3,
        }
        writer.close()
        await asyncio.wait_for(runner.closed.wait(), 30)

    asyncio.run(scenario())


def test_results_a_runner_sent_before_it_failed_are_recorded_before_its_rest_is_lost(
    ray: Any,
) -> None:
    """A runner's results come over its channel, its failure through Ray:
    the failure can arrive first. The dispatcher waits for the channel to
    close (as a dead process's does) before it ends what the runner had
    not reported, so an attempt that ran is recorded as run. This test is
    the runner, and plays Ray's part with a future."""
    import msgpack

    from shoal.executors import ray_remote

    async def scenario() -> None:
        d = ray_remote.Dispatcher(1000.0)
        request = attempt(["true"])
        shape = ray_remote._shape(request)
        d.running[shape] = 1000  # it starts no runner of its own
        d.run_ms[shape] = collections.deque([1.0] * 5)
        runner = ray_remote._Runner(shape)
        d.runners[runner.id] = runner
        await d.submit([("ran", request), ("unreported", request)])
        host, port, token = await d.channel()
        reader, writer = await asyncio.open_connection(host, port)
        for message in (["runner", token, runner.id], ["take", {"node": "gone", "ip": host}, []]):
            data = msgpack.packb(message)
            writer.write(len(data).to_bytes(4, "big") + data)
        await asyncio.wait_for(reader.readexactly(4), 30)  # its share is on its way
        ended = asyncio.get_running_loop().create_future()
        following = asyncio.ensure_future(d._follow_batch(runner.taken, ended, shape, runner))
        result = {"node": "gone", "ip": host, "code": 0, "oom": False, "at": 1, "ended_at": 2}
        data = msgpack.packb(["results", [["ran", result]]])
        writer.write(len(data).to_bytes(4, "big") + data)
        ended.set_exception(RuntimeError("the runner's worker died"))
        writer.close()
        await asyncio.wait_for(following, 30)
        assert d.runs["ran"].exit == result
        assert d.runs["unreported"].exit == {"node_lost": "gone"}

    asyncio.run(scenario())


def test_a_broken_link_to_the_dispatcher_loses_no_launch_and_a_dead_dispatcher_ends_the_poll(
    ray: Any, tmp_path: Path
) -> None:
    """The engine polls its dispatcher over a socket (`_Link`). A link that
    breaks while the dispatcher lives loses nothing: the launches and
    forgets of the poll it broke on go with the next, on a new link. Once
    the dispatcher is gone, a poll raises, as a Ray call to it does."""
    from shoal.executors.ray import RayExecutor
    from shoal.logs.store import LogStore

    d = dispatcher(ray)
    executor = RayExecutor(
        LogStore(tmp_path / "logs"), state_dir=tmp_path / "state", installation="test"
    )
    task = uuid.uuid4().hex

    async def scenario() -> None:
        link = await executor._link_to(d)
        assert link is not None
        # A poll that fails there is an error here, as a Ray call's is (the
        # engine takes the dispatcher for lost); the link still serves.
        with pytest.raises(RuntimeError, match="KeyError"):
            await link.poll({}, 1.0, [("malformed", {"command": ["true"]})], [])
        assert await link.poll({}, 0.0, [], []) == {}
        link._writer.transport.abort()  # as a connection reset is
        news = await executor._poll_on(link, d, {}, [(task, attempt(["true"]))], ["old"])
        assert news == {}
        assert [t for t, _ in executor._launches] == [task] and executor._forgotten == ["old"]
        again = await executor._link_to(d)
        assert again is not None and again is not link
        launches, executor._launches = executor._launches, []
        interest = {task: [0, False]}
        deadline = time.monotonic() + 120
        while "exit" not in (news := await executor._poll_on(again, d, interest, launches, [])).get(
            task, {}
        ):
            assert time.monotonic() < deadline, news
            launches = []
            if "info" in news.get(task, {}):
                interest[task][1] = True
        assert news[task]["exit"]["code"] == 0
        ray.kill(d)
        deadline = time.monotonic() + 60
        with pytest.raises(ray.exceptions.RayActorError):
            while time.monotonic() < deadline:  # (until the kill has landed)
                await executor._poll_on(again, d, {}, [], [])

    asyncio.run(scenario())


def test_a_poll_carries_output_up_to_a_bound_and_the_rest_in_the_next(
    ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A poll's news is one message: however much output waits, it carries
    # that of attempts up to _NEWS_BYTES (always all of the first's), and
    # the next poll, after the engine has stored it, the rest.
    from shoal.executors import ray_remote

    monkeypatch.setattr(ray_remote, "_NEWS_BYTES", 100)

    async def scenario() -> None:
        d = ray_remote.Dispatcher(1000.0)
        for task in ("a", "b", "c"):
            run = d.runs[task] = ray_remote._Run()
            await d.output(task, [(1, "x" * 64)])  # 80 bytes held, by its count
            assert run.held == 80
        first = d._news({task: [0, True] for task in ("a", "b", "c")})
        assert sorted(first) == ["a", "b"]  # 80 bytes, then 160: no room for c's
        assert d._news({"a": [1, True], "b": [1, True], "c": [0, True]}) == {
            "c": {"chunks": [(1, [(1, "x" * 64)])]}
        }

    asyncio.run(scenario())


WORKER = """
import pickle, sys
sizes = [int(n) for n in sys.argv[1:]]
data = sys.stdin.buffer.read()
plain = pickle.loads(data[: sizes[0]])
batch = pickle.loads(data[sizes[0] : sizes[0] + sizes[1]])
again = pickle.loads(data[sizes[0] + sizes[1] :])
a, b, c = plain.__globals__, batch.__globals__["run_attempt"].__globals__, again.__globals__
watchdog, cgroups, runner = a["_Watchdog"].get(), a["_cgroups"](), batch.__globals__["_runner"]()
print(b["_Watchdog"].get() is watchdog, b["_cgroups"]() is cgroups, c["_runner"]() is runner)
"""


def test_a_worker_keeps_one_watchdog_and_one_set_of_cgroups_whatever_it_unpickles(
    tmp_path: Path,
) -> None:
    # A Ray worker unpickles each of the module's functions it runs (shipped
    # by value), and each unpickling sets the module's classes back to their
    # pickled state: state kept there would be dropped, and a worker running
    # plain tasks and batches would start a second watchdog while the first,
    # orphaned, killed its jobs.
    import subprocess
    import sys

    import ray as ray_module

    from shoal.executors import cgroups, ray_remote, which

    for module in (ray_remote, cgroups, which):
        ray_module.cloudpickle.register_pickle_by_value(module)
    pickles = [
        ray_module.cloudpickle.dumps(function)
        for function in (ray_remote.run_attempt, ray_remote.run_batch, ray_remote.run_batch)
    ]
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *(str(len(p)) for p in pickles[:2])],
        input=b"".join(pickles),
        capture_output=True,
        cwd=tmp_path,
    )
    assert done.stdout.split() == [b"True", b"True", b"True"], done.stderr.decode()[-2000:]
