"""The code of the ray executor that runs inside the Ray cluster.

It is shipped to the cluster by value (cloudpickle), so the cluster's nodes
need Ray and nothing of shoal: this module imports only the standard
library, ray, `cgroups` and `which` (shipped by value too).

Four parts:
- `Dispatcher`, a detached actor (one per shoal installation and cluster).
  It submits the attempts as Ray tasks (one each, or a few at a time to a
  runner) and owns them. Ray kills a task whose owner dies, and a driver's
  tasks die with the driver; owned by a detached actor, attempts outlive a
  shoal server that is killed or restarted, and the next one finds them
  again by task id. It also holds each attempt's output until shoal has
  stored it, and its exit.
- `run_attempt`, the task of an attempt in a container or of a multi-node
  job, and the body of every other: starts the command in its own process
  group (and memory cgroup), streams its output lines (timestamped on the
  node) to the dispatcher, obeys stop requests (SIGTERM, grace, SIGKILL to
  the group) and returns the exit status.
- `run_batch`, the task of one plain attempt (no container, not of a
  multi-node job) while its shape's attempts run long (a Ray streaming
  generator, as a runner is).
- `run_runner`, the task of a runner, while a shape's attempts run short:
  it takes a few at a time from the dispatcher and runs them one after
  another in the resources it holds, each as `run_attempt` runs it, until
  the dispatcher has none for it; their results go with its message asking
  for the next few. A task costs a worker lease and its scheduling, which
  for jobs of a few milliseconds is most of their cost; a runner pays them
  once for a stream of them. It talks to the dispatcher over a TCP
  connection of its own (`_Channel`), opened to a port the dispatcher
  listens on on its node: a Ray call costs each side some 0.3-0.7 ms of
  CPU, as much as a job like `true`, a message there a tenth of that.

Calls per attempt are few, since they are most of its cost: shoal's launch
(answered once the task runs), the task's one `watch` call (saying where it
runs, then waiting for a stop request or the end), shoal's reads (one, for a
job that prints little), and forgets sent in batches.

No orphans. Ray's worker SIGKILLs its own children when it exits (as it does
when its raylet dies), which no trap can catch. So each worker process
keeps a watchdog pair: its child, a shell that only waits, and the
grandchild, started with the parent-death signal set to SIGHUP
(`setpriv --pdeathsig`), which on SIGHUP kills the process group of every
job the worker is running (listed in a file). Jobs themselves are started
directly, with no shell in between, at the cost of a bare spawn.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgpack  # type: ignore[import-untyped]  # (a dependency of Ray's own)
import ray

from shoal.executors.cgroups import MemoryCgroups, OverLimit, oom_kill_logged
from shoal.executors.which import CachedWhich

PROTOCOL = 12  # part of the dispatcher's name: a new protocol gets a new dispatcher
NAMESPACE = "shoal"  # the Ray namespace of the dispatchers' names

# The watchdog's grandchild (`sh -c WATCHDOG sh GROUPS_FILE`): on SIGHUP, its
# parent (and so the Ray worker) is gone: kill every listed process group,
# remove every listed container (a container outlives its docker client),
# and remove the list.
WATCHDOG = r"""
reap() {
    while read -r g; do
        case $g in
            "") ;;
            shoal-*) docker rm -f "$g" >/dev/null 2>&1 ;;
            *) kill -KILL -"$g" ;;
        esac
    done < "$1"
    rm -f "$1"
    kill $!
    exit 0
}
trap 'reap "$1"' HUP
while :; do
    sleep 2147483647 &
    wait $!
done
"""
# The watchdog's child, the Ray worker's direct child: it only waits.
WATCHDOG_PARENT = 'setpriv --pdeathsig HUP -- sh -c "$0" sh "$1" & wait'
# A job with a MEMORY limit joins its cgroup, then becomes the command (where
# the worker's thread cannot join it for the spawn: cgroup v2).
JOIN_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"'

_PR_SET_PDEATHSIG = 1
_SLOT_BYTES = 96  # per job in the watchdog's file: a process group id or a container's name
_FLUSH_SECONDS = 0.1  # output lines are sent this often while a job prints
_QUIET_START = 0.05  # a job ending this soon reports where it ran with its result
_DRAIN_SECONDS = 1.0  # how long output is read after the job's end, if the pipe stays open
_MAX_BATCH = 1 << 20  # or when this many bytes are waiting
_MAX_EVENT = 256 << 10  # CloudWatch's largest event: a longer line is split
_HELD_LIMIT = 8 << 20  # per attempt, output the dispatcher holds before the job waits
# Runners. Attempts of a shape go to runners while the median run time of
# that shape's last _RUN_MS_SAMPLES attempts is under _SHORT_MS (a median: on
# a loaded node a few `true`s take hundreds of ms, which in a moving average
# sent a stream of them to tasks of their own, each costing a worker lease,
# and so loaded the node more). A runner takes at most _BATCH_ATTEMPTS at a
# time, and starts none of them later than _BATCH_SPAN seconds after the
# first (it ends, and the dispatcher queues the rest again), so that a long
# job met in a stream of short ones holds back the attempts behind it for no
# longer than that.
_SHORT_MS = 100.0
_RUN_MS_SAMPLES = 15
_BATCH_ATTEMPTS = 8
# A runner's share is at least this much work (by the shape's median run
# time), when that many wait: sharing jobs like `true` out one per runner,
# while they trickle in, costs a message per job each way. (When those were
# Ray calls, 0.3-0.7 ms of CPU on each side, that cost more than running the
# jobs side by side gained; on the runners' channel a message costs a tenth
# of that, and shares still halve their number.)
_SHARE_MS = 10.0
# A runner's call for its next share, made as it starts its last, waits for a
# share to arrive for up to this part of the time that last share should
# take, and never longer than _FILL_MOST: on a loaded machine attempts trickle
# in, and a call answered at once with the one or two there were sends a
# message per job or two. (Measured over the channel, with and without the
# wait: 2-21 shares of one and 10-48 lists of results per 300 jobs without,
# 1-3 and 17-32 with; no difference in rate that the machine's noise shows.)
_FILL_PART = 0.5
_FILL_MOST = 0.05
_BATCH_SPAN = 0.5
_RESULTS_GAP = 0.01  # seconds a batch holds a result to send it with the next ones
# A runner's results go with its call for the next share, once its share has
# run (a few of `true` take tens of ms on a loaded node): those held this long
# while an attempt still runs go on their own.
_RUNNER_RESULTS_GAP = 0.05
# A runner done with its share holds its results this long for the call
# for its next share to come back, so that they go with the call after it
# (on a busy engine new attempts arrive every 10 ms or so: the ray
# executor's `_POLL_GAP`);
# then they go on their own.
_RUNNER_HOLD = 0.01
_CANCEL_STEP = 0.1  # seconds a batch waits on its attempt between looks for a cancel
# How long a runner (`run_runner`) waits for attempts to arrive before it
# ends and frees its resources: long enough to span the lulls of a stream (at
# 0.2 s runners ended in them, and their successors' leases sometimes started
# new worker processes, a second of CPU each), short enough to give them up
# soon after it.
_RUNNER_IDLE = 1.0
# A channel to the dispatcher: its first message (a role and the token) is
# short; no other is larger than a share's attempts, its results or a poll's
# news (output comes a chunk at a time). A runner that cannot connect within
# _CONNECT seconds fails (and the dispatcher backs off: _RUNNER_BACKOFF).
_HELLO_BYTES = 1024
MAX_MESSAGE = 256 << 20
# A poll's news carries the output of attempts up to this many bytes (and
# always all of the first's that has any: at most _HELD_LIMIT and a chunk).
_NEWS_BYTES = 64 << 20
_CONNECT = 10.0
# How long the dispatcher waits for a failed runner's channel to close, for
# results it sent before it failed, before it ends its other attempts.
_CLOSING = 2.0
# After a runner failed before it took anything (it could not reach this
# dispatcher's socket, say: a firewall between the nodes that lets only Ray's
# own ports through), attempts go in tasks of their own for this long.
_RUNNER_BACKOFF = 60.0
_RESOURCES_TTL = 2.0  # seconds the cluster's resources are taken as known
_KILLED = 128 + signal.SIGKILL  # a job's exit code when SIGKILLed
# Pauses before each look at whether the node of a job SIGKILLed, not by
# shoal, is alive (`_finish_killed`): its exit is taken only after the last.
_KILLED_LOOKS = (0.0, 0.2, 0.5, 1.0)
_OOM_FLAG_SECONDS = 2.0  # how long a SIGKILLed container's OOM kill is looked for


def _die_with_parent() -> None:
    """In the watchdog's child, before exec: SIGKILL when the worker dies;
    and SIGHUP handled by default again. A worker of a node started under
    nohup ignores it, and a shell cannot trap a signal ignored when it
    started (POSIX): the watchdog's `trap ... HUP` would do nothing."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.signal(signal.SIGHUP, None)  # SIG_DFL


