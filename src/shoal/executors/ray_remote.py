"""The code of the ray executor that runs inside the Ray cluster.

It is shipped to the cluster by value (cloudpickle), so the cluster's nodes
need Ray and nothing of shoal: this module imports only the standard
library, ray, and `cgroups` (shipped by value too).

Two parts:
- `Dispatcher`, a detached actor (one per shoal installation and cluster).
  It submits each attempt as a Ray task and owns it. Ray kills a task whose
  owner dies, and a driver's tasks die with the driver; owned by a detached
  actor, attempts outlive a shoal server that is killed or restarted, and
  the next one finds them again by task id. It also holds each attempt's
  output until shoal has stored it, and its exit.
- `run_attempt`, the task: starts the command in its own process group
  under a small `sh` reaper, streams its output lines (timestamped on the
  node) to the dispatcher, obeys stop requests (SIGTERM, grace, SIGKILL to
  the group) and reports the exit status.

No orphans: the reaper runs with the parent-death signal set to SIGHUP, on
which it kills its whole process group. When the node's raylet dies its
workers exit (killing their children), and with them every job they ran.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from typing import Any

import ray

from shoal.executors.cgroups import MemoryCgroups

PROTOCOL = 1  # part of the dispatcher's name: a new protocol gets a new dispatcher

# The reaper, run as `sh -c REAPER sh COMMAND...` as the leader of a new
# process group. The command runs in the background so that `wait` (unlike a
# foreground command) is interrupted by a trapped signal: on SIGHUP (its
# parent, the Ray worker, died) the whole group is killed at once. SIGTERM
# and SIGINT sent to the group are for the command: the reaper waits on.
# (A background command starts with SIGINT and SIGQUIT ignored, as POSIX
# wants for `&` without job control; SIGTERM and SIGKILL, which shoal uses,
# are unaffected.)
REAPER = r"""
if [ -n "$1" ]; then echo $$ > "$1/cgroup.procs" || exit 125; fi
shift
trap 'kill -KILL 0' HUP
trap : TERM INT
"$@" &
pid=$!
while :; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || break
done
exit "$rc"
"""

# Ray's worker SIGKILLs its own children when it exits, which a trap cannot
# catch: so the worker's child is this outer shell, and the reaper below it
# gets SIGHUP (`setpriv --pdeathsig`) when the outer shell is killed. Run as
# `sh -c OUTER REAPER CGROUP COMMAND...`.
OUTER = r"""
trap : TERM INT
setpriv --pdeathsig HUP -- sh -c "$0" sh "$@" &
pid=$!
while :; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || break
done
exit "$rc"
"""

_PR_SET_PDEATHSIG = 1
_FLUSH_SECONDS = 0.1  # output lines are sent this often while a job prints
_MAX_BATCH = 1 << 20  # or when this many bytes are waiting
_HELD_LIMIT = 8 << 20  # per attempt, output the dispatcher holds before the job waits
_CONTROL_POLL = 30.0  # a stop request long-poll is renewed this often


def _die_with_parent() -> None:
    """In the reaper, before exec: SIGHUP when the Ray worker that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP, 0, 0, 0)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run_attempt(
    dispatcher: Any,
    task_id: str,
    command: list[str],
    environment: dict[str, str],
    memory_mib: int | None,
) -> int | None:
    """The Ray task of one attempt: run `command`, return its exit status.

    MEMORY is a hard limit where the node lets us make a memory cgroup (as
    with the process executor); else only Ray's scheduling resource."""
    node_id = ray.get_runtime_context().get_node_id()
    ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    workdir = tempfile.mkdtemp(prefix=f"shoal-{task_id}-")
    cgroups = MemoryCgroups("shoal-ray", sweep=False) if memory_mib else None
    cgroup = cgroups.create(task_id, memory_mib) if cgroups and memory_mib else None
    try:
        if shutil.which("setpriv"):
            argv = ["sh", "-c", OUTER, REAPER, str(cgroup or ""), *command]
        else:  # util-linux before 2.33: orphans possible if the worker is SIGKILLed
            argv = ["sh", "-c", REAPER, "sh", str(cgroup or ""), *command]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=environment,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except OSError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        if cgroups is not None:
            cgroups.remove(cgroup)
        ray.get(dispatcher.begun.remote(task_id, {"node": node_id, "ip": ip, "error": str(e)}))
        return None
    ray.get(dispatcher.begun.remote(task_id, {"node": node_id, "ip": ip, "pid": proc.pid}))
    done = threading.Event()
    controller = threading.Thread(
        target=_obey_stops, args=(dispatcher, task_id, proc, done), daemon=True
    )
    controller.start()
    sender = _Sender(dispatcher, task_id)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            sender.add(_now_ms(), raw.decode("utf-8", "replace").rstrip("\n"))
        code = proc.wait()
    finally:
        done.set()
        sender.close()
        shutil.rmtree(workdir, ignore_errors=True)
    oom = cgroups is not None and cgroups.oom_killed(cgroup)
    if cgroups is not None:
        cgroups.remove(cgroup)
    ray.get(dispatcher.ended.remote(task_id, code, oom))
    return code


