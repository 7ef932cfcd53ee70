"""The ray executor: attempts run as Ray tasks on an existing Ray cluster.

A compute environment tagged `shoal:executor=ray` runs its jobs on the
cluster named by its `shoal:ray-address` tag (`HOST:PORT` of the cluster's
GCS, or `ray://HOST:PORT` for Ray Client), or the server's `--ray-address`.
One engine connects to one cluster (Ray allows one connection per process).

Each attempt is one Ray task (`num_cpus`, `memory`, `num_gpus` from the
job's requirements; Ray's own retries off: shoal's retry rules decide),
submitted and owned by a detached dispatcher actor (see `ray_remote.py`),
so attempts outlive a restarted or killed shoal server, which finds them
again by task id. (A stream of short attempts of one shape goes to
runners, tasks that each run a few at a time until the stream ends: see
`ray_remote.run_runner`.) Output comes back through the dispatcher while
the job runs, into shoal's log store; how much of it is stored already is
kept in a small file per attempt, so a reattaching server neither loses
nor repeats lines.

An attempt whose node dies ends as AWS ends an attempt whose instance went
away: no exit code, statusReason `Host EC2 (instance <node id>) terminated.`,
so `evaluateOnExit` rules for Spot interruptions apply.

MEMORY is Ray's `memory` resource (the job goes to a node with that much
free) and, where the node lets the task make a memory cgroup, a hard limit
as with the process executor (exit 137 and AWS's OutOfMemoryError reason).

A compute environment also tagged `shoal:ray-container=docker` runs each job
that has an image in a container on its node (the node's docker: host
networking, the job's environment, a CPU quota and a hard memory limit), as
the docker executor does on this host; jobs without an image run as
processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.engine.capacity import Capacity, Limits
from shoal.executors.base import (
    FAILED_TO_START,
    OOM_REASON,
    Exit,
    Handle,
    LaunchError,
    LaunchSpec,
)
from shoal.executors.mounts import bind_mounts
from shoal.logs.store import Event, LogStore

log = logging.getLogger("shoal.executors.ray")

ADDRESS_TAG = "shoal:ray-address"
# `docker`: a job with an image runs in a container on its Ray node.
CONTAINER_TAG = "shoal:ray-container"
_REASONS = (
    "CannotStartContainerError:",
    "CannotPullContainerError:",
    "CannotInspectContainerError:",
)
_READ_WAIT = 10.0  # seconds a read of an attempt's output waits for news
# After a poll that brought news, while attempts are in flight, the next
# waits this long: the engine has recorded the exits and placed the jobs they
# made room for by then, the poll carries their launches (and the attempts to
# forget) in the same call, and it finds more news waiting. Calls to the
# dispatcher are most of its cost per job, and the jobs queued in Ray keep
# the cluster busy meanwhile. (Measured on 4 CPUs: 2 ms gave 104-178 jobs/s,
# 10 ms 139-204, 20 ms 141-150.)
_POLL_GAP = 0.010
# Attempts launched while a poll is out wait this long for it to come back
# (on a busy cluster it does within a few ms: any attempt's end is news), so
# that the next poll carries them; only then do they go in a call of their
# own (a call to the dispatcher costs it about as much as a short job).
_SUBMIT_WAIT = 0.005
_CAPACITY_POLL = 2.0  # how often the cluster's resources are read
# A poll on the link to the dispatcher (`_Link`) answers within _READ_WAIT;
# one unanswered this much longer finds the link broken (its far end gone
# without a word, as a machine that vanished from the network is). Opening
# the link, and asking the dispatcher whether it lives, wait as long.
_LINK_SLACK = 30.0
_MIB = 1 << 20


def host_lost(node: str) -> str:
    return f"Host EC2 (instance {node}) terminated."


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        logs: LogStore,
        *,
        state_dir: Path,
        installation: str,
        default_address: str | None = None,
        node_ip: str | None = None,
        allowed_roots: list[Path] | None = None,
        allow_privileged: bool = False,
    ) -> None:
        """`installation` names this shoal's dispatcher on the cluster (one
        per store, so engines taking over from each other share it).
        `allowed_roots` and `allow_privileged` are the docker executor's
        rules, for jobs run in containers on the nodes."""
        self.logs = logs
        self.allowed_roots = [p.resolve() for p in allowed_roots or []]
        self.allow_privileged = allow_privileged
        self.state_dir = state_dir
        self.installation = installation
        self.default_address = default_address
        self.node_ip = node_ip
        # Called (on the event loop) when the cluster's resources change.
        self.on_capacity: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._address: str | None = None
        self._dispatcher: Any = None
        self._error: str | None = None
        self._connecting = False
        self._capacity: Capacity | None = None
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._forgotten: list[str] = []
        self._launches: list[tuple[str, dict[str, Any]]] = []
        self._follows: dict[str, _Follow] = {}
        self._pump: asyncio.Future[None] | None = None
        self._pump_gap = False  # the pump's next poll is about to go
        # The pump's link to the dispatcher, opened by its first poll (None:
        # it cannot be, and the pump polls in Ray calls).
        self._link: tuple[Any, _Link | None] | None = None
        self._background: set[asyncio.Future[None]] = set()

    # -- the cluster ----------------------------------------------------------
    def address_of(self, tags: dict[str, str]) -> str | None:
        return tags.get(ADDRESS_TAG) or self.default_address

    def _connect(self, address: str) -> Any:
        """The dispatcher on the cluster at `address`, connecting first if
        needed (blocking: call it off the event loop)."""
        with self._lock:
            if self._address is not None:
                if address != self._address:
                    raise LaunchError(
                        f"CannotStartContainerError: this shoal engine is connected to the Ray "
                        f"cluster at {self._address}; it cannot also use {address} (one engine, "
                        "one Ray cluster)"
                    )
                if self._dispatcher is None:
                    self._dispatcher = self._make_dispatcher()
                return self._dispatcher
            try:
                import ray
            except ImportError as e:
                self._error = "Ray is not installed with this shoal (pip install 'shoal[ray]')"
                raise LaunchError(f"CannotStartContainerError: {self._error}") from e

            from shoal.executors import cgroups, ray_remote, which

            # Shipped by value: the cluster's nodes need not have shoal installed.
            for module in (ray_remote, cgroups, which):
                ray.cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
            options: dict[str, Any] = {
                "address": address,
                "namespace": ray_remote.NAMESPACE,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            node_ip = self.node_ip or _loopback_host(address)
            if node_ip is not None:
                # Ray would otherwise attach this driver by the machine's
                # external address, which a cluster on loopback does not use.
                options["_node_ip_address"] = node_ip
            try:
                # ray.init retries an absent cluster for ever: look first.
                _reachable(address)
                ray.init(**options)
                dispatcher = self._make_dispatcher()
            except Exception as e:
                with contextlib.suppress(Exception):
                    ray.shutdown()
                self._error = f"the Ray cluster at {address} cannot be reached: {e}"[:500]
                raise LaunchError(f"CannotStartContainerError: {self._error}") from e
            self._address, self._dispatcher, self._error = address, dispatcher, None
            threading.Thread(target=self._watch_capacity, daemon=True).start()
            log.info("connected to the Ray cluster at %s", address)
            return dispatcher

    def _make_dispatcher(self) -> Any:
        """This installation's dispatcher: the one running, or a new one on
        the node this engine is attached to (the head node, usually, whose
        loss is the cluster's), never on a node that may come and go."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from shoal.executors import ray_remote

        here = ray.get_runtime_context().get_node_id()
        name = f"shoal-dispatcher-{self.installation}-v{ray_remote.PROTOCOL}"
        dispatcher = (
            ray.remote(ray_remote.Dispatcher)
            .options(
                name=name,
                namespace=ray_remote.NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_concurrency=100_000,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
            .remote()
        )
        ray.get(dispatcher.identity.remote(), timeout=60)  # type: ignore[attr-defined]
        return dispatcher

    def _dispatcher_died(self, dispatcher: Any) -> None:
        """A call found the dispatcher dead: the next use makes a new one."""
        with self._lock:
            if self._dispatcher is dispatcher:
                self._dispatcher = None

    async def _dispatcher_for(self, address: str) -> Any:
        if self._address == address and self._dispatcher is not None:
            return self._dispatcher
        return await asyncio.to_thread(self._connect, address)

    def capacity(self, tags: dict[str, str]) -> Capacity | str:
        """The cluster's resources, or why they are not known (yet): the
        first call starts connecting in the background."""
        address = self.address_of(tags)
        if address is None:
            return f"it has no Ray cluster (tag it {ADDRESS_TAG}=HOST:PORT)"
        if self._address is not None and address != self._address:
            return f"this engine is connected to the Ray cluster at {self._address}"
        if self._capacity is not None:
            return self._capacity
        if not self._connecting:
            self._connecting = True
            self._loop = asyncio.get_running_loop()
            threading.Thread(target=self._connect_quietly, args=(address,), daemon=True).start()
        return self._error or f"shoal is connecting to the Ray cluster at {address}"

    def _connect_quietly(self, address: str) -> None:
        try:
            self._connect(address)
        except LaunchError:
            self._notify()  # the reason changed
        finally:
            self._connecting = False

    def _watch_capacity(self) -> None:
        import ray

        while not self._closed.is_set():
            try:
                seen = _capacity_of(ray.nodes())  # type: ignore[no-untyped-call]
            except Exception as e:
                log.warning("reading the Ray cluster's resources failed: %s", e)
                seen = None
            if seen is not None and (
                self._capacity is None
                or (seen.total, seen.biggest) != (self._capacity.total, self._capacity.biggest)
            ):
                self._capacity = seen
                self._notify()
            self._closed.wait(_CAPACITY_POLL)

    def _notify(self) -> None:
        loop, callback = self._loop, self.on_capacity
        if loop is not None and callback is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    # -- the Executor interface -----------------------------------------------
    def launch(self, spec: LaunchSpec) -> Awaitable[Handle]:
        return self._launch(spec)

    def _container(self, spec: LaunchSpec) -> dict[str, Any]:
        """How the node runs the job's container: the docker executor's
        rules for privilege and host paths, checked here, before the task."""
        props: dict[str, Any] = spec.options.get("container") or {}
        if props.get("privileged") and not self.allow_privileged:
            raise LaunchError(
                "CannotStartContainerError: privileged containers are not allowed on this server"
            )
        return {
            "image": spec.image,
            "job": spec.job_id,
            "vcpus": spec.vcpus,
            "user": spec.user,
            "privileged": bool(props.get("privileged")),
            "mounts": [
                [m.source, m.target, m.read_only] for m in bind_mounts(props, self.allowed_roots)
            ],
        }

    async def _launch(self, spec: LaunchSpec) -> Handle:
        self._loop = asyncio.get_running_loop()
        address = self.address_of(spec.options.get("ceTags") or {})
        if address is None:
            raise LaunchError(
                "CannotStartContainerError: the compute environment names no Ray cluster: tag it "
                f"{ADDRESS_TAG}=HOST:PORT, or start the server with --ray-address"
            )
        tags = spec.options.get("ceTags") or {}
        in_container = bool(spec.image) and tags.get(CONTAINER_TAG, "").lower() == "docker"
        if not spec.command and not in_container:
            raise LaunchError("CannotStartContainerError: the job has no command")
        dispatcher = await self._dispatcher_for(address)
        request: dict[str, Any] = {
            "command": spec.command,
            "environment": spec.environment,
            "num_cpus": spec.vcpus,
            "num_gpus": spec.gpus,
            "memory": (spec.memory_mib or 0) * _MIB,
            "memory_mib": spec.memory_mib,
        }
        if in_container:
            request["container"] = self._container(spec)
        multinode = spec.options.get("multinode")
        if multinode is not None:
            request["group"] = multinode["group"]
            request["bundle"] = int(multinode["index"])
            request["bundles"] = [_bundle(b) for b in multinode["bundles"]]
        follow = self._follow(
            dispatcher, spec.task_id, spec.log_group, spec.log_stream, submitting=True
        )
        self._launches.append((spec.task_id, request))
        if len(self._launches) == 1:
            # One call for the attempts launched in one turn of the loop.
            asyncio.get_running_loop().call_soon(self._submit, dispatcher)
        info = await follow.began
        if "error" in info:
            self._follows.pop(spec.task_id, None)
            self._forget_later(spec.task_id)
            error = str(info["error"])
            if not error.startswith(_REASONS):
                error = f"CannotStartContainerError: {error}"
            raise LaunchError(error[:255])
        self.logs.create_stream(spec.log_group, spec.log_stream)
        handle: Handle = {
            "task": spec.task_id,
            "group": spec.log_group,
            "stream": spec.log_stream,
            "address": address,
            "incarnation": info.get("incarnation", ""),
            "node": info["node"],
            "ip": info["ip"],
        }
        if isinstance(info.get("at"), int):
            handle["startedAt"] = info["at"]  # when it began on its node
        return handle

    def _take_launches(self) -> list[tuple[str, dict[str, Any]]]:
        batch, self._launches = self._launches, []
        for task, _ in batch:
            if (follow := self._follows.get(task)) is not None:
                follow.submitted = True  # polls ask about it from now on
        return batch

    def _submit(self, dispatcher: Any, *, waited: bool = False) -> None:
        if self._pump_gap or not self._launches:
            return  # the next poll, about to go, carries them
        if self._pump is not None and not waited:
            asyncio.get_running_loop().call_later(
                _SUBMIT_WAIT, functools.partial(self._submit, dispatcher, waited=True)
            )
            return
        batch = self._take_launches()
        ref = dispatcher.submit.remote(batch)

        async def submitted() -> None:
            try:
                await ref
            except Exception as e:
                self._dispatcher_died(dispatcher)
                for task, _ in batch:
                    follow = self._follows.get(task)
                    if follow is not None and not follow.began.done():
                        follow.began.set_result({"error": f"the Ray dispatcher failed: {e}"})

        pending = asyncio.ensure_future(submitted())
        self._background.add(pending)
        pending.add_done_callback(self._background.discard)

    def _follow(
        self, dispatcher: Any, task: str, group: str, stream: str, *, submitting: bool = False
    ) -> _Follow:
        """Follow an attempt's news (where it runs, output, exit) through
        the one `poll` call this executor keeps open."""
        follow = self._follows.get(task)
        if follow is None:
            loop = asyncio.get_running_loop()
            follow = _Follow(
                group=group,
                stream=stream,
                seq=self._stored(task),
                began=loop.create_future(),
                ended=loop.create_future(),
                submitted=submitting is False,
            )
            self._follows[task] = follow
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._run_pump(dispatcher))
        return follow

    async def _run_pump(self, dispatcher: Any) -> None:
        news: dict[str, Any] = {}
        try:
            while any(not f.ended.done() for f in self._follows.values()):
                if news:
                    self._pump_gap = True
                    try:
                        await asyncio.sleep(_POLL_GAP)
                    finally:
                        self._pump_gap = False
                launches = self._take_launches()
                forgotten, self._forgotten = self._forgotten, []
                interest = {
                    task: [f.seq, f.began.done()]
                    for task, f in self._follows.items()
                    if f.submitted and not f.ended.done()
                }
                try:
                    link = await self._link_to(dispatcher)
                    if link is None:
                        news = await dispatcher.poll.remote(
                            interest, _READ_WAIT, launches, forgotten
                        )
                    else:
                        news = await self._poll_on(link, dispatcher, interest, launches, forgotten)
                except Exception as e:
                    # The dispatcher is gone (its node died, or it was
                    # killed): the attempts it owned went with it.
                    log.warning("the Ray dispatcher is gone (%s): its attempts are lost", e)
                    self._dispatcher_died(dispatcher)
                    for lost in self._follows.values():
                        lost.lose(f"the Ray dispatcher died: {e}")
                    return
                for task, item in news.items():
                    if (follow := self._follows.get(task)) is not None:
                        self._take(task, follow, item)
        finally:
            self._pump = None
            if any(not f.ended.done() for f in self._follows.values()):
                self._pump = asyncio.ensure_future(self._run_pump(dispatcher))
            else:
                self._forget()

    async def _link_to(self, dispatcher: Any) -> _Link | None:
        """The pump's link to `dispatcher`, opened on first use; None where
        this engine cannot reach the socket the dispatcher listens on (Ray
        Client, say), so that it polls in Ray calls."""
        if self._link is not None and self._link[0] is dispatcher:
            return self._link[1]
        if self._link is not None and self._link[1] is not None:
            self._link[1].close()
        try:
            link: _Link | None = await _Link.open(dispatcher)
        except (OSError, TimeoutError, ValueError) as e:
            log.warning("polling the Ray dispatcher in Ray calls: its socket: %s", e)
            link = None
        self._link = (dispatcher, link)
        return link

    async def _poll_on(
        self,
        link: _Link,
        dispatcher: Any,
        interest: dict[str, list[Any]],
        launches: list[tuple[str, dict[str, Any]]],
        forgotten: list[str],
    ) -> dict[str, Any]:
        """A poll on the link. A link that breaks while the dispatcher still
        answers Ray calls is opened anew by the next poll, which carries
        these launches and forgets again (both are idempotent); a dispatcher
        that does not answer is gone (the error is raised)."""
        try:
            return await asyncio.wait_for(
                link.poll(interest, _READ_WAIT, launches, forgotten), _READ_WAIT + _LINK_SLACK
            )
        except (OSError, EOFError, TimeoutError) as broken:  # (not a poll that fails there)
            link.close()
            if self._link is not None and self._link[1] is link:
                self._link = None
            await asyncio.wait_for(dispatcher.identity.remote(), _LINK_SLACK)
            log.warning("the link to the Ray dispatcher broke (%r): opening it again", broken)
            self._launches[:0] = launches
            self._forgotten[:0] = forgotten
            return {}

    def _take(self, task: str, follow: _Follow, item: dict[str, Any]) -> None:
        if item.get("gone"):
            follow.lose("the Ray dispatcher does not know the attempt")
            return
        info = item.get("info")
        if info is not None and not follow.began.done():
            follow.node = str(info.get("node") or follow.node)
            follow.began.set_result(info)
        chunks = item.get("chunks") or []
        for number, lines in chunks:
            events = [Event(int(stamp), line) for stamp, line in lines]
            self.logs.append(follow.group, follow.stream, events)
            follow.seq = int(number)
        if chunks:
            self._store(task, follow.seq)
        ended = item.get("exit")
        if ended is not None and not follow.ended.done():
            if not follow.began.done():
                follow.began.set_result({"error": str(ended.get("lost") or "did not start")})
            follow.ended.set_result(ended)

    async def wait(self, handle: Handle) -> Exit:
        self._loop = asyncio.get_running_loop()
        task = str(handle["task"])
        node = str(handle.get("node") or "unknown")
        try:
            dispatcher = await self._dispatcher_for(str(handle["address"]))
        except LaunchError as e:
            return Exit(exit_code=None, reason=e.reason[:255], status_reason=host_lost(node))
        follow = self._follow(dispatcher, task, str(handle["group"]), str(handle["stream"]))
        if not follow.began.done():
            follow.began.set_result({"node": node})  # known: it was launched
        follow.node = node if follow.node == "unknown" else follow.node
        try:
            ended = await follow.ended
        finally:
            self._follows.pop(task, None)
        return _exit_of(ended, follow.node)

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        try:
            dispatcher = await self._dispatcher_for(str(handle["address"]))
            await dispatcher.stop.remote(str(handle["task"]), grace_seconds)
        except Exception as e:
            log.warning("stopping job task %s on Ray failed: %s", handle["task"], e)

    def home(self) -> dict[str, str]:
        return {"ray": self._address or self.default_address or ""}

    def recover(self, spec: LaunchSpec, home: dict[str, str] | None = None) -> Handle | None:
        address = self.address_of(spec.options.get("ceTags") or {}) or (home or {}).get("ray")
        if not address:
            return None  # no cluster: it cannot have started
        import ray

        try:
            dispatcher = self._connect(address)
            state = ray.get(dispatcher.recover.remote(spec.task_id), timeout=60)
        except Exception as e:
            # Whether it started is unknown: it is not started again, and
            # waiting on it decides (as lost, if the cluster stays away).
            log.warning("cannot ask the Ray cluster about task %s: %s", spec.task_id, e)
            state = {"incarnation": "", "info": None}
        if state is None:
            return None
        info = state.get("info") or {}
        return {
            "task": spec.task_id,
            "group": spec.log_group,
            "stream": spec.log_stream,
            "address": address,
            "incarnation": state.get("incarnation", ""),
            "node": info.get("node"),
            "ip": info.get("ip"),
        }

    def release(self, handle: Handle) -> None:
        task = str(handle["task"])
        with contextlib.suppress(OSError):
            (self.state_dir / f"{task}.seq").unlink()
        self._forget_later(task)

    def _forget_later(self, task: str) -> None:
        # One call for the attempts released in one turn of the loop.
        self._forgotten.append(task)
        if len(self._forgotten) == 1 and self._loop is not None:
            self._loop.call_soon(self._forget)
        elif self._loop is None:
            self._forget()

    def _forget(self, *, now: bool = False) -> None:
        if self._pump is not None and not now:
            return  # the pump's next poll carries them
        tasks, self._forgotten = self._forgotten, []
        if self._dispatcher is not None and tasks:
            with contextlib.suppress(Exception):
                self._dispatcher.forget.remote(tasks)

    def close(self) -> None:
        self._closed.set()
        self._forget(now=True)  # what the pump would have carried

    # -- how much output is stored --------------------------------------------
    def _stored(self, task: str) -> int:
        try:
            return int((self.state_dir / f"{task}.seq").read_text())
        except (OSError, ValueError):
            return 0

    def _store(self, task: str, seq: int) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"{task}.seq"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(seq))
        tmp.replace(path)


