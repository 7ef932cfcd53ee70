"""Multi-node parallel jobs: one attempt, a gang of nodes.

A multinode job is one engine attempt (the parent job's), placed like any job
on one compute environment, holding the sum of its nodes' resources while it
runs. For that attempt a `Gang` stands in for the compute environment's
executor: the engine launches, waits for, stops and releases the gang as it
does a container, and the gang does it to every node.

AWS's rules, and how they are kept here:
- the main node starts first; the others start once it runs (they are told
  its address): the gang launches the main node, and the others once its
  launch resolved;
- the main node decides: its exit is the attempt's exit (retry rules, status
  reason, exit code of the parent); when it exits the other nodes are
  stopped. A non-main node that ends early changes nothing else;
- timeout, TerminateJob and retries apply to the whole job (a new attempt
  starts the whole group again);
- each node is a job of its own, `<jobId>#<n>` (a child row of the parent),
  SUCCEEDED or FAILED by its own exit code, with its own attempts, task id and
  log stream. Node rows are written in the engine transaction that marks the
  parent RUNNING and in the one that records its exit; a non-main node that
  ends before the main node is recorded as it ends, in a transaction of its
  own. They are never queued (never SUBMITTED, PENDING or RUNNABLE), so nothing
  but this module moves them.

TerminateJob on a node id: the main node is the job, so terminating it
terminates the job; any other node is stopped alone (FAILED with the reason,
`isTerminated`), as if it had died. CancelJob on a node does nothing (a node
exists only once the job runs, and a running job is not cancelled).

The gang's handle is JSON, persisted by the engine like any handle:
`{"multinode": true, "main": m, "nodes": {"0": handle0, ...}, "group", "stream"}`
(`group` and `stream` are the main node's). A restarted server waits on every
node's handle again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from shoal.domain.arns import new_task_id
from shoal.domain.clock import Clock
from shoal.domain.container import Resources, resources_of
from shoal.domain.records import Job, JobStatus, Json
from shoal.executors.base import (
    ESSENTIAL_EXITED,
    FAILED_TO_START,
    Executor,
    Exit,
    Handle,
    LaunchError,
    LaunchSpec,
)
from shoal.store.base import Store, Transaction

log = logging.getLogger("shoal.engine")

NODE_TASKS = "nodeTasks"  # parent runtime: task id per node index, fixed when the attempt is placed
MAIN_ADDRESS = "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"
# Where the main node is when its executor does not say (process and docker
# run every node on this host; docker with host networking).
LOOPBACK = "127.0.0.1"
_FAILED = "failed"  # key of a node handle whose launch failed: its reason


# -- the job's shape ------------------------------------------------------------------


def is_multinode(spec: Json) -> bool:
    return "nodeProperties" in spec


def is_node(job: Job) -> bool:
    """A node row, run by its parent's attempt (never by one of its own)."""
    return "nodeDetails" in job.spec


def node_id(job_id: str, index: int) -> str:
    return f"{job_id}#{index}"


def split_node_id(job_id: str) -> tuple[str, int] | None:
    parent, sep, index = job_id.rpartition("#")
    return (parent, int(index)) if sep and index.isdigit() else None


def _range(target: str, num_nodes: int) -> tuple[int, int]:
    """`"a:b"`, `":b"`, `"a:"` or `"a"` as an inclusive range (checked at submit)."""
    if ":" not in target:
        return int(target), int(target)
    first, last = target.split(":", 1)
    return int(first or 0), int(last) if last else num_nodes - 1


def node_container(props: Json, index: int) -> Json:
    """Node `index`'s container: that of the narrowest node range holding it
    (a nested range overrides a broader one; among equal ones, the later)."""
    num = int(props["numNodes"])
    best: tuple[int, Json] | None = None
    for group in props["nodeRangeProperties"]:
        first, last = _range(group["targetNodes"], num)
        if first <= index <= last and (best is None or last - first <= best[0]):
            best = (last - first, group.get("container") or {})
    return dict(best[1]) if best is not None else {}


def node_needs(props: Json) -> list[Resources]:
    """Each node's resources, by index."""
    return [resources_of(node_container(props, i)) for i in range(int(props["numNodes"]))]


