"""The docker executor: each attempt is a container, through the Docker Engine API.

Chosen per compute environment with the tag `shoal:executor=docker` (or as the
server's default). A container is named `shoal-<task id>` and labelled with the
job id, attempt and the data directory it belongs to, so a restarted server
finds it again; it is removed once its exit is recorded.

- image: the job definition's; one missing here is pulled, and a pull that
  fails fails the attempt (`CannotPullContainerError: ...`, statusReason
  `Task failed to start`), which retry rules can match;
- VCPU -> a CPU quota, MEMORY -> a hard memory limit without swap (an OOM
  kill ends with 137 and `OutOfMemoryError: Container killed due to memory
  usage`), GPU -> device requests;
- host networking (shoal's tests reach only loopback), `user`,
  `readonlyRootFilesystem`, `ulimits`, `linuxParameters` (sharedMemorySize,
  tmpfs, initProcessEnabled), `volumes` + `mountPoints` whose host paths lie
  under the roots the server allows; `privileged` only where it allows it;
- output is read from the container while it runs and appended to the same
  log store as the process executor's.

The docker SDK is synchronous: its calls run on a thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.types import DeviceRequest, Mount, Ulimit

from shoal.executors.base import OOM_REASON, Exit, Handle, LaunchError, LaunchSpec
from shoal.executors.cgroups import oom_kill_logged
from shoal.executors.mounts import bind_mounts
from shoal.logs.store import Event, LogStore

log = logging.getLogger("shoal.executors.docker")

T = TypeVar("T")
_MAX_EVENT = 256 * 1024
# dockerd learns of an OOM kill from containerd's event, which can reach it
# after the container's exit (moby/moby#18510); dockerd 20.10 then emits its
# "oom" event but never sets State.OOMKilled. A container killed by SIGKILL,
# and not by shoal, is looked for in the kernel's log and dockerd's events
# for this long.
_OOM_FLAG_SECONDS = 2.0


def _ms(stamp: str) -> int:
    """Docker's RFC 3339 timestamp (nanoseconds) in epoch milliseconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return int(seconds * 1000) + int((frac + "000")[:3])