# How a task reaches its dispatcher: (name, namespace, incarnation), looked up
# once per worker process and only when needed (a job still running after
# _QUIET_START, or printing). An actor handle passed with every task was
# registered (and logged) by each task's worker and dropped again; and a tuple,
# unlike an object of a class of this module (shipped by value), is pickled
# without its class.
DispatcherRef = tuple[str, str, str]

_T = TypeVar("_T")


def _worker_state(key: str, make: Callable[[], _T]) -> _T:
    """One per Ray worker process: its watchdog, memory cgroups, attempt
    thread, dispatcher handle and PATH cache.

    Kept on `sys`, not in this module's globals or class attributes: the
    module is shipped by value, and each of its functions a worker unpickles
    (`run_attempt`, `run_batch`) brings its own copy of the globals and sets
    the classes' attributes back to their pickled values, which would start
    a second watchdog and orphan the first, and end the thread that started
    it (whose death, by the parent-death signal, fires it)."""
    state: dict[str, Any] = sys.__dict__.setdefault("_shoal_ray_worker", {})
    if key not in state:
        state[key] = make()
    found: _T = state[key]
    return found


def _dispatcher(ref: DispatcherRef) -> Any:
    handles = _worker_state("handles", dict[DispatcherRef, Any])
    found = handles.get(ref)
    if found is None:
        name, namespace, _ = ref  # a new dispatcher of the same name is looked up anew
        found = ray.get_actor(name, namespace=namespace)
        handles.clear()  # the one this worker's tasks use now
        handles[ref] = found
    return found


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Watchdog:
    """This worker process's watchdog and the file of its jobs' process
    groups (one per process: `_Watchdog.get()`).

    The file has a fixed-width slot per job, written in place with one
    `pwrite` as a job starts and blanked as it ends: a write of a few bytes
    is whole or not at all if the worker dies meanwhile, as a rename of a
    rewritten file would be, at a tenth of its cost (it happens twice per
    job)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.path: Path | None = None
        self.fd: int | None = None
        self.slots: dict[int | str, int] = {}  # process group ids, and container names
        self.free: list[int] = []  # slots blanked, to be used again
        self.used = 0  # slots in the file

    @staticmethod
    def get() -> _Watchdog:
        return _worker_state("watchdog", _Watchdog)

    def ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if shutil.which("setpriv") is None:
            return  # util-linux before 2.33: no way to outlive the kill
        # In memory where the node has it.
        where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        self.path = Path(where) / f"shoal-ray-groups-{os.getpid()}"
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.free, self.used = [], 0
        for item in list(self.slots):
            self.slots[item] = self._slot()
            self._put(item, self.slots[item])
        # The parent-death signal follows the thread that starts the
        # watchdog: attempts run on the task's thread or on the worker's one
        # attempt thread, both as long-lived as the worker.
        self.proc = subprocess.Popen(
            ["sh", "-c", WATCHDOG_PARENT, WATCHDOG, str(self.path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def add(self, item: int | str) -> None:
        if item not in self.slots:
            self.slots[item] = self._slot()
            self._put(item, self.slots[item])

    def remove(self, item: int | str) -> None:
        slot = self.slots.pop(item, None)
        if slot is not None:
            self._put("", slot)
            self.free.append(slot)

    def kill_all(self) -> None:
        """Kill what the worker's attempts run, as the watchdog would: for a
        task cancelled while it runs (Ray raises KeyboardInterrupt in it),
        whose jobs would otherwise run on, unwatched."""
        for group in list(self.slots):
            if isinstance(group, str):
                subprocess.run(
                    ["docker", "rm", "-f", group],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)

    def _slot(self) -> int:
        if self.free:
            return self.free.pop()
        self.used += 1
        return self.used - 1

    def _put(self, item: int | str, slot: int) -> None:
        if self.fd is None:
            return
        text = str(item).encode()[: _SLOT_BYTES - 1]  # (names are shoal-<task id>)
        os.pwrite(self.fd, text.ljust(_SLOT_BYTES - 1) + b"\n", slot * _SLOT_BYTES)


def _cgroups() -> MemoryCgroups:
    """This worker process's memory cgroups (one object, so that emptied
    cgroups are reused by its next attempts; its spares are removed by the
    next worker to start on the node once it is gone)."""
    return _worker_state("cgroups", lambda: MemoryCgroups("shoal-ray", sweep=False))


def run_attempt(
    dispatcher: DispatcherRef,
    task_id: str,
    command: list[str],
    environment: dict[str, str],
    memory_mib: int | None,
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Ray task of one attempt: run `command`; its exit status, or why it
    could not start.

    MEMORY is a hard limit where the node lets us make a memory cgroup (as
    with the process executor); else only Ray's scheduling resource. With
    `container` (the job's image, for a compute environment that asks for
    docker), the command runs in a container on the node instead."""
    node_id, ip = _where()
    watchdog = _Watchdog.get()
    watchdog.ensure()
    if container is not None:
        where = {"node": node_id, "ip": ip}
        return _run_container(
            dispatcher, task_id, where, command, environment, memory_mib, container
        )
    path = environment.get("PATH", os.defpath)
    relative = bool(command) and "/" in command[0] and not os.path.isabs(command[0])
    which = _worker_state("which", CachedWhich)
    if not command or (not relative and which(command[0], path) is None):
        # Said before the cgroup wrapper would turn it into exit code 127.
        what = command[0] if command else "(no command)"
        return {
            "node": node_id,
            "ip": ip,
            "error": f'exec: "{what}": executable file not found in $PATH',
        }
    workdir = _make_workdir(task_id)
    cgroups = _cgroups() if memory_mib else None
    cgroup: Path | None = None
    argv = command
    spawning: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if cgroups is not None and memory_mib:
        # Where one thread can join a cgroup (v1), this one does for the
        # spawn and the limit is set after it (`spawn_in`); else an `sh` joins it.
        joins = cgroups.threads_movable
        cgroup = cgroups.create(task_id, None if joins else memory_mib)
        if cgroup is not None and joins:
            spawning = cgroups.spawn_in(cgroup, memory_mib)
        elif cgroup is not None:
            argv = ["sh", "-c", JOIN_CGROUP, str(cgroup), *command]
    # As seen on the node: the attempt's startedAt (taken before the spawn,
    # as the job may run before Popen returns).
    began = _now_ms()
    over = False
    try:
        try:
            with spawning:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=environment,
                    start_new_session=True,
                )
        except OverLimit:
            over = True  # (proc runs: killed below, once it is watched)
    except OSError as e:
        _drop_workdir(workdir)
        if cgroups is not None:
            cgroups.release(cgroup)
        return {"node": node_id, "ip": ip, "error": f"{command[0]}: {e.strerror or e}"}
    watchdog.add(proc.pid)
    if over:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    info = {"node": node_id, "ip": ip, "pid": proc.pid, "at": began}
    try:
        code = _follow_output(dispatcher, task_id, info, proc)
    except BaseException:
        watchdog.kill_all()  # cancelled while it ran
        raise
    finally:
        watchdog.remove(proc.pid)
        _drop_workdir(workdir)
    if code < 0:
        code = 128 - code  # killed by a signal: as a shell reports it
    oom = over or (cgroups is not None and cgroups.oom_killed(cgroup))
    if cgroups is not None:
        cgroups.release(cgroup)  # kept for this worker's next attempt if clean
    ended = _now_ms()
    return {"node": node_id, "ip": ip, "code": code, "oom": oom, "at": began, "ended_at": ended}