def largest_node(props: Json) -> Resources:
    """The most any one node needs of each resource: what the biggest machine
    of a cluster must hold for the gang to ever run there."""
    nodes = node_needs(props)
    memories = [r.memory_mib for r in nodes if r.memory_mib is not None]
    return Resources(
        vcpus=max(r.vcpus or 1.0 for r in nodes),
        memory_mib=max(memories) if memories else None,
        gpus=max(r.gpus for r in nodes),
    )


def need(props: Json) -> Resources:
    """What the gang holds while it runs: every node's resources, at once. A
    node that gives no VCPU runs with one, as a container job would."""
    nodes = [resources_of(node_container(props, i)) for i in range(int(props["numNodes"]))]
    memories = [r.memory_mib for r in nodes if r.memory_mib is not None]
    return Resources(
        vcpus=sum(r.vcpus or 1.0 for r in nodes),
        memory_mib=sum(memories) if memories else None,
        gpus=sum(r.gpus for r in nodes),
    )


def node_tasks(props: Json, main_task: str) -> dict[str, str]:
    """A task id per node, the main node's being the attempt's own (so the
    parent's task ARN and log stream are the main node's, as AWS reports)."""
    main = int(props["mainNode"])
    return {
        str(i): main_task if i == main else new_task_id() for i in range(int(props["numNodes"]))
    }


def node_environment(props: Json, index: int) -> dict[str, str]:
    """The variables every node gets (the main node's address is added at launch)."""
    return {
        "AWS_BATCH_JOB_NODE_INDEX": str(index),
        "AWS_BATCH_JOB_NUM_NODES": str(props["numNodes"]),
        "AWS_BATCH_JOB_MAIN_NODE_INDEX": str(props["mainNode"]),
    }


def node_options(job_id: str, attempt: int, props: Json, index: int) -> Json:
    """`LaunchSpec.options["multinode"]`: executors that place nodes on several
    machines keep a gang together with it (process and docker ignore it)."""
    return {
        "group": f"{job_id}-{attempt}",
        "index": index,
        "numNodes": int(props["numNodes"]),
        "main": int(props["mainNode"]),
        # Every node's resources, so that the first node launched can reserve
        # room for all of them at once (a Ray placement group).
        "bundles": [
            {"vcpus": r.vcpus or 1.0, "memory_mib": r.memory_mib, "gpus": r.gpus}
            for r in node_needs(props)
        ],
    }


def gang_spec(nodes: list[LaunchSpec], main: int) -> LaunchSpec:
    """The attempt's spec: the main node's, carrying every node's (by index)."""
    return dataclasses.replace(nodes[main], options={**nodes[main].options, "nodes": nodes})


def task_ids(handle: Handle | None) -> set[str]:
    """The node task ids of a gang's handle (empty for any other handle)."""
    if not handle or not handle.get("multinode"):
        return set()
    return {str(h["task"]) for h in handle["nodes"].values() if h.get("task")}


def _nodes(handle: Handle) -> dict[int, Handle]:
    return {int(k): v for k, v in (handle.get("nodes") or {}).items()}


def _failed(spec: LaunchSpec, reason: str) -> Handle:
    return {
        "task": spec.task_id,
        "group": spec.log_group,
        "stream": spec.log_stream,
        _FAILED: reason,
    }


# -- the gang ---------------------------------------------------------------------