@dataclass(slots=True)
class _Follow:
    """What this executor knows of an attempt it follows."""

    group: str
    stream: str
    seq: int  # the last output chunk stored
    began: asyncio.Future[dict[str, Any]]  # where it runs, or {"error": ...}
    ended: asyncio.Future[dict[str, Any]]  # how it ended
    node: str = "unknown"
    submitted: bool = True  # False while its launch waits to be sent

    def lose(self, why: str) -> None:
        if not self.began.done():
            self.began.set_result({"error": why})
        if not self.ended.done():
            self.ended.set_result({"node_lost": self.node})


class _Link:
    """The pump's connection to the dispatcher's socket (`Dispatcher.channel`
    in ray_remote), for its polls: a poll there costs the dispatcher and
    this engine a tenth of what a Ray call does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from shoal.executors import ray_remote  # (Ray is imported with it: once connected)

        self._reader = reader
        self._writer = writer
        self._send = ray_remote.send_message
        self._receive = ray_remote.receive_message
        self._most = ray_remote.MAX_MESSAGE

    @staticmethod
    async def open(dispatcher: Any) -> _Link:
        host, port, token = await asyncio.wait_for(dispatcher.channel.remote(), _LINK_SLACK)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _LINK_SLACK)
        link = _Link(reader, writer)
        link._send(writer, ["shoal", token, ""])
        return link

    async def poll(
        self,
        interest: dict[str, list[Any]],
        timeout: float,
        launches: list[tuple[str, dict[str, Any]]],
        forgotten: list[str],
    ) -> dict[str, Any]:
        self._send(self._writer, ["poll", interest, timeout, launches, forgotten])
        kind, news = await self._receive(self._reader, self._most)
        if kind == "error":  # the poll failed there
            raise RuntimeError(f"the Ray dispatcher's poll failed: {news}")
        if kind != "news":
            raise RuntimeError(f"the Ray dispatcher answered a poll with {kind!r}")
        return dict(news)

    def close(self) -> None:
        self._writer.close()


def _exit_of(ended: dict[str, Any], node: str) -> Exit:
    if "code" in ended:
        code = int(ended["code"])
        at = ended.get("ended_at")
        return Exit(
            exit_code=code,
            reason=OOM_REASON if ended.get("oom") else None,
            ended_at=at if isinstance(at, int) else None,
        )
    if "node_lost" in ended:
        return Exit(exit_code=None, status_reason=host_lost(str(ended["node_lost"])))
    if ended.get("cancelled"):
        return Exit(
            exit_code=None,
            reason="CannotStartContainerError: stopped before it started",
            status_reason=FAILED_TO_START,
        )
    return Exit(exit_code=None, reason=f"CannotInspectContainerError: {ended.get('lost')}"[:255])


def _bundle(need: dict[str, Any]) -> dict[str, float]:
    bundle = {"CPU": float(need.get("vcpus") or 1.0)}
    if need.get("memory_mib"):
        bundle["memory"] = float(need["memory_mib"]) * _MIB
    if need.get("gpus"):
        bundle["GPU"] = float(need["gpus"])
    return bundle


# The least an UNMANAGED compute environment keeps waiting in Ray's queue, in
# vCPUs: room for Ray's own pending lease requests (ten per task shape); and
# while its attempts run short, what a few hundred jobs a second free during a
# round trip to the engine (at 20, runners of `true` ran dry for a third of
# the time, waiting for the engine to place the next jobs).
_QUEUED_VCPUS = 20.0
_QUEUED_SHORT_VCPUS = 60.0


def _capacity_of(nodes: list[dict[str, Any]]) -> Capacity:
    alive = [n.get("Resources") or {} for n in nodes if n.get("Alive")]

    def limits(resources: list[dict[str, float]]) -> Limits:
        return Limits(
            vcpus=sum(r.get("CPU", 0.0) for r in resources),
            memory_mib=int(sum(r.get("memory", 0.0) for r in resources) // _MIB),
            gpus=int(sum(r.get("GPU", 0.0) for r in resources)),
        )

    biggest = Limits(
        vcpus=max((r.get("CPU", 0.0) for r in alive), default=0.0),
        memory_mib=int(max((r.get("memory", 0.0) for r in alive), default=0.0) // _MIB),
        gpus=int(max((r.get("GPU", 0.0) for r in alive), default=0.0)),
    )
    total = limits(alive)

    # Ray queues tasks beyond its free resources, and the owner of a task that
    # ends gives its worker the next task of the same shape at once, with no
    # new lease from a raylet (which can cost more than the task). So keep a
    # queue as deep as the cluster is wide, and never shallower than what
    # arrives while a freed slot's news travels to the engine and back.
    def deeper(queued: float) -> Limits:
        factor = 1 + max(1.0, queued / total.vcpus) if total.vcpus > 0 else 2.0
        return Limits(
            vcpus=total.vcpus * factor,
            memory_mib=None if total.memory_mib is None else int(total.memory_mib * factor),
            gpus=None if total.gpus is None else int(total.gpus * factor),
        )

    return Capacity(total, biggest, deeper(_QUEUED_VCPUS), deeper(_QUEUED_SHORT_VCPUS))


def _reachable(address: str) -> None:
    """Raise OSError unless something listens at the cluster's address."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
        pass


def _loopback_host(address: str) -> str | None:
    """The host of a GCS address on loopback (where this driver must attach)."""
    if "://" in address:
        return None
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None
