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

Per attempt: `<task>.work/` under the executor's root on disk (the job's
working directory), and under the run directory `<task>.out` (its output),
`<task>.started` (the supervisor's pid), `<task>.exit` (the exit status) and
`<task>.pumped` (how much output has reached the log store).

The run directory is on tmpfs where the host has one: these files need only
outlive the server's process, not the host (a reboot ends the jobs too), and
making a file there costs microseconds where a disk filesystem can spend half
a millisecond of CPU on the inode. A run directory that is missing when the
server starts means the host restarted: attempts that were running are lost,
as on the loss of an EC2 instance. For the same reason emptied working
directories are kept in a small pool (`.pool/`) and renamed into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shoal.executors.base import OOM_REASON, Exit, Handle, LaunchError, LaunchSpec
from shoal.executors.cgroups import MemoryCgroups
from shoal.logs.store import Event, LogStore

log = logging.getLogger("shoal.executors.process")

_WRAPPER = r"""
r=$1; w=$2; g=$3; shift 3
set -C
{ echo $$ > "$r.started"; } 2>/dev/null || exit 0
set +C
if [ -n "$g" ]; then echo $$ > "$g" 2>/dev/null; fi
cd "$w" || exit 126
trap : TERM INT
"$@"
echo $? > "$r.exit"
"""
_POOL_SIZE = 256  # emptied working directories kept for reuse
_MAX_EVENT = 256 * 1024  # CloudWatch's largest event
_READ_CHUNK = 1024 * 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _alive(pid: int, task_id: str) -> bool:
    """Is `pid` still the supervisor of `task_id` (not a recycled pid, not a zombie)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return task_id.encode() in cmdline and state != "Z"


def _read_offset(mark: Path) -> int:
    try:
        return int(mark.read_text())
    except (OSError, ValueError):
        return 0


def _split(line: bytes) -> list[bytes]:
    return [line[i : i + _MAX_EVENT] for i in range(0, max(len(line), 1), _MAX_EVENT)]


class ProcessExecutor:
    name = "process"

    def __init__(
        self,
        root: Path,
        logs: LogStore,
        *,
        run_dir: Path | None = None,
        cgroups: MemoryCgroups | None = None,
        log_poll_seconds: float = 0.2,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.run = run_dir or root
        # Made anew means the host restarted (tmpfs) since attempts last ran.
        self.host_restarted = not self.run.exists()
        self.run.mkdir(parents=True, exist_ok=True)
        self._pool = root / ".pool"
        self._pool.mkdir(exist_ok=True)
        self._spare = [entry.name for entry in os.scandir(self._pool)]
        self._pool_serial = max((int(n) for n in self._spare if n.isdigit()), default=0)
        self.logs = logs
        self.cgroups = cgroups
        self.log_poll_seconds = log_poll_seconds
        self._children: set[int] = set()
        self._killed: set[str] = set()
        # Removing directories and cgroups is slow on some filesystems: it
        # happens off the event loop, after the exit is recorded.
        self._cleaner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-cleanup")
        self._pumped: dict[str, int] = {}  # output offset already in the log store, by task

    def _base(self, task: str) -> str:
        """Prefix of the attempt's files in the run directory."""
        return str(self.run / task)

    def _workdir(self, task: str) -> str:
        return str(self.root / task) + ".work"

    def _make_workdir(self, path: str) -> None:
        if os.path.lexists(path):
            raise FileExistsError(path)
        while self._spare:
            try:
                os.rename(self._pool / self._spare.pop(), path)
                return
            except OSError:
                continue
        os.mkdir(path)

    def _drop_workdir(self, path: str) -> None:
        """Back to the pool if the job left it empty, else removed."""
        try:
            with os.scandir(path) as entries:
                empty = next(entries, None) is None
            if empty and len(self._spare) < _POOL_SIZE:
                os.chmod(path, 0o755)
                self._pool_serial += 1
                name = str(self._pool_serial)
                os.rename(path, self._pool / name)
                self._spare.append(name)
                return
        except FileNotFoundError:
            return
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)

    # -- launching ------------------------------------------------------------
    async def launch(self, spec: LaunchSpec) -> Handle:
        # Inline on the event loop: a launch is a few fast system calls
        # (posix_spawn uses vfork), and a hand-off to a worker thread cost more
        # than it saved (measured: ~0.4 ms of server CPU per job).
        return self._launch(spec)

    def _launch(self, spec: LaunchSpec) -> Handle:
        if not spec.command:
            raise LaunchError(
                "CannotStartContainerError: the job has no command, and the process "
                "executor runs commands, not images"
            )
        base = self._base(spec.task_id)
        try:
            # As the awslogs driver does, the stream exists once the job starts;
            # made first, so that nothing can fail after the spawn.
            self.logs.create_stream(spec.log_group, spec.log_stream)
        except OSError as e:
            raise LaunchError(
                f"CannotStartContainerError: cannot create the log stream: {e}"
            ) from None
        workdir = self._workdir(spec.task_id)
        try:
            self._make_workdir(workdir)
        except FileExistsError:
            raise LaunchError(
                f"CannotStartContainerError: attempt {spec.task_id} was launched before"
            ) from None
        cgroup = None
        if self.cgroups is not None and spec.memory_mib:
            cgroup = self.cgroups.create(spec.task_id, spec.memory_mib)
        env = {k: v for k in ("PATH", "HOME", "LANG", "LC_ALL") if (v := os.environ.get(k))}
        env.update(spec.environment)
        procs = str(cgroup / "cgroup.procs") if cgroup else ""
        argv = ["sh", "-c", _WRAPPER, f"shoal-{spec.task_id}", base, workdir, procs]
        argv += spec.command
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, base + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        try:
            # Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive
            # exec: a job gets the defaults, as in a container (`yes | head`).
            pid = os.posix_spawn(
                "/bin/sh",
                argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except OSError as e:
            raise LaunchError(f"CannotStartContainerError: {e}") from None
        self._children.add(pid)
        self._pumped[spec.task_id] = 0
        return {
            "task": spec.task_id,
            "pid": pid,
            "cgroup": str(cgroup) if cgroup else None,
            "group": spec.log_group,
            "stream": spec.log_stream,
        }

    def recover(self, spec: LaunchSpec) -> Handle | None:
        base = self._base(spec.task_id)
        if not os.path.isdir(self._workdir(spec.task_id)):
            return None  # the launch never got as far as spawning
        if self.host_restarted and self.run != self.root:
            # Spawned before the host restarted: whatever it did is lost with
            # its run files (`wait` then reports the host as terminated).
            return {
                "task": spec.task_id,
                "pid": 0,
                "cgroup": None,
                "group": spec.log_group,
                "stream": spec.log_stream,
            }
        try:
            fd = os.open(base + ".started", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            # We won the claim: the supervisor, if it ever runs, exits at once.
            os.close(fd)
            cgroup = (
                self.cgroups.root / spec.task_id if self.cgroups and self.cgroups.root else None
            )
            self.release({"task": spec.task_id, "cgroup": str(cgroup) if cgroup else None})
            return None
        text = ""
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            text = Path(base + ".started").read_text().strip()
            if text:
                break
            time.sleep(0.01)
        cgroup = self.cgroups.root / spec.task_id if self.cgroups and self.cgroups.root else None
        return {
            "task": spec.task_id,
            "pid": int(text) if text else 0,
            "cgroup": str(cgroup) if cgroup and cgroup.exists() else None,
            "group": spec.log_group,
            "stream": spec.log_stream,
        }

    # -- waiting --------------------------------------------------------------
    async def wait(self, handle: Handle) -> Exit:
        pid, task = int(handle["pid"]), str(handle["task"])
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        fd = self._watch(pid, task, ended)
        # While it runs, a timer moves its output every log_poll_seconds, one
        # chunk per tick so that a job printing a gigabyte never stalls the API.
        # (No task or timer per wake-up: most jobs end before the first tick.)
        timer: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal timer
            try:
                more = self._pump(handle, final=False)
            except OSError:
                log.exception("moving the output of %s failed; trying again", task)
                more = False
            timer = loop.call_later(0 if more else self.log_poll_seconds, tick)

        if not ended.done():
            timer = loop.call_later(self.log_poll_seconds, tick)
        try:
            await ended
        finally:
            if timer is not None:
                timer.cancel()
            if fd is not None:
                loop.remove_reader(fd)
                os.close(fd)
        await self._drain(handle, final=True)
        return self._exit(handle, pid, task)

    async def _drain(self, handle: Handle, *, final: bool) -> None:
        """Pump a chunk at a time, letting the event loop serve requests in
        between: a job that printed a gigabyte must not stall the API."""
        while self._pump(handle, final=final):
            await asyncio.sleep(0)

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

    def _exit(self, handle: Handle, pid: int, task: str) -> Exit:
        returncode: int | None = None
        if pid > 0:
            # What the job left running in the background ends with it, as the
            # processes of a container do. Our own supervisor is not reaped yet,
            # so its pid (the group's id) cannot have been reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if pid in self._children:
            self._children.discard(pid)
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                returncode = os.waitstatus_to_exitcode(status)
        try:
            code: int | None = int(Path(self._base(task) + ".exit").read_text().strip())
        except (OSError, ValueError):
            code = None
        if code is None:
            if returncode is not None and returncode < 0:
                code = 128 - returncode
            elif task in self._killed:
                code = 128 + signal.SIGKILL
        cgroup = Path(handle["cgroup"]) if handle.get("cgroup") else None
        # The OOM killer sends SIGKILL: only a 137 (or an unknown status) needs a look.
        might_be_oom = code in (None, 128 + signal.SIGKILL)
        if might_be_oom and self.cgroups is not None and self.cgroups.oom_killed(cgroup):
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

    def _pump(self, handle: Handle, *, final: bool) -> bool:
        """Move the next chunk of new output into the log store, remembering
        how far it got; True if it moved something (there may be more).

        While the job runs only complete lines move; once it has ended, a last
        line without a newline is output too."""
        task = str(handle["task"])
        base = self._base(task)
        mark = Path(base + ".pumped")
        try:
            offset = self._pumped.get(task)
            if offset is None:  # first look, perhaps after a restart
                offset = _read_offset(mark)
                self._pumped[task] = offset
            if os.stat(base + ".out").st_size <= offset:
                return False  # nothing new (most short jobs print nothing at all)
            with open(base + ".out", "rb") as f:
                f.seek(offset)
                data = f.read(_READ_CHUNK)
        except FileNotFoundError:
            return False
        if not data:
            return False
        cut = data.rfind(b"\n") + 1
        if cut:
            chunk = data[:cut]
        elif final or len(data) == _READ_CHUNK:
            chunk = data  # the tail after exit, or an over-long line
        else:
            return False
        now = _now_ms()
        body = chunk.removesuffix(b"\n")
        lines = body.split(b"\n")
        if body and max(map(len, lines)) <= _MAX_EVENT and b"" not in lines:
            # The common case (no empty or over-long lines), without an object per line.
            text = body.decode("utf-8", "replace")
            self.logs.append_lines(handle["group"], handle["stream"], now, text)
        else:
            events = [
                Event(now, piece.decode("utf-8", "replace"))
                for line in lines
                if line  # CloudWatch has no empty events
                for piece in _split(line)
            ]
            self.logs.append(handle["group"], handle["stream"], events)
        self._pumped[task] = offset + len(chunk)
        # Replace, never truncate-then-write: a crash leaves the old or the new value.
        tmp = Path(base + ".pumped.tmp")
        tmp.write_text(str(offset + len(chunk)))
        os.replace(tmp, mark)
        return True

    # -- stopping and cleaning up ---------------------------------------------
    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        pid, task = int(handle["pid"]), str(handle["task"])
        if not self._signal(pid, task, signal.SIGTERM):
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not _alive(pid, task):
                return
            await asyncio.sleep(min(0.05, grace_seconds))
        self._killed.add(task)
        self._signal(pid, task, signal.SIGKILL)

    def _signal(self, pid: int, task: str, sig: int) -> bool:
        if pid <= 0 or not _alive(pid, task):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
            return True
        return False

    def release(self, handle: Handle) -> None:
        """Forget a finished attempt: its exit is recorded, its files can go."""
        task = str(handle["task"])
        self._killed.discard(task)
        self._pumped.pop(task, None)
        self._cleaner.submit(self._clean, task, handle.get("cgroup"))

    def _clean(self, task: str, cgroup: str | None) -> None:
        self._drop_workdir(self._workdir(task))
        base = self._base(task)
        for suffix in (".out", ".started", ".exit", ".pumped"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base + suffix)
        if self.cgroups is not None and cgroup:
            self.cgroups.remove(Path(cgroup))

    def sweep(self, keep: set[str]) -> None:
        """Remove files and cgroups of attempts no longer tracked (left by a
        crash between recording an exit and cleaning up after it)."""
        tasks = {entry.split(".", 1)[0] for entry in os.listdir(self.root)}
        tasks |= {entry.split(".", 1)[0] for entry in os.listdir(self.run)}
        tasks.discard("")  # the pool
        if self.cgroups is not None and self.cgroups.root is not None:
            tasks |= {p.name for p in self.cgroups.root.iterdir() if p.is_dir()}
        for task in tasks - keep:
            cgroup = self.cgroups.root / task if self.cgroups and self.cgroups.root else None
            self.release({"task": task, "cgroup": str(cgroup) if cgroup else None})

    def close(self) -> None:
        self._cleaner.shutdown(wait=True)
        if self.run != self.root:
            with contextlib.suppress(OSError):
                os.rmdir(self.run)  # nothing left running: tmpfs is memory
        if self.cgroups is not None:
            self.cgroups.close()