class Gang:
    """One multinode attempt, run through the executor of its compute
    environment (`inner`). An Executor itself, for that one attempt: the
    engine makes one per attempt, and it keeps what it learns while the
    attempt runs (each node's exit, nodes terminated alone) until the exit is
    recorded (`write_ended`)."""

    def __init__(
        self,
        inner: Executor,
        job_id: str,
        spec: Json,
        *,
        store: Store,
        clock: Clock,
        grace_seconds: float,
        task_arn: Callable[[str], str],
    ) -> None:
        props = spec["nodeProperties"]
        self.inner = inner
        self.job_id = job_id
        self.store = store
        self.clock = clock
        self.name = inner.name  # capacity and host accounting follow the real executor
        self.num_nodes = int(props["numNodes"])
        self.main = int(props["mainNode"])
        self.grace_seconds = grace_seconds
        self.task_arn = task_arn
        self._handle: Handle | None = None
        self._exits: dict[int, Exit] = {}  # by node, as they end
        self._stops: dict[int, str] = {}  # nodes terminated alone: their reason
        self._stopping = False  # the whole gang is being stopped (timeout, TerminateJob)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- Executor ---------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Awaitable[Handle]:
        return self._launch(list(spec.options["nodes"]))

    async def _launch(self, nodes: list[LaunchSpec]) -> Handle:
        # The main node first: if it cannot start, neither does the attempt
        # (LaunchError goes to the engine, which applies the retry rules).
        main = await self.inner.launch(nodes[self.main])
        # An executor that runs the node on another machine says where (Ray).
        address = str(main.get("ip") or LOOPBACK)
        others = {
            i: dataclasses.replace(spec, environment={**spec.environment, MAIN_ADDRESS: address})
            for i, spec in enumerate(nodes)
            if i != self.main
        }
        launched = await asyncio.gather(*(self._launch_node(s) for s in others.values()))
        handles = {str(self.main): main}
        handles.update({str(i): h for i, h in zip(others, launched, strict=True)})
        return self._set_handle(nodes, handles)

    def _set_handle(self, nodes: list[LaunchSpec], handles: dict[str, Handle]) -> Handle:
        """The gang's handle: every node's, and the main node's log stream."""
        self._handle = {
            "multinode": True,
            "main": self.main,
            "nodes": handles,
            "group": nodes[self.main].log_group,
            "stream": nodes[self.main].log_stream,
        }
        return self._handle

    async def _launch_node(self, spec: LaunchSpec) -> Handle:
        """A non-main node: one that cannot start fails alone (FAILED, `Task
        failed to start`), as a node that dies does."""
        try:
            return await self.inner.launch(spec)
        except LaunchError as e:
            return _failed(spec, e.reason)
        except Exception as e:
            log.exception("launching node %s failed", spec.job_id)
            return _failed(spec, f"CannotStartContainerError: {e}"[:255])

    async def wait(self, handle: Handle) -> Exit:
        """The main node's exit, once every node has ended: when the main node
        exits the others are stopped (with the engine's grace) and waited for."""
        self._handle = handle
        nodes = _nodes(handle)
        for index in list(self._stops):  # asked for while the gang was launching
            self._stop_node(index)
        waits = {i: asyncio.ensure_future(self._wait_node(i, h)) for i, h in nodes.items()}
        try:
            main = await waits[self.main]
            running = [i for i, w in waits.items() if not w.done()]
            await asyncio.gather(*(self._stop_quietly(nodes[i]) for i in running))
            await asyncio.gather(*waits.values())
        finally:
            for w in waits.values():
                w.cancel()  # the engine stopped watching (server shutdown): so do we
        return main

    async def _wait_node(self, index: int, handle: Handle) -> Exit:
        if _FAILED in handle:
            exit_ = Exit(exit_code=None, reason=str(handle[_FAILED]), status_reason=FAILED_TO_START)
        else:
            try:
                exit_ = await self.inner.wait(handle)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # As the engine does for a container: never leave a node unwatched.
                log.exception("waiting for node %s failed", index)
                await self._stop_quietly(handle, 0)
                exit_ = Exit(
                    exit_code=None,
                    reason=f"CannotInspectContainerError: {e}"[:255],
                    status_reason=ESSENTIAL_EXITED,
                )
        self._exits[index] = exit_
        if index != self.main and self.main not in self._exits and not self._stopping:
            # Ended on its own (or terminated alone) while the job runs on. Nodes
            # stopped with the job are recorded with its exit, and its reason.
            self._record_early(index, exit_)
        return exit_

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        self._stopping = True
        await asyncio.gather(
            *(self._stop_quietly(h, grace_seconds) for h in _nodes(handle).values())
        )

    async def _stop_quietly(self, handle: Handle, grace_seconds: float | None = None) -> None:
        """Stop one node; a node that cannot be stopped must not keep the
        others running."""
        if _FAILED in handle:
            return
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        try:
            await self.inner.stop(handle, grace)
        except Exception:
            log.exception("stopping node task %s failed", handle.get("task"))

    def home(self) -> dict[str, str]:
        return self.inner.home()

    def recover(self, spec: LaunchSpec, home: dict[str, str] | None = None) -> Handle | None:
        """After a restart, for a gang recorded as STARTING: its handle if the
        main node started (nodes that did not are failed to start: they never
        will), else None, and then no node runs."""
        nodes: list[LaunchSpec] = list(spec.options["nodes"])
        found = {i: self.inner.recover(s, home) for i, s in enumerate(nodes)}
        if found[self.main] is None:
            # Others launch only after the main node's launch resolved, which
            # a supervisor that never claimed its attempt does not prevent:
            # what did start is stopped, so the attempt is not run twice.
            for handle in found.values():
                if handle is not None:
                    self._spawn(self._discard(handle))
            return None
        handles = {
            str(i): h
            if h is not None
            else _failed(
                nodes[i], "CannotStartContainerError: the server stopped while it was starting"
            )
            for i, h in found.items()
        }
        return self._set_handle(nodes, handles)

    async def _discard(self, handle: Handle) -> None:
        await self._stop_quietly(handle, 0)
        with contextlib.suppress(Exception):
            await self.inner.wait(handle)
        self.inner.release(handle)

    def release(self, handle: Handle) -> None:
        for h in _nodes(handle).values():
            if _FAILED in h:
                continue
            try:
                self.inner.release(h)
            except Exception:
                log.exception("releasing node task %s failed", h.get("task"))

    # -- one node -----------------------------------------------------------------
    def terminate_node(self, index: int, reason: str) -> None:
        """TerminateJob on non-main node `index`: stop it alone (idempotent)."""
        if index in self._stops or index == self.main or not 0 <= index < self.num_nodes:
            return
        self._stops[index] = reason
        if self._handle is not None:
            self._stop_node(index)

    def _stop_node(self, index: int) -> None:
        handle = _nodes(self._handle or {}).get(index)
        if handle is not None and index not in self._exits:
            self._spawn(self._stop_quietly(handle))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- node records ---------------------------------------------------------------
    def write_started(self, tx: Transaction, parent: Job, started_at: int) -> None:
        """In the transaction that marks `parent` RUNNING: every node RUNNING
        (made on the first attempt, started again on the next ones), or
        FAILED at once if it could not start."""
        handles = _nodes(parent.runtime.get("handle") or {})
        ids = [node_id(parent.job_id, i) for i in range(self.num_nodes)]
        stored = tx.get_jobs(ids)
        props = parent.spec["nodeProperties"]
        spec = {k: v for k, v in parent.spec.items() if k not in ("nodeProperties", "dependsOn")}
        new: list[Job] = []
        for i, job_id in enumerate(ids):
            handle = handles.get(i) or {}
            container: Json = {"taskArn": self.task_arn(str(handle.get("task", "")))}
            runtime: Json = {"logGroup": handle.get("group"), "container": container}
            status, reason, stopped_at = JobStatus.RUNNING, None, None
            if _FAILED in handle:
                status, reason, stopped_at = JobStatus.FAILED, FAILED_TO_START, started_at
                container["reason"] = str(handle[_FAILED])[:255]
            else:
                container["logStreamName"] = handle.get("stream")
            old = stored.get(job_id)
            attempts = list(old.runtime.get("attempts", [])) if old is not None else []
            if status is JobStatus.FAILED:
                attempts.append(
                    {"container": dict(container), "stoppedAt": started_at, "statusReason": reason}
                )
            runtime["attempts"] = attempts
            if old is not None:
                node = dataclasses.replace(
                    old,
                    status=status,
                    status_reason=reason,
                    started_at=started_at,
                    stopped_at=stopped_at,
                    is_terminated=False,
                    terminate_requested=None,  # a request from an earlier attempt is done
                    runtime=runtime,
                )
                tx.update_job(node, old.status)
                continue
            new.append(
                Job(
                    job_id=job_id,
                    job_name=parent.job_name,
                    queue=parent.queue,
                    definition_name=parent.definition_name,
                    definition_revision=parent.definition_revision,
                    status=status,
                    created_at=started_at,
                    spec={
                        **spec,
                        "container": node_container(props, i),
                        "nodeDetails": {"nodeIndex": i, "isMainNode": i == self.main},
                        "numNodes": self.num_nodes,
                    },
                    status_reason=reason,
                    started_at=started_at,
                    stopped_at=stopped_at,
                    share_identifier=parent.share_identifier,
                    array_parent=parent.job_id,
                    runtime=runtime,
                )
            )
        if new:
            tx.insert_jobs(new)
        # Nodes that ended before their rows were written (RUNNING is written
        # a moment after the launch): recorded now, as `_record_early` would.
        if self.main not in self._exits and not self._stopping:
            early = [i for i in self._exits if i != self.main]
            ended = tx.get_jobs([ids[i] for i in early]) if early else {}
            now = self.clock.now_ms()
            for i in early:
                row = ended.get(ids[i])
                if row is not None and row.status is JobStatus.RUNNING:
                    tx.set_job_state(self._ended(row, self._exits[i], now), JobStatus.RUNNING)

    def write_ended(
        self,
        tx: Transaction,
        parent: Job,
        exit_: Exit,
        now: int,
        *,
        stop_reason: str | None,
        terminated: bool,
    ) -> None:
        """In the transaction that records the parent's exit (`exit_`, the
        main node's): every node still RUNNING ends, by its own exit code.
        `stop_reason` (timeout, TerminateJob of the job) applies to all."""
        rows = tx.child_jobs(
            parent.job_id, (JobStatus.STARTING, JobStatus.RUNNING), self.num_nodes + 1
        )
        for _, node in rows:
            index = int(node.spec["nodeDetails"]["nodeIndex"])
            # A node's own exit if it was seen, else the attempt's (e.g. the
            # engine could not wait for the gang).
            own = self._exits.get(index, exit_)
            after = self._ended(node, own, now, stop_reason=stop_reason, terminated=terminated)
            tx.set_job_state(after, node.status)

    def _record_early(self, index: int, exit_: Exit) -> None:
        """A non-main node ended while the job runs on: its row says so at
        once, in a transaction of its own (if its row is not RUNNING yet, or
        this fails, the job's exit records it)."""
        job_id = node_id(self.job_id, index)
        try:
            with self.store.transaction() as tx:
                node = tx.get_jobs([job_id]).get(job_id)
                if node is not None and node.status is JobStatus.RUNNING:
                    after = self._ended(node, exit_, self.clock.now_ms())
                    tx.set_job_state(after, JobStatus.RUNNING)
        except Exception:
            log.exception("recording the end of node %s failed; it is recorded later", job_id)

    def _ended(
        self,
        node: Job,
        own: Exit,
        now: int,
        *,
        stop_reason: str | None = None,
        terminated: bool = False,
    ) -> Job:
        """`node` after its exit `own`: SUCCEEDED or FAILED by its exit code,
        FAILED if it was stopped (alone or with the job)."""
        index = int(node.spec["nodeDetails"]["nodeIndex"])
        alone = self._stops.get(index) or node.terminate_requested
        reason = alone or stop_reason or own.status_reason
        previous = node.runtime.get("container") or {}
        container: Json = {"taskArn": previous.get("taskArn")}
        if own.exit_code is not None:
            container["exitCode"] = own.exit_code
        if own.reason:
            container["reason"] = own.reason[:255]
        if previous.get("logStreamName"):
            container["logStreamName"] = previous["logStreamName"]
        record: Json = {
            "container": {**container, "networkInterfaces": []},
            "startedAt": node.started_at,
            "stoppedAt": now,
            "statusReason": reason,
        }
        succeeded = own.exit_code == 0 and alone is None and stop_reason is None
        return dataclasses.replace(
            node,
            status=JobStatus.SUCCEEDED if succeeded else JobStatus.FAILED,
            status_reason=reason,
            stopped_at=now,
            is_terminated=node.is_terminated or terminated or alone is not None,
            runtime={
                **node.runtime,
                "attempts": [*node.runtime.get("attempts", []), record],
                "container": container,
            },
        )