Attempt = tuple[str, list[str], dict[str, str], "int | None"]  # task id, command, env, MiB


Result = tuple[str, dict[str, Any]]  # task id, and what `run_attempt` gave


def run_batch(dispatcher: DispatcherRef, attempts: list[Attempt]) -> Iterator[list[Result]]:
    """The Ray task of a plain attempt of a long shape (a streaming
    generator, as a runner is; the dispatcher gives it one attempt): the
    results of `attempts`, as `_run_attempts` runs them."""
    held: list[Result] = []
    yield from _run_attempts(dispatcher, attempts, held, _RESULTS_GAP)
    if held:
        yield held


def _run_attempts(
    dispatcher: DispatcherRef, attempts: list[Attempt], held: list[Result], gap: float
) -> Generator[list[Result], None, int]:
    """Run `attempts` one after another, each as `run_attempt` runs it (on a
    thread of its own, so that a long one holds back none of the results
    before it); how many it started. Their results go to `held`, which is
    yielded (and emptied) once its first has waited `gap` and the next
    attempt still runs: each list reaching the dispatcher costs it about as
    much as a short job, so results go a few at a time.

    It starts no attempt after the first once it has run for _BATCH_SPAN, or
    once its raylet is gone (the worker's parent changed): the dispatcher,
    having had no result for the rest, queues them again."""
    raylet = os.getppid()
    began = time.monotonic()
    held_since = time.monotonic()
    for i, (task_id, command, environment, memory_mib) in enumerate(attempts):
        if i and (time.monotonic() - began > _BATCH_SPAN or os.getppid() != raylet):
            return i
        running = _runner().submit(
            run_attempt, dispatcher, task_id, command, environment, memory_mib
        )
        try:
            while held:
                wait = held_since + gap - time.monotonic()
                try:
                    running.result(timeout=max(wait, 0.0))
                    break
                except concurrent.futures.TimeoutError:
                    yield held[:]
                    held.clear()
            if not held:
                held_since = time.monotonic()
            held.append((task_id, _result(running)))
        except BaseException:
            # Cancelled while an attempt runs (on the attempt thread, which
            # the KeyboardInterrupt does not reach): it goes with the task.
            _Watchdog.get().kill_all()
            raise
        if time.monotonic() - held_since >= gap:
            yield held[:]
            held.clear()
    return len(attempts)


def _result(running: concurrent.futures.Future[dict[str, Any]]) -> dict[str, Any]:
    """The attempt's result, waited for in short steps: Ray cancels a
    running task by raising KeyboardInterrupt in it, which a wait without
    a timeout would hold off until the attempt had ended."""
    while True:
        try:
            return running.result(timeout=_CANCEL_STEP)
        except concurrent.futures.TimeoutError:
            continue


def _runner() -> concurrent.futures.ThreadPoolExecutor:
    """This worker process's thread for a batch's attempts."""
    return _worker_state(
        "runner", lambda: concurrent.futures.ThreadPoolExecutor(1, "shoal-attempt")
    )


def run_runner(dispatcher: DispatcherRef, runner: str) -> None:
    """The Ray task of a runner: while its shape's attempts run short, it
    takes a few at a time from the dispatcher and runs them one after
    another (`_run_attempts`), in the resources it holds, until the
    dispatcher has had nothing for it for _RUNNER_IDLE.

    A task per batch costs a worker lease from a raylet and a task's
    scheduling, which for jobs of a few milliseconds is most of their cost; a
    runner pays them once for a stream. Ray places it and holds its
    resources as for any task (so the cluster's other users, and the
    autoscaler, see them taken), and its worker goes back to Ray's pool when
    it ends.

    It talks to the dispatcher over a connection of its own (`_Channel`),
    not in Ray calls: a Ray call costs the dispatcher and the runner about
    as much CPU as a job like `true`, a message on the connection a tenth of
    that. Its next share is asked for while it runs the last (waiting on the
    round trip would leave its CPU idle), and that message carries the
    results of the share before. Results it would otherwise hold while
    waiting for work, or for a long attempt, go on their own. It ends with
    an `end` message that the dispatcher answers once it has recorded every
    result before it: the dispatcher queues again what a runner that ended
    had taken and not reported, so none may still be on its way then.

    It ends early, too, when a batch stopped past its span (it met a long
    attempt): the dispatcher queues what it had taken and not run again."""
    address = ray.get(_dispatcher(dispatcher).channel.remote())
    node, ip = _where()
    channel = _Channel(address, runner)
    try:
        channel.send(["take", {"node": node, "ip": ip}, []])
        held: list[Result] = []
        while True:
            if held and not channel.ready(_RUNNER_HOLD):
                channel.send(["results", held])  # (not held while there is no work)
                held = []
            attempts: list[Attempt] = channel.receive()
            if not attempts:
                break
            channel.send(["take", None, held])
            held = []
            running = _run_attempts(dispatcher, attempts, held, _RUNNER_RESULTS_GAP)
            while True:
                try:
                    channel.send(["results", next(running)])
                except StopIteration as ran:
                    started: int = ran.value
                    break
            if started < len(attempts):
                channel.receive()  # (what it takes is queued again once this ends)
                break
        channel.send(["end", held])
        channel.receive()
    finally:
        channel.close()


class _Channel:
    """A runner's connection to its dispatcher (`Dispatcher.channel`):
    messages packed with msgpack, each after its length (4 bytes)."""

    def __init__(self, address: list[Any], runner: str) -> None:
        host, port, token = address
        self._sock = socket.create_connection((host, port), timeout=_CONNECT)
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self.send(["runner", token, runner])

    def send(self, message: Any) -> None:
        self._sock.sendall(_framed(message))

    def ready(self, timeout: float) -> bool:
        """Whether a message (or part of one) has come, waiting up to `timeout`."""
        return bool(self._buffer) or bool(select.select([self._sock], [], [], timeout)[0])

    def receive(self) -> Any:
        while True:
            if len(self._buffer) >= 4:
                end = 4 + int.from_bytes(self._buffer[:4], "big")
                if len(self._buffer) >= end:
                    data, self._buffer = self._buffer[4:end], self._buffer[end:]
                    return msgpack.unpackb(data)
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the dispatcher closed the runner's connection")
            self._buffer += chunk

    def close(self) -> None:
        self._sock.close()


def _make_workdir(task_id: str) -> str:
    """The attempt's own empty working directory, named by its task id
    (unique, and never run twice: Ray's retries are off): this worker's
    spare, emptied by the attempt before, renamed (on a disk, a directory
    made and removed costs more than the job `true`)."""
    workdir = os.path.join(tempfile.gettempdir(), f"shoal-{task_id}")
    try:
        os.rename(_spare_workdir(), workdir)
    except OSError:  # none spare (or taken by an attempt running alongside)
        os.mkdir(workdir, 0o700)
    return workdir


def _drop_workdir(workdir: str) -> None:
    """Keep the attempt's directory as this worker's spare if it left it
    empty, else remove it. (Nothing of the attempt's runs in it by now: its
    process group is killed as it ends.)"""
    try:
        empty = not os.listdir(workdir)
        if empty and not os.path.exists(_spare_workdir()):
            os.rename(workdir, _spare_workdir())
            return
    except OSError:
        pass
    shutil.rmtree(workdir, ignore_errors=True)


