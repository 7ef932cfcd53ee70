"""The process executor: each attempt is a local process group.

The image is not used: the container's command runs directly on this host,
in a fresh working directory, with the job's environment. Each attempt runs
under a tiny `sh` supervisor that
- claims the attempt atomically (`set -C` makes `>` an O_EXCL create), so an
  attempt that a restarted server has declared abandoned can never start late;
- joins the attempt's memory cgroup, so MEMORY is a hard limit;
- waits for the command and writes its exit status to a file, so the status
  survives the death of the server, and a restarted server reattaches.
Output goes to a file that is tailed into the log store while the job runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from shoal.executors.base import OOM_REASON, Exit, Handle, LaunchError, LaunchSpec
from shoal.executors.cgroups import MemoryCgroups
from shoal.logs.store import Event, LogStore

log = logging.getLogger("shoal.executors.process")

_WRAPPER = r"""
d=$1; g=$2; shift 2
set -C
{ echo $$ > "$d/started"; } 2>/dev/null || exit 0
set +C
if [ -n "$g" ]; then echo $$ > "$g" 2>/dev/null; fi
trap : TERM INT
"$@"
echo $? > "$d/exit"
"""
_MAX_EVENT = 256 * 1024  # CloudWatch's largest event
_READ_CHUNK = 1024 * 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _alive(pid: int, task_id: str) -> bool:
    """Is `pid` still the supervisor of `task_id` (not a recycled pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return task_id.encode() in cmdline and state != "Z"


class ProcessExecutor:
    name = "process"

    def __init__(
        self,
        root: Path,
        logs: LogStore,
        *,
        cgroups: MemoryCgroups | None = None,
        log_poll_seconds: float = 0.2,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs = logs
        self.cgroups = cgroups
        self.log_poll_seconds = log_poll_seconds
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[str] = set()

    # -- launching ------------------------------------------------------------
    async def launch(self, spec: LaunchSpec) -> Handle:
        if not spec.command:
            raise LaunchError(
                "CannotStartContainerError: the job has no command, and the process "
                "executor runs commands, not images"
            )
        attempt_dir = self.root / spec.task_id
        try:
            attempt_dir.mkdir()
        except FileExistsError:
            raise LaunchError(
                f"CannotStartContainerError: attempt {spec.task_id} was launched before"
            ) from None
        work = attempt_dir / "work"
        work.mkdir()
        cgroup = None
        if self.cgroups is not None and spec.memory_mib:
            cgroup = self.cgroups.create(spec.task_id, spec.memory_mib)
        handle: Handle = {
            "task": spec.task_id,
            "dir": str(attempt_dir),
            "cgroup": str(cgroup) if cgroup else None,
            "group": spec.log_group,
            "stream": spec.log_stream,
        }
        (attempt_dir / "handle.json").write_text(json.dumps(handle))
        env = {k: v for k in ("PATH", "HOME", "LANG", "LC_ALL") if (v := os.environ.get(k))}
        env.update(spec.environment)
        procs = str(cgroup / "cgroup.procs") if cgroup else ""
        argv = ["/bin/sh", "-c", _WRAPPER, f"shoal-{spec.task_id}", str(attempt_dir), procs]
        try:
            with (attempt_dir / "output").open("wb") as out:
                proc = subprocess.Popen(
                    [*argv, *spec.command],
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            raise LaunchError(f"CannotStartContainerError: {e}") from None
        self._children[proc.pid] = proc
        handle["pid"] = proc.pid
        return handle

    def recover(self, task_id: str) -> Handle | None:
        attempt_dir = self.root / task_id
        if not attempt_dir.is_dir():
            return None
        try:
            fd = os.open(attempt_dir / "started", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            # We won the claim: the supervisor, if it ever runs, exits at once.
            os.close(fd)
            return None
        handle: Handle = json.loads((attempt_dir / "handle.json").read_text())
        deadline = time.monotonic() + 2.0
        while True:
            text = (attempt_dir / "started").read_text().strip()
            if text or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        handle["pid"] = int(text) if text else 0
        return handle

    # -- waiting --------------------------------------------------------------
    async def wait(self, handle: Handle) -> Exit:
        pid, task = int(handle["pid"]), str(handle["task"])
        attempt_dir = Path(handle["dir"])
        ended = asyncio.get_running_loop().create_future()
        fd = self._watch(pid, task, ended)
        try:
            while not ended.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), self.log_poll_seconds)
                self._pump(handle)
        finally:
            if fd is not None:
                asyncio.get_running_loop().remove_reader(fd)
                os.close(fd)
        self._pump(handle)
        self.flush_tail(handle)
        return self._exit(handle, pid, task, attempt_dir)

    def _watch(self, pid: int, task: str, ended: asyncio.Future[None]) -> int | None:
        """A pidfd that becomes readable when the supervisor exits."""
        if pid <= 0 or (pid not in self._children and not _alive(pid, task)):
            ended.set_result(None)
            return None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            ended.set_result(None)
            return None

        def on_exit() -> None:
            if not ended.done():
                ended.set_result(None)

        asyncio.get_running_loop().add_reader(fd, on_exit)
        return fd

    def _exit(self, handle: Handle, pid: int, task: str, attempt_dir: Path) -> Exit:
        child = self._children.pop(pid, None)
        returncode = child.wait() if child is not None else None
        cgroup = Path(handle["cgroup"]) if handle.get("cgroup") else None
        try:
            code: int | None = int((attempt_dir / "exit").read_text().strip())
        except (OSError, ValueError):
            code = None
        if code is None:
            if returncode is not None and returncode < 0:
                code = 128 - returncode
            elif task in self._killed:
                code = 128 + signal.SIGKILL
        if self.cgroups is not None and self.cgroups.oom_killed(cgroup):
            return Exit(exit_code=code if code is not None else 137, reason=OOM_REASON)
        if code is None:
            # The supervisor died without a word (killed while shoal was down):
            # what the job did is unknown, as after the loss of a host.
            return Exit(
                exit_code=None,
                reason="CannotInspectContainerError: the job's supervisor ended without "
                "recording an exit status",
                status_reason=f"Host EC2 (instance {os.uname().nodename}) terminated.",
            )
        return Exit(exit_code=code)

    def _pump(self, handle: Handle) -> None:
        """Move complete new output lines into the log store, remembering how far."""
        attempt_dir = Path(handle["dir"])
        mark = attempt_dir / "pumped"
        try:
            offset = int(mark.read_text()) if mark.exists() else 0
            with (attempt_dir / "output").open("rb") as f:
                while True:
                    f.seek(offset)
                    data = f.read(_READ_CHUNK)
                    cut = data.rfind(b"\n") + 1
                    if cut == 0 and len(data) < _READ_CHUNK:
                        break
                    chunk = data[:cut] if cut else data  # an over-long line: split it
                    now = _now_ms()
                    events = [
                        Event(now, piece.decode("utf-8", "replace"))
                        for line in chunk.rstrip(b"\n").split(b"\n")
                        for piece in _split(line)
                    ]
                    self.logs.append(handle["group"], handle["stream"], events)
                    offset += len(chunk)
                    mark.write_text(str(offset))
        except FileNotFoundError:
            return

    def flush_tail(self, handle: Handle) -> None:
        """After exit: a last line without a newline is still output."""
        attempt_dir = Path(handle["dir"])
        mark = attempt_dir / "pumped"
        try:
            offset = int(mark.read_text()) if mark.exists() else 0
            with (attempt_dir / "output").open("rb") as f:
                f.seek(offset)
                rest = f.read()
        except FileNotFoundError:
            return
        if rest:
            now = _now_ms()
            events = [Event(now, p.decode("utf-8", "replace")) for p in _split(rest)]
            self.logs.append(handle["group"], handle["stream"], events)
            mark.write_text(str(offset + len(rest)))

    # -- stopping and cleaning up ---------------------------------------------
    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        pid, task = int(handle["pid"]), str(handle["task"])
        if not self._signal(pid, task, signal.SIGTERM):
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not _alive(pid, task) and pid not in self._children:
                return
            child = self._children.get(pid)
            if child is not None and child.poll() is not None:
                return
            await asyncio.sleep(min(0.05, grace_seconds))
        self._killed.add(task)
        self._signal(pid, task, signal.SIGKILL)

    def _signal(self, pid: int, task: str, sig: int) -> bool:
        if pid <= 0 or not (pid in self._children or _alive(pid, task)):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
            return True
        return False

    def release(self, handle: Handle) -> None:
        """Forget a finished attempt: its exit is recorded, its files can go."""
        if self.cgroups is not None and handle.get("cgroup"):
            self.cgroups.remove(Path(handle["cgroup"]))
        shutil.rmtree(handle["dir"], ignore_errors=True)
        self._killed.discard(str(handle["task"]))


def _split(line: bytes) -> list[bytes]:
    return [line[i : i + _MAX_EVENT] for i in range(0, max(len(line), 1), _MAX_EVENT)]