def _obey_stops(dispatcher: Any, task_id: str, proc: subprocess.Popen[bytes], done: Any) -> None:
    """Wait for a stop request (long-polling the dispatcher), then stop the
    process group: SIGTERM, the grace period, SIGKILL."""
    while not done.is_set():
        try:
            grace = ray.get(dispatcher.control.remote(task_id, _CONTROL_POLL))
        except Exception:
            if done.wait(1.0):
                return
            continue
        if grace is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if done.wait(float(grace)) or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


class _Sender:
    """Batches output lines to the dispatcher from a thread of its own; the
    job waits (its pipe fills) while too much is unsent."""

    def __init__(self, dispatcher: Any, task_id: str) -> None:
        self._dispatcher = dispatcher
        self._task_id = task_id
        self._lines: list[tuple[int, str]] = []
        self._bytes = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, timestamp: int, line: str) -> None:
        with self._cond:
            while self._bytes > _MAX_BATCH * 4 and not self._closed:
                self._cond.wait()
            self._lines.append((timestamp, line))
            self._bytes += len(line) + 16
            if self._bytes > _MAX_BATCH:
                self._cond.notify_all()

    def close(self) -> None:
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
                    ray.get(self._dispatcher.output.remote(self._task_id, batch))
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
        self.changed = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.stop_grace: float | None = None
        self.stop_requested = asyncio.Event()
        self.group: str | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Dispatcher:
    """Owns the attempts' tasks; shoal calls it, and so do the tasks."""

    def __init__(self) -> None:
        self.incarnation = uuid.uuid4().hex
        self.runs: dict[str, _Run] = {}
        self.refused: set[str] = set()  # task ids a recovering engine declared never started
        self.groups: dict[str, tuple[Any, set[str]]] = {}  # placement groups of multi-node jobs

    # -- called by shoal ------------------------------------------------------
    async def launch(self, task_id: str, request: dict[str, Any]) -> str:
        """Submit the attempt (once: a second launch of a task id is ignored)."""
        if task_id in self.runs or task_id in self.refused:
            return self.incarnation
        run = _Run()
        self.runs[task_id] = run
        options: dict[str, Any] = {
            "num_cpus": request["num_cpus"],
            "num_gpus": request["num_gpus"],
            "max_retries": 0,
            "retry_exceptions": False,
            "name": f"shoal-{task_id}",
        }
        if request.get("memory"):
            options["memory"] = request["memory"]
        group = request.get("group")
        if group is not None:
            pg = await self._placement_group(group, request["bundles"])
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=request["bundle"]
            )
            self.groups[group][1].add(task_id)
            run.group = group
        me = ray.get_runtime_context().current_actor
        run.ref = (
            ray.remote(run_attempt)
            .options(**options)
            .remote(
                me,
                task_id,
                request["command"],
                request["environment"],
                request.get("memory_mib"),
            )
        )
        asyncio.get_running_loop().create_task(self._watch(task_id, run))
        return self.incarnation

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

    async def started(self, task_id: str) -> dict[str, Any]:
        """Where the attempt runs, once it does (or how it failed to start)."""
        run = self.runs.get(task_id)
        if run is None:
            return {"error": "unknown attempt"}
        await run.began.wait()
        assert run.info is not None
        return run.info

    async def read(self, task_id: str, after: int, timeout: float) -> dict[str, Any]:
        """Output after chunk `after` (everything up to it is stored by shoal
        and dropped here) and the exit once all output is read; waits up to
        `timeout` seconds for either."""
        run = self.runs.get(task_id)
        if run is None:
            return {"gone": True}
        while run.chunks and run.chunks[0][0] <= after:
            _, lines = run.chunks.popleft()
            run.held -= sum(len(line) + 16 for _, line in lines)
        if run.held < _HELD_LIMIT:
            run.room.set()
        if not run.chunks and run.exit is None:
            changed = run.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        chunks = list(run.chunks)
        return {
            "chunks": chunks,
            "exit": run.exit if not chunks else None,
            "info": run.info,
        }

    async def stop(self, task_id: str, grace: float) -> None:
        run = self.runs.get(task_id)
        if run is None or run.exit is not None:
            return
        if run.info is None:
            # Not started yet: it never will.
            ray.cancel(run.ref, force=False)
        if run.stop_grace is None:
            run.stop_grace = grace
            run.stop_requested.set()

    async def recover(self, task_id: str) -> dict[str, Any] | None:
        """For an engine that died between placing and launching: the
        attempt's state if it was launched; else it is refused for good."""
        run = self.runs.get(task_id)
        if run is None:
            self.refused.add(task_id)
            return None
        return {"incarnation": self.incarnation, "info": run.info}

    async def forget(self, task_id: str) -> None:
        run = self.runs.pop(task_id, None)
        if run is None or run.group is None:
            return
        pg, members = self.groups.get(run.group, (None, set()))
        members.discard(task_id)
        if not members and pg is not None:
            from ray.util.placement_group import remove_placement_group

            del self.groups[run.group]
            remove_placement_group(pg)

    async def identity(self) -> str:
        return self.incarnation

    # -- called by the tasks --------------------------------------------------
    async def begun(self, task_id: str, info: dict[str, Any]) -> None:
        run = self.runs.get(task_id)
        if run is not None:
            run.info = info
            run.began.set()
            run.notify()

    async def output(self, task_id: str, lines: list[tuple[int, str]]) -> None:
        run = self.runs.get(task_id)
        if run is None:
            return
        run.seq += 1
        run.chunks.append((run.seq, lines))
        run.held += sum(len(line) + 16 for _, line in lines)
        run.notify()
        if run.held >= _HELD_LIMIT:
            run.room.clear()
            await run.room.wait()

    async def control(self, task_id: str, timeout: float) -> float | None:
        """The grace period once a stop is requested; None after `timeout`."""
        run = self.runs.get(task_id)
        if run is None:
            return 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.stop_requested.wait(), timeout)
        return run.stop_grace

    async def ended(self, task_id: str, code: int, oom: bool = False) -> None:
        run = self.runs.get(task_id)
        if run is not None and run.exit is None:
            run.exit = {"code": code, "oom": oom}
            run.notify()

    # -- inside ---------------------------------------------------------------
    async def _watch(self, task_id: str, run: _Run) -> None:
        try:
            await run.ref
        except Exception as e:
            if run.exit is None:
                run.exit = await self._lost(run, e)
        if run.exit is None:  # returned without reporting (cannot happen; be safe)
            run.exit = {"lost": "the attempt's task ended without an exit status"}
        if not run.began.is_set():
            run.info = run.info or {"error": run.exit.get("lost") or "did not start"}
            run.began.set()
        run.notify()

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


def _raylet_gone(node: dict[str, Any]) -> bool:
    """True when the node's raylet no longer answers on its port."""
    import socket

    try:
        address = (node["NodeManagerAddress"], int(node["NodeManagerPort"]))
        with socket.create_connection(address, timeout=2):
            return False
    except OSError:
        return True