def _spare_workdir() -> str:
    """This worker's spare working directory (named by its pid: the first
    attempt of a worker removes the spares of workers gone)."""

    def sweep() -> str:
        tmp = tempfile.gettempdir()
        with contextlib.suppress(OSError):
            for entry in os.scandir(tmp):
                owner = entry.name.removeprefix("shoal-spare-")
                if owner != entry.name and not os.path.exists(f"/proc/{owner}"):
                    shutil.rmtree(entry.path, ignore_errors=True)
        return os.path.join(tmp, f"shoal-spare-{os.getpid()}")

    return _worker_state("spare", sweep)


def _where() -> tuple[str, str]:
    """This worker's node id and IP address (looked up once per process)."""
    return _worker_state(
        "where",
        lambda: (
            ray.get_runtime_context().get_node_id(),
            str(ray.util.get_node_ip_address()),  # type: ignore[no-untyped-call]
        ),
    )


def _follow_output(
    dispatcher: DispatcherRef,
    task_id: str,
    info: dict[str, Any],
    proc: subprocess.Popen[bytes],
    container: str | None = None,
) -> int:
    """Send the output of `proc` (its stdout pipe) to the dispatcher, line
    by line, until it ends; its exit status.

    It ends when `proc` does (not when the pipe closes, which a process it
    left running may hold open; on a node without pidfds, it does wait for
    that): what it left running in its process group
    is killed then, as a container's processes end with the container (and
    as the process executor has it); what it printed before is read until
    the pipe closes, or for _DRAIN_SECONDS.

    A job that ends within _QUIET_START says nothing meanwhile: where it ran
    comes with its result, which saves the `watch` call that would be a
    third of a short job's cost, and the watcher thread that makes it
    (`_watch`) is started only once it has run that long (a stop asked for
    meanwhile waits that long)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pipe = select.poll()
    pipe.register(fd, select.POLLIN)
    pidfd = _pidfd(proc.pid)  # readable once it has exited
    if pidfd is not None:
        pipe.register(pidfd, select.POLLIN)
    quiet_until = time.monotonic() + _QUIET_START
    drain_until: float | None = None  # once it has exited
    done: threading.Event | None = None
    sender = _Sender(dispatcher, task_id)
    partial = b""
    try:
        while True:
            if drain_until is not None:
                timeout_ms: float | None = max(drain_until - time.monotonic(), 0.0) * 1000
            elif done is None:
                timeout_ms = max(quiet_until - time.monotonic(), 0.0) * 1000
            else:
                timeout_ms = None
            ready = dict(pipe.poll(timeout_ms))
            if not ready:
                if drain_until is not None:
                    break  # a process that left its group holds the pipe
                done = threading.Event()
                watcher = threading.Thread(
                    target=_watch,
                    args=(dispatcher, task_id, info, proc, done, container),
                    daemon=True,
                )
                watcher.start()
                continue
            if fd in ready:
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                now = _now_ms()
                *lines, partial = (partial + data).split(b"\n")
                while len(partial) > _MAX_EVENT:  # (as pieces, as a line too long is)
                    lines.append(partial[:_MAX_EVENT])
                    partial = partial[_MAX_EVENT:]
                for line in lines:
                    for at in range(0, max(len(line), 1), _MAX_EVENT):
                        sender.add(now, line[at : at + _MAX_EVENT].decode("utf-8", "replace"))
            elif pidfd is not None and pidfd in ready:  # it has exited
                _end_group(proc)
                pipe.unregister(pidfd)
                drain_until = time.monotonic() + _DRAIN_SECONDS
        if partial:
            sender.add(_now_ms(), partial.decode("utf-8", "replace"))
        if drain_until is None:
            _end_group(proc)
        return proc.wait()
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if done is not None:
            done.set()
        sender.close()


def _pidfd(pid: int) -> int | None:
    """A pidfd of the process (Linux 5.3 and later); on a node without, the
    job's output is followed until its pipe closes."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """Once `proc` has exited, and before it is reaped (while its process
    group id is still its own): kill what is left in its group."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _watch(
    dispatcher: DispatcherRef,
    task_id: str,
    info: dict[str, Any],
    proc: subprocess.Popen[bytes],
    done: threading.Event,
    container: str | None = None,
) -> None:
    """Say where the attempt runs, then wait (in the same call) for a stop
    request: SIGTERM the process group (or the container), wait the grace
    period, SIGKILL it."""
    try:
        grace = ray.get(_dispatcher(dispatcher).watch.remote(task_id, info))
    except Exception:
        return  # the dispatcher is gone: so is the owner of this task
    if grace is None or done.is_set():
        return
    info["stopped"] = True  # (a SIGKILL is then shoal's, not the OOM killer's)
    _signal(proc, container, "TERM")
    if done.wait(float(grace)):
        return
    _signal(proc, container, "KILL")


def _signal(proc: subprocess.Popen[bytes], container: str | None, name: str) -> None:
    if container is not None:
        # To the container's process, not its docker client (whose death
        # would leave the container running).
        subprocess.run(
            ["docker", "kill", "--signal", name, container],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.Signals[f"SIG{name}"])


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def _docker_error(result: subprocess.CompletedProcess[str]) -> str:
    """What dockerd said (the CLI adds a summary line after it)."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    daemon = [line for line in lines if "Error response from daemon: " in line]
    text = (daemon or lines or [f"docker exited with {result.returncode}"])[0]
    return text.split("Error response from daemon: ", 1)[-1].removeprefix("docker: ")


def _run_container(
    dispatcher: DispatcherRef,
    task_id: str,
    where: dict[str, Any],
    command: list[str],
    environment: dict[str, str],
    memory_mib: int | None,
    container: dict[str, Any],
) -> dict[str, Any]:
    """Run the attempt in a container on this node, with the docker CLI
    (nodes need docker, not its Python SDK): created, started, its output
    followed as a process's is; inspected for its exit and OOM kill, then
    removed. The name is listed with the watchdog, so a lost
    worker leaves no container running."""
    if shutil.which("docker") is None:
        return {**where, "error": f"CannotStartContainerError: no docker on Ray node {where['ip']}"}
    image, name = str(container["image"]), f"shoal-{task_id}"
    if _docker("image", "inspect", "--format", "{{.Id}}", image).returncode != 0:
        pulled = _docker("pull", "--quiet", image)
        if pulled.returncode != 0:
            error = f"CannotPullContainerError: {image}: {_docker_error(pulled)}"
            return {**where, "error": error}
    create = ["create", "--name", name, "--network", "host", "--label", f"shoal.task={task_id}"]
    create += ["--label", f"shoal.job={container.get('job', '')}"]
    create += ["--label", f"shoal.ray-node={where['ip']}"]
    create += ["--cpus", str(container.get("vcpus") or 1)]
    if memory_mib:
        create += ["--memory", f"{memory_mib}m", "--memory-swap", f"{memory_mib}m"]
    if container.get("user"):
        create += ["--user", str(container["user"])]
    if container.get("privileged"):
        create += ["--privileged"]  # allowed by the server's configuration
    for source, target, read_only in container.get("mounts") or []:
        mount = f"type=bind,source={source},target={target}"
        create += ["--mount", mount + (",readonly" if read_only else "")]
    for key in environment:
        create += ["--env", key]  # the value from the client's environment: never on a command line
    client_env = {**os.environ, **environment}
    created = subprocess.run(
        ["docker", *create, image, *command],
        capture_output=True,
        text=True,
        env=client_env,
        check=False,
    )
    if created.returncode != 0:
        _docker("rm", "--force", name)
        return {**where, "error": f"CannotStartContainerError: {_docker_error(created)}"}
    _Watchdog.get().add(name)
    try:
        return _follow_container(dispatcher, task_id, where, name)
    finally:
        _docker("rm", "--force", name)
        _Watchdog.get().remove(name)


def _follow_container(
    dispatcher: DispatcherRef, task_id: str, where: dict[str, Any], name: str
) -> dict[str, Any]:
    # Started, then followed: a command the runtime cannot exec fails here,
    # before the attempt is said to run (`docker start --attach` would only
    # tell once it had ended). The logs follow from the container's start.
    began = _now_ms()  # (the container starts within `docker start`)
    started = _docker("start", name)
    if started.returncode != 0:
        return {**where, "error": f"CannotStartContainerError: {_docker_error(started)}"}
    proc = subprocess.Popen(
        ["docker", "logs", "--follow", name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _Watchdog.get().add(proc.pid)
    info = {**where, "pid": proc.pid, "container": name, "at": began}
    try:
        _follow_output(dispatcher, task_id, info, proc, name)
    finally:
        _Watchdog.get().remove(proc.pid)
    inspected = _docker("inspect", "--format", "{{json .State}}", name)
    if inspected.returncode != 0:
        return {**where, "error": f"CannotInspectContainerError: {_docker_error(inspected)}"}
    state = json.loads(inspected.stdout)
    if state.get("Running"):
        # The log follower ended early (dockerd restarted?): wait for the end.
        _docker("wait", name)
        state = json.loads(_docker("inspect", "--format", "{{json .State}}", name).stdout)
    oom = bool(state.get("OOMKilled"))
    if state.get("ExitCode") == 137 and not oom and not info.get("stopped"):
        oom = _oom_killed_late(name, began)
    return {
        **where,
        "code": int(state.get("ExitCode", -1)),
        "oom": oom,
        "at": began,
        "ended_at": _now_ms(),
    }


def _oom_killed_late(name: str, began_ms: int) -> bool:
    """Whether a container that died of SIGKILL was OOM-killed, though
    dockerd's flag says not: dockerd learns of an OOM kill from containerd's
    event, which can come after the exit (moby/moby#18510; then 20.10 never
    sets the flag) or not at all. As the docker executor does: the kernel's
    record first, then the flag and dockerd's "oom" event, polled for a while."""
    found = _docker("inspect", "--format", "{{.Id}}", name)
    if found.returncode != 0:
        return False
    container_id = found.stdout.strip()
    if oom_kill_logged(container_id):
        return True
    deadline = time.monotonic() + _OOM_FLAG_SECONDS
    while True:
        flag = _docker("inspect", "--format", "{{.State.OOMKilled}}", name)
        if flag.stdout.strip() == "true":
            return True
        events = _docker(
            "events",
            "--since", f"{began_ms / 1000 - 1:.3f}",
            "--until", f"{time.time():.3f}",
            "--filter", f"container={container_id}",
            "--filter", "event=oom",
            "--format", "{{.Action}}",
        )  # fmt: skip
        if events.stdout.strip():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