class DockerExecutor:
    name = "docker"

    def __init__(
        self,
        logs: LogStore,
        *,
        owner: str,
        allowed_roots: list[Path] | None = None,
        allow_privileged: bool = False,
        client: Any = None,
    ) -> None:
        """`owner` names the data directory: containers of other servers are
        never touched. The client connects at first use: a server without a
        reachable dockerd fails docker jobs' attempts, and runs the rest."""
        self.logs = logs
        self.owner = owner
        self.allowed_roots = [p.resolve() for p in allowed_roots or []]
        self.allow_privileged = allow_privileged
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="shoal-docker")
        self._killed: set[str] = set()

    @property
    def client(self) -> Any:
        """The Docker client, made at first use (docker.from_env asks dockerd
        for its API version at once): a server on a host without dockerd
        starts, and its docker jobs fail to launch until dockerd runs."""
        if self._client is None:
            self._client = docker.from_env(timeout=120)
        return self._client

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    # -- launching ------------------------------------------------------------
    async def launch(self, spec: LaunchSpec) -> Handle:
        return await self._call(self._launch, spec)

    def _launch(self, spec: LaunchSpec) -> Handle:
        if not spec.image:
            raise LaunchError("CannotPullContainerError: the job has no image")
        container_props: dict[str, Any] = spec.options.get("container") or {}
        kwargs = self._create_args(spec, container_props)
        try:
            self.logs.create_stream(spec.log_group, spec.log_stream)
        except OSError as e:
            raise LaunchError(
                f"CannotStartContainerError: cannot create the log stream: {e}"
            ) from None
        try:
            container = self._create(spec.image, kwargs)
            began = time.time_ns() // 1_000_000  # it starts within `start`
            container.start()
        except LaunchError:
            raise
        except docker.errors.APIError as e:
            raise LaunchError(f"CannotStartContainerError: {e.explanation or e}"[:255]) from None
        except Exception as e:  # dockerd unreachable, ...
            raise LaunchError(f"CannotStartContainerError: {e}"[:255]) from None
        return {
            "task": spec.task_id,
            "container": container.id,
            "group": spec.log_group,
            "stream": spec.log_stream,
            "startedAt": began,
        }

    def _create(self, image: str, kwargs: dict[str, Any]) -> Any:
        try:
            return self.client.containers.create(image, **kwargs)
        except docker.errors.ImageNotFound:
            pass
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as e:
            raise LaunchError(
                f"CannotPullContainerError: {image}: {e.explanation or e}"[:255]
            ) from None
        return self.client.containers.create(image, **kwargs)

    def _create_args(self, spec: LaunchSpec, props: dict[str, Any]) -> dict[str, Any]:
        env = dict(spec.environment)
        kwargs: dict[str, Any] = {
            "name": f"shoal-{spec.task_id}",
            "environment": env,
            "labels": {
                "shoal.owner": self.owner,
                "shoal.task": spec.task_id,
                "shoal.job": spec.job_id,
                "shoal.attempt": str(spec.attempt),
            },
            "network_mode": "host",
            "nano_cpus": int(spec.vcpus * 1e9),
            "detach": True,
        }
        if spec.command:
            kwargs["command"] = spec.command
        if spec.memory_mib:
            kwargs["mem_limit"] = spec.memory_mib * 1024 * 1024
            kwargs["memswap_limit"] = spec.memory_mib * 1024 * 1024
        if spec.user:
            kwargs["user"] = spec.user
        if spec.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])]
        if props.get("readonlyRootFilesystem"):
            kwargs["read_only"] = True
        if props.get("privileged"):
            if not self.allow_privileged:
                raise LaunchError(
                    "CannotStartContainerError: privileged containers are not allowed on this "
                    "server"
                )
            kwargs["privileged"] = True
        ulimits = props.get("ulimits") or []
        if ulimits:
            kwargs["ulimits"] = [
                Ulimit(name=u["name"], soft=u["softLimit"], hard=u["hardLimit"]) for u in ulimits
            ]
        linux = props.get("linuxParameters") or {}
        if linux.get("sharedMemorySize"):
            kwargs["shm_size"] = f"{linux['sharedMemorySize']}m"
        if linux.get("initProcessEnabled"):
            kwargs["init"] = True
        if linux.get("tmpfs"):
            kwargs["tmpfs"] = {
                t["containerPath"]: ",".join([f"size={t['size']}m", *t.get("mountOptions", [])])
                for t in linux["tmpfs"]
            }
        kwargs["mounts"] = self._mounts(props)
        return kwargs

    def _mounts(self, props: dict[str, Any]) -> list[Mount]:
        return [
            Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in bind_mounts(props, self.allowed_roots)
        ]

    # -- waiting --------------------------------------------------------------
    async def wait(self, handle: Handle) -> Exit:
        container_id = str(handle["container"])
        pump = threading.Thread(
            target=self._pump, args=(handle,), name="shoal-docker-logs", daemon=True
        )
        pump.start()
        try:
            result = await self._call(self._wait, container_id, str(handle["task"]))
        except docker.errors.NotFound:
            result = None
        await self._call(pump.join)
        if result is None:
            return Exit(
                exit_code=None,
                reason="CannotInspectContainerError: the container is gone",
                status_reason=f"Host EC2 (instance {os.uname().nodename}) terminated.",
            )
        code, oom, finished = result
        if oom:
            return Exit(exit_code=code or 137, reason=OOM_REASON, ended_at=finished)
        return Exit(exit_code=code, ended_at=finished)

    def _wait(self, container_id: str, task: str) -> tuple[int, bool, int | None]:
        """Exit code, OOM-killed, and when it finished (epoch ms, if dockerd says)."""
        container = self.client.containers.get(container_id)
        status = container.wait()
        container.reload()
        state = container.attrs.get("State", {})
        code = int(status.get("StatusCode", state.get("ExitCode", -1)))
        oom = bool(state.get("OOMKilled"))
        if code == 137 and not oom and task not in self._killed:  # not shoal's SIGKILL
            oom = self._oom_killed_late(container)
        finished: int | None = None
        with contextlib.suppress(ValueError, TypeError):
            finished = _ms(str(container.attrs.get("State", {}).get("FinishedAt") or ""))
        return code, oom, finished if finished is not None and finished > 0 else None

    def _oom_killed_late(self, container: Any) -> bool:
        """Whether a container that died of SIGKILL was OOM-killed, though
        dockerd's flag says not (see _OOM_FLAG_SECONDS): the kernel's record
        first, then the flag and dockerd's "oom" event for this container,
        polled until the deadline."""
        if oom_kill_logged(container.id):
            return True
        started = str(container.attrs.get("State", {}).get("StartedAt") or "")
        try:
            since = _ms(started) / 1000 - 1
        except ValueError:
            since = time.time() - 3600
        deadline = time.monotonic() + _OOM_FLAG_SECONDS
        while True:
            try:
                container.reload()
                if container.attrs.get("State", {}).get("OOMKilled"):
                    return True
                # Past events only (an `until` in the future would block):
                # the API takes seconds with a fraction.
                events = self.client.events(
                    since=f"{since:.9f}",
                    until=f"{time.time():.9f}",
                    decode=True,
                    filters={"container": container.id, "event": "oom"},
                )
                try:
                    if any(True for _ in events):
                        return True
                finally:
                    events.close()
            except docker.errors.APIError:  # (NotFound: removed meanwhile)
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _pump(self, handle: Handle) -> None:
        """Follow the container's output into the log store until it ends, a
        chunk at a time as dockerd sends it. After a restart, output already
        stored (up to its last timestamp) is not stored again."""
        group, stream = str(handle["group"]), str(handle["stream"])
        since = self._last_stored(group, stream)
        try:
            container = self.client.containers.get(str(handle["container"]))
            chunks = container.logs(stream=True, follow=True, timestamps=True, since=since)
            # A chunk is one log entry (one frame of the stream): a timestamp,
            # a space and a line, with its newline; or, of a line over 16 KiB,
            # which dockerd keeps as several entries, a part without one. The
            # line is stored whole (at its first part's time), not with the
            # other parts' timestamps inside it.
            first, rest = b"", b""
            for chunk in chunks:
                stamp, _, text = chunk.partition(b" ")
                first = first or stamp
                rest += text
                if rest.endswith(b"\n"):
                    lines = rest[:-1].split(b"\n")  # (one, as dockerd sends them)
                    self._store(group, stream, [first + b" " + line for line in lines], since)
                    first, rest = b"", b""
            if rest:
                self._store(group, stream, [first + b" " + rest], since)
        except docker.errors.NotFound:
            return
        except Exception:
            log.exception("following the output of %s failed", handle.get("task"))

    def _store(self, group: str, stream: str, lines: list[bytes], since: float | None) -> None:
        events: list[Event] = []
        for line in lines:
            stamp, _, text = line.decode("utf-8", "replace").partition(" ")
            if not text:
                continue  # CloudWatch has no empty events
            at = _ms(stamp)
            if since is None or at > since * 1000:
                events += [
                    Event(at, text[i : i + _MAX_EVENT]) for i in range(0, len(text), _MAX_EVENT)
                ]
        if events:
            self.logs.append(group, stream, events)

    def _last_stored(self, group: str, stream: str) -> float | None:
        try:
            path = self.logs.stream_path(group, stream)
        except Exception:
            return None
        last = self.logs.last_event(path)
        return None if last is None else last.timestamp / 1000

    # -- stopping and cleaning up ---------------------------------------------
    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        self._killed.add(str(handle["task"]))
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            await self._call(
                lambda: self.client.containers.get(str(handle["container"])).stop(
                    timeout=max(round(grace_seconds), 0)  # dockerd takes whole seconds
                )
            )

    def home(self) -> dict[str, str]:
        # Containers are found by name through dockerd, whichever engine made them.
        return {"host": os.uname().nodename}

    def recover(self, spec: LaunchSpec, home: dict[str, str] | None = None) -> Handle | None:
        name = f"shoal-{spec.task_id}"
        try:
            container = self.client.containers.get(name)
        except docker.errors.NotFound:
            return None  # never created: it cannot start any more
        except Exception:
            # dockerd is out of reach: whether it started is unknown, so it is
            # not started again; waiting for it decides.
            log.exception("cannot look for container %s", name)
            return {
                "task": spec.task_id,
                "container": name,
                "group": spec.log_group,
                "stream": spec.log_stream,
            }
        if container.status == "created":
            # Created, never started: remove it, and it never will.
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            return None
        return {
            "task": spec.task_id,
            "container": container.id,
            "group": spec.log_group,
            "stream": spec.log_stream,
        }

    def release(self, handle: Handle) -> None:
        self._killed.discard(str(handle["task"]))
        self._pool.submit(self._remove, str(handle.get("container") or f"shoal-{handle['task']}"))

    def _remove(self, container: str) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.client.containers.get(container).remove(force=True)

    def sweep(self, keep: set[str]) -> None:
        try:
            containers = self.client.containers.list(
                all=True, filters={"label": f"shoal.owner={self.owner}"}
            )
        except Exception as e:
            log.info("no containers to sweep: %s", e)
            return
        for container in containers:
            if container.labels.get("shoal.task") not in keep:
                self._pool.submit(self._remove, str(container.id))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