class _Sender:
    """Batches output lines to the dispatcher from a thread of its own; the
    job waits (its pipe fills) while too much is unsent."""

    def __init__(self, dispatcher: DispatcherRef, task_id: str) -> None:
        self._dispatcher = dispatcher
        self._task_id = task_id
        self._lines: list[tuple[int, str]] = []
        self._bytes = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None  # started by the first line

    def add(self, timestamp: int, line: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        with self._cond:
            while self._bytes > _MAX_BATCH * 4 and not self._closed:
                self._cond.wait()
            self._lines.append((timestamp, line))
            self._bytes += len(line) + 16
            if self._bytes > _MAX_BATCH:
                self._cond.notify_all()

    def close(self) -> None:
        if self._thread is None:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._lines and not self._closed:
                    self._cond.wait(_FLUSH_SECONDS)
                batch, self._lines, self._bytes = self._lines, [], 0
                closed = self._closed
                self._cond.notify_all()
            if batch:
                with contextlib.suppress(Exception):
                    ray.get(_dispatcher(self._dispatcher).output.remote(self._task_id, batch))
            if closed and not batch:
                return


class _Run:
    """The dispatcher's record of one attempt."""

    def __init__(self) -> None:
        self.ref: Any = None
        self.info: dict[str, Any] | None = None
        self.began = asyncio.Event()
        self.chunks: collections.deque[tuple[int, list[tuple[int, str]]]] = collections.deque()
        self.held = 0  # bytes of output not yet taken by shoal
        self.seq = 0  # the number of the last chunk received
        self.exit: dict[str, Any] | None = None
        self.room = asyncio.Event()
        self.room.set()
        self.stop_grace: float | None = None
        self.stop_or_end = asyncio.Event()  # a stop was requested, or the attempt ended
        self.group: str | None = None
        self.queued = False  # waiting in the dispatcher for a batch or a task


# The dispatcher's methods called per job or per batch record no task events
# (each would be one more message to the GCS, for calls nobody looks up):
# most of a short job's cost is such per-call work.
_F = TypeVar("_F", bound=Callable[..., Any])


def _quiet(method: _F) -> _F:
    quiet: _F = ray.method(enable_task_events=False)(method)  # (sets an attribute)
    return quiet


# Attempts a task or runner has and has not reported: by task id, in order.
_Taken = dict[str, tuple[_Run, dict[str, Any]]]


class _Runner:
    """The dispatcher's record of one runner (`run_runner`)."""

    def __init__(self, shape: Shape) -> None:
        self.id = uuid.uuid4().hex
        self.shape = shape
        self.taken: _Taken = {}  # what it took and has not reported, in order
        self.where: dict[str, Any] | None = None  # its node, once it said
        self.took = 0  # attempts it has taken
        self.connected = False  # its channel (`Dispatcher._serve_runner`) is open
        self.closed = asyncio.Event()  # and has closed since


class Dispatcher:
    """Owns the attempts' tasks; shoal calls it, and so do the tasks."""

    def __init__(self, short_ms: float = _SHORT_MS) -> None:
        self.short_ms = short_ms  # (tests on a loaded machine pass more)
        self.incarnation = uuid.uuid4().hex
        self.runs: dict[str, _Run] = {}
        self.refused: set[str] = set()  # task ids a recovering engine declared never started
        self.groups: dict[str, tuple[Any, set[str]]] = {}  # placement groups of multi-node jobs
        # Made once: each new remote function is exported to the cluster anew.
        self.task = ray.remote(run_attempt)
        self.batch = ray.remote(run_batch)
        self.runner = ray.remote(run_runner)
        self.task_shapes: dict[Shape, Any] = {}  # `task` with each shape's options
        self.batch_shapes: dict[Shape, Any] = {}  # `batch` likewise
        self.runner_shapes: dict[Shape, Any] = {}  # `runner` likewise
        self.runners: dict[str, _Runner] = {}  # by id, until they end (or are told to)
        self.running: collections.Counter[Shape] = collections.Counter()  # runners by shape
        self.idle: collections.Counter[Shape] = collections.Counter()  # those waiting in `take`
        self.arrived: dict[Shape, asyncio.Event] = {}  # set for them when attempts arrive
        self.more: dict[Shape, asyncio.Event] = {}  # and for runners filling a share (`_fill`)
        # Plain attempts (no container, no placement group) by shape: those
        # waiting here for a runner's call or a task.
        self.queued: dict[Shape, collections.deque[tuple[str, _Run, dict[str, Any]]]] = {}
        # The run times of the shape's last attempts, in ms.
        self.run_ms: dict[Shape, collections.deque[float]] = {}
        self.resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        self.resources_at = time.monotonic()
        self.reading_resources = False
        # What became of plain attempts, for `counts`.
        self.counted: collections.Counter[str] = collections.Counter()
        name = ray.get_runtime_context().get_actor_name() or ""
        self.me: DispatcherRef = (name, NAMESPACE, self.incarnation)
        self._changed = asyncio.Event()
        self._listening: asyncio.Future[tuple[str, int]] | None = None  # (`channel`)
        self._token = secrets.token_hex(16)
        self._server: asyncio.Server | None = None
        self.runner_failed = -_RUNNER_BACKOFF  # when a runner last failed before taking any

    def _notify(self) -> None:
        """Wake `poll`: something changed for some attempt."""
        self._changed.set()
        self._changed = asyncio.Event()

    # -- called by shoal ------------------------------------------------------
    @_quiet
    async def submit(self, requests: list[tuple[str, dict[str, Any]]]) -> None:
        """Submit attempts (each once: a task id seen before is ignored).
        Where each runs, or why it did not start, comes through `poll`."""
        shapes: set[Shape] = set()
        for task_id, request in requests:
            if task_id in self.runs:
                continue
            run = _Run()
            self.runs[task_id] = run
            if task_id in self.refused:
                run.info = {"error": "the attempt was declared never started"}
                run.exit = {"lost": run.info["error"]}
                run.began.set()
                continue
            if request.get("group") is not None or request.get("container") is not None:
                asyncio.get_running_loop().create_task(self._submit(task_id, run, request))
                continue
            shape = _shape(request)
            run.queued = True
            self.queued.setdefault(shape, collections.deque()).append((task_id, run, request))
            shapes.add(shape)
        for shape in shapes:
            self._release(shape)
        self._notify()

    def _release(self, shape: Shape) -> None:
        """Send queued plain attempts of `shape` to Ray: each in a task of its
        own (`run_batch`) while the shape's attempts run long; while they are
        short, to the shape's runners (`run_runner`), which take them a few
        at a time: a waiting runner is woken, or runners are started, as many
        as the cluster runs at once."""
        queue = self.queued.get(shape)
        if not queue:
            return
        recent = self.run_ms.get(shape)
        failed = time.monotonic() - self.runner_failed < _RUNNER_BACKOFF
        if not recent or statistics.median(recent) >= self.short_ms or failed:
            while queue:
                self._send_task(queue.popleft(), shape)
            return
        if (more := self.more.get(shape)) is not None:
            more.set()
        idle = self.idle[shape]
        if idle:
            self.arrived.setdefault(shape, asyncio.Event()).set()
        for _ in range(min(self._width(shape) - self.running[shape], len(queue) - idle)):
            self._start_runner(shape)

    def _send_task(self, item: tuple[str, _Run, dict[str, Any]], shape: Shape) -> None:
        """A plain attempt to Ray in a task of its own."""
        task_id, run, request = item
        run.queued = False
        self.counted["tasks"] += 1
        remote = _shaped(self.batch_shapes, self.batch, shape, num_returns="streaming")
        try:
            # (run.ref: cancelled while it waits in Ray)
            run.ref = remote.remote(self.me, [_attempt(task_id, request)])
        except Exception as e:  # e.g. arguments that do not pickle
            self._end(run, {"lost": f"{type(e).__name__}: {e}"[:500]})
            return
        follow = self._follow_batch({task_id: (run, request)}, run.ref, shape)
        asyncio.get_running_loop().create_task(follow)

    def _start_runner(self, shape: Shape) -> None:
        remote = _shaped(self.runner_shapes, self.runner, shape)
        runner = _Runner(shape)
        self.runners[runner.id] = runner
        self.running[shape] += 1
        self.counted["runners"] += 1
        try:
            ended = remote.remote(self.me, runner.id)
        except Exception:
            self._runner_ended(runner)
            raise
        follow = self._follow_batch(runner.taken, ended, shape, runner)
        asyncio.get_running_loop().create_task(follow)

    def _runner_ended(self, runner: _Runner) -> None:
        if self.runners.pop(runner.id, None) is not None:
            self.running[runner.shape] -= 1

    def _width(self, shape: Shape) -> int:
        """How many attempts of `shape` the whole cluster runs at once (at
        least one; the cluster's resources are read again when stale)."""
        if time.monotonic() - self.resources_at > _RESOURCES_TTL and not self.reading_resources:
            self.reading_resources = True
            asyncio.get_running_loop().create_task(self._read_resources())
        cpus, gpus, memory = shape
        fits = [1 << 10]
        for need, have in ((cpus, "CPU"), (gpus, "GPU"), (memory, "memory")):
            if need > 0:
                fits.append(int(self.resources.get(have, 0.0) // need))
        return max(1, min(fits))

    async def _read_resources(self) -> None:
        try:
            self.resources = await asyncio.to_thread(ray.cluster_resources)
        finally:
            self.resources_at = time.monotonic()
            self.reading_resources = False
        for shape in list(self.queued):
            self._release(shape)

    async def _submit(self, task_id: str, run: _Run, request: dict[str, Any]) -> None:
        try:
            await self._submit_task(task_id, run, request)
        except Exception as e:
            self._end(run, {"lost": f"{type(e).__name__}: {e}"[:500]})

    async def _submit_task(self, task_id: str, run: _Run, request: dict[str, Any]) -> None:
        """An attempt with a container or of a multi-node job, as a task of its own."""
        shape = _shape(request)
        remote = _shaped(self.task_shapes, self.task, shape)
        group = request.get("group")
        if group is not None:
            pg = await self._placement_group(group, request["bundles"])
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            strategy = PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=request["bundle"]
            )
            # A placement of its own: options for this task alone.
            remote = self.task.options(**_options(shape), scheduling_strategy=strategy)
            self.groups[group][1].add(task_id)
            run.group = group
        run.ref = remote.remote(
            self.me,
            task_id,
            request["command"],
            request["environment"],
            request.get("memory_mib"),
            request.get("container"),
        )
        asyncio.get_running_loop().create_task(self._follow(run))

    async def _placement_group(self, group: str, bundles: list[dict[str, float]]) -> Any:
        from ray.util.placement_group import placement_group

        if group not in self.groups:
            # Nodes of a multi-node job on distinct Ray nodes where the
            # cluster has enough of them (SPREAD falls back to sharing).
            pg = placement_group(bundles, strategy="SPREAD", name=f"shoal-{group}")
            self.groups[group] = (pg, set())
        pg = self.groups[group][0]
        await pg.ready()
        return pg

    @_quiet
    async def poll(
        self,
        interest: dict[str, list[Any]],
        timeout: float,
        submit: list[tuple[str, dict[str, Any]]] | None = None,
        forget: list[str] | None = None,
    ) -> dict[str, Any]:
        """What is new for the attempts shoal follows, given per task id as
        [the last output chunk shoal stored, whether it knows where the
        attempt runs]: where it runs, output chunks (the stored ones are
        dropped here), and its exit once all output is taken. Waits up to
        `timeout` seconds when there is nothing new.

        A busy engine's attempts to `submit` and to `forget` come with it: one
        call instead of three."""
        if forget:
            await self.forget(forget)
        if submit:
            await self.submit(submit)
        news = self._news(interest)
        if not news:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
            news = self._news(interest)
        return news

    def _news(self, interest: dict[str, list[Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        spent = 0  # bytes of output in it
        for task_id, (after, placed) in interest.items():
            run = self.runs.get(task_id)
            if run is None:
                if placed:  # known to have run, and forgotten (or another incarnation's)
                    out[task_id] = {"gone": True}
                # else its submission is still on its way (calls to an async
                # actor may overtake each other): no news yet
                continue
            while run.chunks and run.chunks[0][0] <= after:
                _, lines = run.chunks.popleft()
                run.held -= sum(len(line) + 16 for _, line in lines)
            if run.held < _HELD_LIMIT:
                run.room.set()
            item: dict[str, Any] = {}
            if run.began.is_set() and not placed:
                item["info"] = run.info
            if run.chunks:
                if spent < _NEWS_BYTES:  # (else in a later poll's news)
                    item["chunks"] = list(run.chunks)
                    spent += run.held
            elif run.exit is not None:
                item["exit"] = run.exit
            if item:
                out[task_id] = item
        return out

    async def stop(self, task_id: str, grace: float) -> None:
        run = self.runs.get(task_id)
        if run is None or run.exit is not None:
            return
        if run.queued:  # still here: it never starts
            self._unqueue(task_id)
            self._end(run, {"cancelled": True})
            return
        if run.info is None and run.ref is not None:
            # Not started yet: it never will. (One in a batch may yet start:
            # it is then stopped as a running one is.)
            ray.cancel(run.ref, force=False)
        if run.stop_grace is None:
            run.stop_grace = grace
            run.stop_or_end.set()

    async def recover(self, task_id: str) -> dict[str, Any] | None:
        """For an engine that died between placing and launching: the
        attempt's state if it was launched; else it is refused for good."""
        run = self.runs.get(task_id)
        if run is None:
            self.refused.add(task_id)
            return None
        return {"incarnation": self.incarnation, "info": run.info}

    @_quiet
    async def forget(self, task_ids: list[str]) -> None:
        """Drop finished attempts whose exits shoal has recorded."""
        for task_id in task_ids:
            run = self.runs.pop(task_id, None)
            if run is None or run.group is None:
                continue
            pg, members = self.groups.get(run.group, (None, set()))
            members.discard(task_id)
            if not members and pg is not None:
                from ray.util.placement_group import remove_placement_group

                del self.groups[run.group]
                remove_placement_group(pg)

    async def identity(self) -> str:
        return self.incarnation

    async def counts(self) -> dict[str, int]:
        """How plain attempts went to Ray: in `tasks` of their own, or to
        `runners` (started), which took them one at a time (`singles`) or in
        `batches` of several (`batched` attempts); how many a batch ended
        without starting (`again`: queued again); how many lists of results
        the tasks and runners sent on their own (`yields`), and how many
        results came with runners' calls for more (`reported`)."""
        return dict(self.counted)

    # -- called by the tasks --------------------------------------------------
    async def channel(self) -> list[Any]:
        """Where a runner (`_Channel`), or a shoal engine, connects, and the
        token it says it with: a socket on this node, opened on the first
        call. A message there costs each side a tenth of a Ray call."""
        if self._listening is None:
            self._listening = asyncio.ensure_future(self._listen())
        host, port = await asyncio.shield(self._listening)
        return [host, port, self._token]

    async def _listen(self) -> tuple[str, int]:
        host = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        self._server = await asyncio.start_server(self._serve, host, 0)
        return host, int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection to `channel`: a runner's, or a shoal engine's. Its
        first message says which, with the token."""
        try:
            role, token, runner_id = await receive_message(reader, _HELLO_BYTES)
            if token != self._token:
                return  # a stranger
            if role == "runner":
                await self._serve_runner(reader, writer, runner_id)
            elif role == "shoal":
                await self._serve_shoal(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, TypeError, IndexError):
            pass  # it has gone, or it does not speak the protocol
        finally:
            writer.close()

    async def _serve_runner(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, runner_id: str
    ) -> None:
        """A runner's messages: `take` (results, and a call for a share,
        answered with it), `results` on their own, and `end` (its last
        results, answered once they are recorded)."""
        runner = self.runners.get(runner_id)
        if runner is None:
            return  # it has ended
        runner.connected = True
        try:
            while True:
                message = await receive_message(reader, MAX_MESSAGE)
                if message[0] == "take":
                    answer = self._answer(writer, runner, message[1], message[2])
                    asyncio.get_running_loop().create_task(answer)
                    continue
                self._results(runner.taken, message[1], runner.shape)
                if message[0] == "end":
                    self.counted["reported"] += len(message[1])
                    send_message(writer, [])
                else:
                    self.counted["yields"] += 1
        finally:
            runner.closed.set()

    async def _serve_shoal(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A shoal engine's polls (`poll`'s arguments, answered with its
        news), one at a time."""
        while True:
            kind, interest, timeout, submit, forget = await receive_message(reader, MAX_MESSAGE)
            if kind != "poll":
                return
            try:
                news = await self.poll(interest, float(timeout), submit, forget)
            except Exception as e:  # (raised to the engine, as a Ray call's error is)
                send_message(writer, ["error", f"{type(e).__name__}: {e}"[:1000]])
                continue
            send_message(writer, ["news", news])

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        runner: _Runner,
        where: dict[str, Any] | None,
        results: list[Result],
    ) -> None:
        attempts = await self.take(runner.id, where, results)
        if not writer.is_closing():
            send_message(writer, attempts)

    async def take(
        self, runner_id: str, where: dict[str, Any] | None, results: list[Result]
    ) -> list[Attempt]:
        """A runner's results, and its next attempts (and, the first time,
        where it runs): a share of those queued for its shape, at most
        _BATCH_ATTEMPTS; waits up to _RUNNER_IDLE for some to arrive.
        Nothing: the runner ends."""
        runner = self.runners.get(runner_id)
        if runner is None:  # (it has ended: it sends no results after)
            return []
        runner.where = runner.where or where
        self._results(runner.taken, results, runner.shape)
        self.counted["reported"] += len(results)
        shape = runner.shape
        if runner.taken:
            await self._fill(runner)
            if self.runners.get(runner_id) is not runner:
                return []  # it ended meanwhile: what it had is queued again
        queue = self.queued.get(shape)
        if not queue:
            self.idle[shape] += 1
            try:
                deadline = time.monotonic() + _RUNNER_IDLE
                while not queue and time.monotonic() < deadline:
                    arrived = self.arrived.setdefault(shape, asyncio.Event())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
                    arrived.clear()
                    queue = self.queued.get(shape)
            finally:
                self.idle[shape] -= 1
            if self.runners.get(runner_id) is not runner:
                return []  # it ended meanwhile: what it had is queued again
            if not queue:
                self._runner_ended(runner)
                return []
            if self.idle[shape]:  # more for the others waiting
                self.arrived[shape].set()
        share = max(-(-len(queue) // max(1, self.running[shape])), self._least_share(shape))
        items = [queue.popleft() for _ in range(min(_BATCH_ATTEMPTS, len(queue), share))]
        self.counted["batches" if len(items) > 1 else "singles"] += 1
        self.counted["batched"] += len(items) if len(items) > 1 else 0
        runner.took += len(items)
        for task_id, run, request in items:
            run.queued = False
            runner.taken[task_id] = (run, request)
        return [_attempt(task_id, request) for task_id, _, request in items]

    async def _fill(self, runner: _Runner) -> None:
        """A runner asks for its next share as it starts its last (see
        `run_runner`): while fewer than a share wait, the call waits for more
        to arrive, for up to _FILL_PART of the time the runner's unfinished
        attempts should take (by the shape's median), so that it still comes
        back before they end."""
        shape = runner.shape
        want = min(_BATCH_ATTEMPTS, self._least_share(shape))
        recent = self.run_ms.get(shape)
        if want <= 1 or not recent:
            return
        ahead = len(runner.taken) * statistics.median(recent) / 1000
        deadline = time.monotonic() + min(_FILL_PART * ahead, _FILL_MOST)
        more = self.more.setdefault(shape, asyncio.Event())
        while True:
            more.clear()
            left = deadline - time.monotonic()
            if len(self.queued.get(shape) or ()) >= want or left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(more.wait(), left)

    def _least_share(self, shape: Shape) -> int:
        """How many attempts make _SHARE_MS of work, by the shape's median."""
        recent = self.run_ms.get(shape)
        if not recent:
            return 1
        return max(1, int(_SHARE_MS / max(statistics.median(recent), 0.5)))

    @_quiet
    async def watch(self, task_id: str, info: dict[str, Any]) -> float | None:
        """The task says where it runs, then waits here: the grace period
        once a stop is requested, None once the attempt has ended."""
        run = self.runs.get(task_id)
        if run is None:
            return 0.0  # forgotten: nobody waits for it
        run.info = info
        run.began.set()
        self._notify()
        await run.stop_or_end.wait()
        return run.stop_grace if run.exit is None else None

    @_quiet
    async def output(self, task_id: str, lines: list[tuple[int, str]]) -> None:
        run = self.runs.get(task_id)
        if run is None:
            return
        run.seq += 1
        run.chunks.append((run.seq, lines))
        run.held += sum(len(line) + 16 for _, line in lines)
        self._notify()
        if run.held >= _HELD_LIMIT:
            run.room.clear()
            await run.room.wait()

    # -- inside ---------------------------------------------------------------
    async def _follow(self, run: _Run) -> None:
        """Until the task ends: its result is the attempt's exit."""
        try:
            result = await run.ref
        except Exception as e:
            self._end(run, await self._lost(run, e))
        else:
            self._finish(run, result, None)

    async def _follow_batch(
        self, items: _Taken, results: Any, shape: Shape, runner: _Runner | None = None
    ) -> None:
        """Until a task of one attempt, or a runner, ends: the results it
        sends (the items of a task's generator; a runner's come over its
        channel, and `results` is its task's ref) are the exits of attempts
        in `items` (those it has, which a runner's takes add to, and its
        results there take away). Attempts it did not report are queued
        again, ahead of the rest."""
        try:
            if runner is not None:
                await results
            else:
                async for ref in results:
                    self.counted["yields"] += 1
                    self._results(items, await ref, shape)
        except Exception as e:
            if runner is not None:
                self._runner_ended(runner)  # (no take adds to `items` from now)
                if runner.connected:
                    # Results it sent before it failed may still be on their
                    # way: its channel closes with its process (a node gone
                    # from the network does not close it: waited for a while).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(runner.closed.wait(), _CLOSING)
            if runner is not None and not runner.took:
                # A runner that failed before taking anything (it could not
                # reach its dispatcher, say) would fail again: what waits
                # goes in tasks of its own, each ending with its own error.
                self.counted["runner_failures"] += 1
                self.runner_failed = time.monotonic()
                queue = self.queued.get(shape)
                while queue:
                    self._send_task(queue.popleft(), shape)
            rest = [run for run, _ in items.values()]
            items.clear()
            where = runner.where if runner is not None else None
            for run in rest:
                run.info = run.info or where
            ended = await self._lost(rest[0], e) if rest else {}
            for run in rest:
                self._end(run, ended)
        else:
            again = collections.deque[tuple[str, _Run, dict[str, Any]]]()
            for task_id, (run, request) in items.items():
                if run.stop_grace is not None:
                    self._end(run, {"cancelled": True})
                else:
                    run.queued = True
                    again.append((task_id, run, request))
            items.clear()
            self.counted["again"] += len(again)
            queue = self.queued.setdefault(shape, collections.deque())
            queue.extendleft(reversed(again))
        finally:
            if runner is not None:
                self._runner_ended(runner)
            self._release(shape)

    def _results(self, items: _Taken, results: list[Result], shape: Shape) -> None:
        for task_id, result in results:
            taken = items.pop(task_id, None)
            if taken is not None:  # (else ended already: its node was lost)
                self._finish(taken[0], result, shape)

    def _finish(self, run: _Run, result: dict[str, Any], shape: Shape | None) -> None:
        """An attempt's task gave its result."""
        if "error" in result:
            run.info = result
            self._end(run, {"lost": result["error"]})
            return
        run.info = run.info or {"node": result["node"], "ip": result["ip"], "at": result.get("at")}
        if result.get("code") == _KILLED and not result.get("oom") and run.stop_grace is None:
            # SIGKILLed, and not by shoal: a Ray worker kills its children as
            # it exits, as it does when its raylet dies, and can still send
            # their results on its way out. An attempt whose node is gone
            # ended with its host, not with an exit code.
            asyncio.get_running_loop().create_task(self._finish_killed(run, result, shape))
            return
        self._ran(shape, result)
        self._end(run, result)

    async def _finish_killed(self, run: _Run, result: dict[str, Any], shape: Shape | None) -> None:
        node = str(result["node"])
        alive = True
        # Looked at again for a while: the result can come (over the runner's
        # channel, within a millisecond) before the raylet that was killed
        # first has closed its port, once the job has been SIGKILLed.
        for pause in _KILLED_LOOKS:
            await asyncio.sleep(pause)
            try:
                alive = await self._node_alive(node)
            except Exception:
                alive = True  # (the cluster cannot say: the exit stands)
            if not alive:
                break
        if alive:
            self._ran(shape, result)
            self._end(run, result)
        else:
            self._end(run, {"node_lost": node})

    def _ran(self, shape: Shape | None, result: dict[str, Any]) -> None:
        """Count the attempt's run time in its shape's recent ones."""
        if shape is not None and isinstance(result.get("at"), int):
            recent = self.run_ms.setdefault(shape, collections.deque(maxlen=_RUN_MS_SAMPLES))
            recent.append(float(result["ended_at"] - result["at"]))

    def _end(self, run: _Run, exit_: dict[str, Any]) -> None:
        run.exit = exit_
        if not run.began.is_set():
            run.info = run.info or {"error": exit_.get("lost") or "did not start"}
            run.began.set()
        run.stop_or_end.set()
        self._notify()

    def _unqueue(self, task_id: str) -> None:
        for queue in self.queued.values():
            for item in queue:
                if item[0] == task_id:
                    queue.remove(item)
                    return

    async def _lost(self, run: _Run, error: Exception) -> dict[str, Any]:
        """How an attempt whose task failed ended: its node died, or it did."""
        if isinstance(error, ray.exceptions.TaskCancelledError):
            return {"cancelled": True}
        node = (run.info or {}).get("node")
        if node is not None and not await self._node_alive(node):
            return {"node_lost": node}
        return {"lost": f"{type(error).__name__}: {error}"[:1000]}

    async def _node_alive(self, node: str) -> bool:
        # A worker can report its death before the cluster declares its node
        # dead (that takes several missed health checks): a node whose raylet
        # no longer answers is dead already.
        nodes = await asyncio.to_thread(ray.nodes)
        entry = next((n for n in nodes if n["NodeID"] == node), None)
        if entry is None or not entry["Alive"]:
            return False
        return not await asyncio.to_thread(_raylet_gone, entry)


Shape = tuple[float, float, int]  # num_cpus, num_gpus, memory (bytes)


async def receive_message(reader: asyncio.StreamReader, most: int) -> Any:
    """A message of a channel to the dispatcher (`Dispatcher.channel`), of
    at most `most` bytes: a list, packed with msgpack, after its length."""
    size = int.from_bytes(await reader.readexactly(4), "big")
    if size > most:
        raise ConnectionError(f"a message of {size} bytes: no peer of this channel sends one")
    message = msgpack.unpackb(await reader.readexactly(size))
    if not isinstance(message, list) or not message:
        raise ConnectionError("not a message of this channel")
    return message


def send_message(writer: asyncio.StreamWriter, message: Any) -> None:
    writer.write(_framed(message))


def _framed(message: Any) -> bytes:
    """A message of a channel to the dispatcher as sent: its length, then it."""
    data: bytes = msgpack.packb(message)
    return len(data).to_bytes(4, "big") + data


def _shape(request: dict[str, Any]) -> Shape:
    return (request["num_cpus"], request["num_gpus"], request.get("memory") or 0)


def _attempt(task_id: str, request: dict[str, Any]) -> Attempt:
    return (task_id, request["command"], request["environment"], request.get("memory_mib"))


def _shaped(cache: dict[Shape, Any], function: Any, shape: Shape, **extra: Any) -> Any:
    """`function` with `shape`'s options (and `extra`), made once per shape:
    options are costly to apply per call, and a queue's jobs mostly share one."""
    remote = cache.get(shape)
    if remote is None:
        remote = cache[shape] = function.options(**_options(shape), **extra)
    return remote


def _options(shape: Shape) -> dict[str, Any]:
    return {
        "num_cpus": shape[0],
        "num_gpus": shape[1],
        "memory": shape[2] or None,
        "max_retries": 0,
        "retry_exceptions": False,
    }


def _raylet_gone(node: dict[str, Any]) -> bool:
    """True when the node's raylet no longer answers on its port."""
    import socket

    try:
        address = (node["NodeManagerAddress"], int(node["NodeManagerPort"]))
        with socket.create_connection(address, timeout=2):
            return False
    except OSError:
        return True
