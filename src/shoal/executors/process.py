"""The process executor: each attempt is a local process group.

The image is not used: the container's command runs directly on this host,
in a fresh working directory, with the job's environment. Attempts are made
by the launcher process (`launcher.py`), which spawns each command as its own
child, reaps it, records its exit status in a file and tells us; the
launcher outlives a server that stops or dies until its jobs end, so a
restarted server reattaches and finds every exit recorded. If the launcher
dies, its jobs come to the server (their subreaper), which reaps them itself.
Without a launcher, attempts are made here, each under a tiny `sh`
supervisor (see `attempt_files.py`) that records its exit the same way.
Output goes to a file that is tailed into the log store while the job runs.

A run directory that is missing when the server starts means the host
restarted (it is on tmpfs): attempts that were running are lost, as on the
loss of an EC2 instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shoal.executors.attempt_files import (
    AttemptFiles,
    Launched,
    LaunchRequest,
    proc_stat,
    same_start,
)
from shoal.executors.base import (
    OOM_REASON,
    Exit,
    Handle,
    LaunchError,
    LaunchSpec,
    LaunchWithdrawn,
)
from shoal.executors.cgroups import MemoryCgroups
from shoal.executors.launcher import Launcher, LauncherLost
from shoal.logs.store import Event, LogStore

log = logging.getLogger("shoal.executors.process")

_MAX_EVENT = 256 * 1024  # CloudWatch's largest event
_PR_SET_CHILD_SUBREAPER = 36
# How long a reattached server waits for the launcher of a previous server to
# record the exit of an attempt it saw end.
_EXIT_FILE_WAIT_SECONDS = 5.0
# After a launcher's death, how often the server reaps what its jobs left.
_ORPHAN_REAP_SECONDS = 1.0
# How long an attempt of a launcher that is dying may take to become our child.
_ADOPTION_SECONDS = 5.0
_UNRAN_KEPT = 4096  # attempts remembered as having left a slot's line unrun
_READ_CHUNK = 1024 * 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _alive(pid: int, task_id: str, start: int = 0, *, zombie: bool = False) -> bool:
    """Is `pid` still the attempt `task_id` (not a recycled pid, not a
    zombie unless `zombie`)? A directly spawned attempt is known by its start
    time, one under a supervisor by the task id in the supervisor's command line."""
    stat = proc_stat(pid)
    if not stat or (stat[0] == b"Z" and not zombie):
        return False
    if start:
        return same_start(start, int(stat[19]))
    try:
        return task_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _become_subreaper() -> bool:
    """Orphans of our descendants come to us. The launcher is the parent of
    the attempts it spawns: if it dies, they come to the server, which can
    then still learn how they end."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


async def _done(handle: Handle) -> Handle:
    return handle


def _settle(future: asyncio.Future[None], _: object) -> None:
    if not future.done():
        future.set_result(None)


async def _fail(error: LaunchError) -> Handle:
    raise error


def _lost() -> Exit:
    return Exit(
        exit_code=None,
        reason="CannotInspectContainerError: the job's supervisor ended without "
        "recording an exit status",
        status_reason=f"Host EC2 (instance {os.uname().nodename}) terminated.",
    )


def _home_of(handle: Handle) -> dict[str, str] | None:
    """The home recorded in a handle (handles of older servers have none)."""
    home = {k: str(handle[k]) for k in ("host", "boot", "root", "run") if handle.get(k)}
    return home or None


@functools.cache
def _boot_id() -> str:
    """This boot of the host (fixed while we run: read once)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


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
        use_launcher: bool = True,
        job_user: tuple[int, int] | None = None,
    ) -> None:
        """`use_launcher` needs a running event loop (the launcher's answers
        arrive on it)."""
        root.mkdir(parents=True, exist_ok=True)
        run = run_dir or root
        # Made anew means the host restarted (tmpfs) since attempts last ran.
        self.host_restarted = run_dir is not None and run_dir != root and not run.exists()
        run.mkdir(parents=True, exist_ok=True)
        self.files = AttemptFiles(root, run, logs, cgroups, job_user)
        self._home = {
            "host": os.uname().nodename,
            "boot": _boot_id(),
            "root": str(root),
            "run": str(run),
        }
        self.logs = logs
        self.cgroups = cgroups
        self.log_poll_seconds = log_poll_seconds
        self._children: set[int] = set()  # supervisors spawned by this process
        self._killed: set[str] = set()
        # Without a launcher, removing files and cgroups happens off the event
        # loop, after the exit is recorded.
        self._cleaner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-cleanup")
        self._pumped: dict[str, int] = {}  # output offset already in the log store, by task
        self._foreign: dict[tuple[str, str], AttemptFiles] = {}
        self._launcher: Launcher | None = None
        self._subreaper = False
        self._orphan_reaper: asyncio.TimerHandle | None = None
        # Directly spawned attempts being waited for: once adopted, they are
        # reaped by their wait, with their status, never as orphans.
        self._watched: set[int] = set()
        # Attempts launched through the launcher and not yet released, and
        # launches (after the launcher died) waiting for one of them to be.
        self._live: set[str] = set()
        self._release_waiters: dict[str, asyncio.Future[None]] = {}
        self._parked: dict[str, asyncio.Future[None]] = {}  # such launches, by task
        self._ahead: dict[str, str] = {}  # launches that follow, and what they follow
        self._unran: dict[str, str | None] = {}  # left the line unrun: what they followed
        self._withdrawn: set[str] = set()
        if use_launcher:
            try:
                self._launcher = Launcher(
                    {
                        "root": str(root),
                        "run": str(run),
                        "logs": str(logs.root),
                        "cgroup": cgroups.root.name if cgroups and cgroups.root else None,
                        "user": list(job_user) if job_user else None,
                    }
                )
            except OSError as e:
                log.warning("no launcher process (%s): launching in the server", e)
            else:
                self._subreaper = _become_subreaper()

    def home(self) -> dict[str, str]:
        """Where this executor's attempts live: recorded with each attempt, so
        that an engine taking over (another data directory on this host, after
        the first engine died) finds them, and one on another host, or after
        a reboot, knows they are lost."""
        return dict(self._home)

    def _files_for(self, home: dict[str, str] | None) -> AttemptFiles | None:
        """The attempt files of `home` (ours when None); None if they are on
        another host or from before a reboot."""
        if not home:
            return self.files
        here = self._home
        if "host" in home and (home["host"], home.get("boot", here["boot"])) != (
            here["host"],
            here["boot"],
        ):
            return None
        key = (home.get("root", here["root"]), home.get("run", here["run"]))
        if key == (here["root"], here["run"]):
            return self.files
        if key not in self._foreign:
            self._foreign[key] = AttemptFiles(Path(key[0]), Path(key[1]), self.logs, None)
        return self._foreign[key]

    def _base(self, task: str, handle: Handle | None = None) -> str:
        run = (handle or {}).get("run")
        return f"{run}/{task}" if run else self.files.base(task)

    # -- launching ------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Awaitable[Handle]:
        """Sends the launcher its request at once (or launches here, when there
        is no launcher); the coroutine returned waits for the answer."""
        env = {k: v for k in ("PATH", "HOME", "LANG", "LC_ALL") if (v := os.environ.get(k))}
        env.update(spec.environment)
        request: LaunchRequest = {
            "task": spec.task_id,
            "command": spec.command,
            "environment": env,
            "memory_mib": spec.memory_mib,
            "log_group": spec.log_group,
            "log_stream": spec.log_stream,
        }
        if self._launcher is not None and self._launcher.alive:
            if spec.after is not None:
                request["after"] = spec.after
                self._ahead[spec.task_id] = spec.after
            self._live.add(spec.task_id)
            return self._finish_launch(self._launcher.launch(request), spec, request)
        if spec.after is not None and spec.after in self._live:
            # Placed to follow an attempt of the launcher, which has died since.
            self._ahead[spec.task_id] = spec.after
            self._live.add(spec.task_id)
            return self._launch_here_after(spec, request)
        try:
            launched = self.files.launch(request)
        except LaunchError as e:
            return _fail(e)
        self._children.add(launched["pid"])
        return _done(self._handle(launched, spec))

    def can_follow(self, task: str) -> bool:
        """Launches may wait in the launcher for `task`: one of this process's
        launches through the launcher (not one reattached after a restart)."""
        return self._launcher is not None and self._launcher.alive and task in self._live

    async def _finish_launch(
        self, answer: asyncio.Future[Launched], spec: LaunchSpec, request: LaunchRequest
    ) -> Handle:
        try:
            try:
                launched = await answer
            except LauncherLost:
                if spec.after is not None and not os.path.isdir(self.files.workdir(spec.task_id)):
                    return await self._launch_here_after(spec, request)
                return self._resolve_lost(spec)
        except BaseException:
            self._left_unrun(spec.task_id)
            raise
        return self._handle(launched, spec)

    async def _launch_here_after(self, spec: LaunchSpec, request: LaunchRequest) -> Handle:
        """Launch here (the launcher having died) once the attempt that holds
        the slot has been released; LaunchWithdrawn if withdrawn before.

        What it waits for is the attempt it follows or, if that one left the
        line without running, the one that one followed (as the launcher and
        the engine pass places in line on)."""
        task = spec.task_id
        loop = asyncio.get_running_loop()
        try:
            after = spec.after
            while True:
                while after is not None and after in self._unran:
                    after = self._unran[after]
                if task in self._withdrawn:
                    raise LaunchWithdrawn()
                if after is None or after not in self._live:
                    break
                parked: asyncio.Future[None] = loop.create_future()
                self._parked[task] = parked
                waiter = self._release_waiters.get(after)
                if waiter is None:
                    waiter = self._release_waiters[after] = loop.create_future()
                waiter.add_done_callback(functools.partial(_settle, parked))
                try:
                    await parked
                finally:
                    self._parked.pop(task, None)
            if os.path.isdir(self.files.workdir(task)):
                return self._resolve_lost(spec)  # the launcher got as far as spawning it
            request.pop("after", None)
            launched = self.files.launch(request)
        except BaseException:
            self._left_unrun(task)
            raise
        self._children.add(launched["pid"])
        return self._handle(launched, spec)

    def withdraw(self, task: str) -> None:
        if task not in self._live:
            return
        self._withdrawn.add(task)  # seen by a launch that waits here later
        parked = self._parked.get(task)
        if parked is not None:
            if not parked.done():
                parked.set_exception(LaunchWithdrawn())
        elif self._launcher is not None:
            self._launcher.withdraw(task)

    def _left_unrun(self, task: str) -> None:
        """`task` leaves its slot's line without having run: what waits for
        it waits for what it followed."""
        if task in self._unran:
            return  # (said already)
        self._unran[task] = self._ahead.pop(task, None)
        if len(self._unran) > _UNRAN_KEPT:
            del self._unran[next(iter(self._unran))]
        self._withdrawn.discard(task)
        self._not_live(task)

    def _not_live(self, task: str) -> None:
        """`task` is over (or never began): what waits for it may go."""
        self._live.discard(task)
        waiter = self._release_waiters.pop(task, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _handle(self, launched: Launched, spec: LaunchSpec) -> Handle:
        self._pumped[spec.task_id] = 0
        handle: Handle = {
            "task": spec.task_id,
            "pid": launched["pid"],
            "cgroup": launched["cgroup"],
            "group": spec.log_group,
            "stream": spec.log_stream,
            **self.home(),
        }
        if "start" in launched:
            handle["start"] = launched["start"]
        if "at" in launched:
            handle["startedAt"] = launched["at"]
        return handle

    def _resolve_lost(self, spec: LaunchSpec) -> Handle:
        """The launcher ended with this launch in flight: the attempt started
        or it never will (its claim is taken here)."""
        handle = self.recover(spec)
        if handle is None:
            raise LaunchError("CannotStartContainerError: the launcher process ended")
        self._pumped[spec.task_id] = 0
        return handle

    def recover(self, spec: LaunchSpec, home: dict[str, str] | None = None) -> Handle | None:
        files = self._files_for(home)
        lost: Handle = {
            "task": spec.task_id,
            "pid": 0,
            "cgroup": None,
            "group": spec.log_group,
            "stream": spec.log_stream,
        }
        if files is None:
            return lost  # launched on another host, or before a reboot
        where = {**self.home(), "root": str(files.root), "run": str(files.run)}
        base = files.base(spec.task_id)
        if not os.path.isdir(files.workdir(spec.task_id)):
            # The launch never got as far as spawning. The claim makes sure it
            # never does (a launcher that outlived its server may still hold
            # the request, waiting for the attempt it comes after); a claim
            # already there with no working directory is an earlier recovery's.
            try:
                os.close(os.open(base + ".started", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return None
            except FileExistsError:
                if not os.path.isdir(files.workdir(spec.task_id)):
                    return None
                # else the launcher claimed it in between: it is found below
            except OSError:
                return None  # its run files are gone (a reboot): nothing starts it
        if files is not self.files and not files.run.is_dir():
            return {**lost, **where}  # its run files went with a reboot
        if self.host_restarted and files is self.files:
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
            cgroup = self.files.cgroup(spec.task_id) if files is self.files else None
            self.release({"task": spec.task_id, "cgroup": str(cgroup) if cgroup else None, **where})
            return None
        text = ""
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            text = Path(base + ".started").read_text().strip()
            if text:
                break
            time.sleep(0.01)
        cgroup = self.files.cgroup(spec.task_id) if files is self.files else None
        # "PID START" from the launcher (a direct spawn), "PID" from a supervisor;
        # empty if the launcher died between its claim and its spawn's record.
        fields = [int(f) for f in text.split() if f.isdigit()]
        handle: Handle = {
            "task": spec.task_id,
            "pid": fields[0] if fields else 0,
            "cgroup": str(cgroup) if cgroup and cgroup.exists() else None,
            "group": spec.log_group,
            "stream": spec.log_stream,
            **where,
        }
        if len(fields) > 1:
            handle["start"] = fields[1]
        return handle

    # -- waiting --------------------------------------------------------------
    async def wait(self, handle: Handle) -> Exit:
        pid, task = int(handle["pid"]), str(handle["task"])
        if self._files_for(_home_of(handle)) is None:
            return _lost()  # launched on another host, or before this host rebooted
        if "start" not in handle:
            return await self._wait(handle, pid, task, 0)
        self._watched.add(pid)
        try:
            return await self._wait(handle, pid, task, int(handle["start"]))
        finally:
            self._watched.discard(pid)

    async def _wait(self, handle: Handle, pid: int, task: str, start: int) -> Exit:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        # Spawned by our launcher, which reaps it and tells us its exit; else
        # (under a supervisor, or spawned before a restart) a pidfd says when
        # it ends and its `.exit` file how.
        reported = self._launcher.exit_of(task) if self._launcher is not None else None
        fd = None if reported is not None else self._watch(pid, task, start, ended)
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
        code: int | None = None
        ended_at: int | None = None
        try:
            if reported is not None:
                try:
                    code = await reported
                    ended_at = self._launcher.ended_at(task) if self._launcher else None
                except LauncherLost:
                    # Its attempts are now our children (we are their subreaper).
                    self._reap_orphans_from_now_on()
                    fd = self._watch(pid, task, start, ended)
                    await ended
            else:
                await ended
        finally:
            if timer is not None:
                timer.cancel()
            if fd is not None:
                loop.remove_reader(fd)
            if reported is not None and self._launcher is not None:
                self._launcher.drop_exit(task)
        if start and code is None:
            if fd is not None:
                code = await self._reap_adopted(pid, task, fd, handle)
            if code is None:
                code = await self._exit_file(handle, task)
        if fd is not None:
            os.close(fd)
        await self._drain(handle, final=True)
        exit_ = self._exit(handle, pid, task, code)
        return dataclasses.replace(exit_, ended_at=ended_at) if ended_at is not None else exit_

    async def _reap_adopted(self, pid: int, task: str, fd: int, handle: Handle) -> int | None:
        """The exit of an attempt whose launcher died, if it is our child now
        (we are the subreaper); then reap what else we adopted and ended.

        A dying process closes its files (we see the launcher's socket close)
        before its children are handed to us: while the attempt's parent is
        still the dying launcher, it is ours in a moment."""
        deadline = time.monotonic() + _ADOPTION_SECONDS
        while True:
            try:
                info = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                break
            except ChildProcessError:
                lost = self._launcher
                stat = proc_stat(pid)
                if (
                    lost is None
                    or lost.alive
                    or not stat
                    or int(stat[1]) != lost.proc.pid
                    or time.monotonic() > deadline
                ):
                    return None  # not ours: its launcher lives, or init has it
                await asyncio.sleep(0.005)
            except OSError:
                return None
        if info is None:
            return None
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # still a zombie: the group id is its
        code = info.si_status + (0 if info.si_code == os.CLD_EXITED else 128)
        with contextlib.suppress(OSError):
            Path(self._base(task, handle) + ".exit").write_text(f"{code}\n")
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PIDFD, fd, os.WEXITED)
        self._reap_orphans()
        return code

    def _reap_orphans_from_now_on(self) -> None:
        """Reap adopted orphans now and every second: they end when they do
        (those killed with their job's group a moment after it)."""
        if self._orphan_reaper is not None:
            return
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._reap_orphans()
            self._orphan_reaper = loop.call_later(_ORPHAN_REAP_SECONDS, again)

        again()

    def _reap_orphans(self) -> None:
        """Reap ended orphans we adopted (what jobs left behind when their
        launcher died): children in another session than ours, never ones we
        spawned ourselves (their owners wait for them)."""
        session = os.getsid(0)
        ours = self._children | self._watched
        if self._launcher is not None:
            self._launcher.proc.poll()  # a dead launcher is reaped by its Popen
            ours.add(self._launcher.proc.pid)
        with contextlib.suppress(OSError):
            for tid in os.listdir("/proc/self/task"):
                with contextlib.suppress(OSError):
                    kids = Path(f"/proc/self/task/{tid}/children").read_text().split()
                    for kid in map(int, kids):
                        if kid in ours:
                            continue
                        fields = proc_stat(kid)
                        if fields and fields[0] == b"Z" and int(fields[3]) != session:
                            with contextlib.suppress(ChildProcessError):
                                os.waitpid(kid, os.WNOHANG)

    async def _exit_file(self, handle: Handle, task: str) -> int | None:
        """The exit status the attempt's launcher records (a launcher that
        outlived the server it served may be about to); None if it never comes."""
        path = self._base(task, handle) + ".exit"
        deadline = time.monotonic() + _EXIT_FILE_WAIT_SECONDS
        while True:
            try:
                return int(Path(path).read_text().strip())
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)

    async def _drain(self, handle: Handle, *, final: bool) -> None:
        """Pump a chunk at a time, letting the event loop serve requests in
        between: a job that printed a gigabyte must not stall the API."""
        while self._pump(handle, final=final):
            await asyncio.sleep(0)

    def _watch(self, pid: int, task: str, start: int, ended: asyncio.Future[None]) -> int | None:
        """A pidfd that becomes readable when the attempt's process (its
        supervisor, or itself) exits; None, with `ended` set, if it is gone.
        A directly spawned attempt still unreaped counts: its launcher died,
        so it is our child now, and `_reap_adopted` takes its exit status."""
        direct = start > 0

        def same() -> bool:
            return pid in self._children or _alive(pid, task, start, zombie=direct)

        fd = None
        if pid > 0 and same():
            with contextlib.suppress(ProcessLookupError):
                fd = os.pidfd_open(pid)
            if fd is not None and not same():  # the pid was reused in between
                os.close(fd)
                fd = None
        if fd is None:
            ended.set_result(None)
            return None

        def on_exit() -> None:
            if not ended.done():
                ended.set_result(None)

        asyncio.get_running_loop().add_reader(fd, on_exit)
        return fd

    def _exit(self, handle: Handle, pid: int, task: str, known: int | None = None) -> Exit:
        returncode: int | None = None
        direct = "start" in handle  # its killpg was done by whoever reaped it
        if pid > 0 and not direct:
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
            if self._subreaper:
                # What such jobs leave behind is adopted by us, not by init.
                self._reap_orphans_from_now_on()
        code = known
        if code is None and not direct:
            try:
                code = int(Path(self._base(task, handle) + ".exit").read_text().strip())
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
            return _lost()
        return Exit(exit_code=code)

    def _pump(self, handle: Handle, *, final: bool) -> bool:
        """Move the next chunk of new output into the log store, remembering
        how far it got; True if it moved something (there may be more).

        While the job runs only complete lines move; once it has ended, a last
        line without a newline is output too."""
        task = str(handle["task"])
        base = self._base(task, handle)
        try:
            offset = self._pumped.get(task)
            if offset is None:  # first look, perhaps after a restart
                offset = _read_offset(Path(base + ".pumped"))
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
        os.replace(tmp, base + ".pumped")
        return True

    # -- stopping and cleaning up ---------------------------------------------
    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        pid, task = int(handle["pid"]), str(handle["task"])
        start = int(handle.get("start", 0))
        if not self._signal(pid, task, start, signal.SIGTERM):
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not _alive(pid, task, start):
                return
            await asyncio.sleep(min(0.05, grace_seconds))
        self._killed.add(task)
        self._signal(pid, task, start, signal.SIGKILL)

    def _signal(self, pid: int, task: str, start: int, sig: int) -> bool:
        if pid <= 0 or not _alive(pid, task, start):
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
        self._ahead.pop(task, None)
        self._withdrawn.discard(task)
        self._not_live(task)
        cgroup = handle.get("cgroup")
        files = self._files_for(_home_of(handle))
        if files is not self.files:
            # Another engine's attempt (same host): its files, off the loop.
            if files is not None:
                self._cleaner.submit(self._clean, task, cgroup, files)
            return
        if self._launcher is None or not self._launcher.clean(task, cgroup):
            self._cleaner.submit(self._clean, task, cgroup, files)

    def _clean(self, task: str, cgroup: str | None, files: AttemptFiles) -> None:
        try:
            files.clean(task, cgroup)
        except OSError:
            log.exception("cleaning up after %s failed", task)

    def sweep(self, keep: set[str]) -> None:
        """Remove files and cgroups of attempts no longer tracked (left by a
        crash between recording an exit and cleaning up after it)."""
        for task in self.files.tasks() - keep:
            cgroup = self.files.cgroup(task)
            self.release({"task": task, "cgroup": str(cgroup) if cgroup else None})

    def close(self) -> None:
        if self._orphan_reaper is not None:
            self._orphan_reaper.cancel()
        if self._launcher is not None:
            self._launcher.close()
        # Clean-ups not yet made are left to the next start's sweep.
        self._cleaner.shutdown(wait=True, cancel_futures=True)
        run = self.files.run
        if run != self.files.root:
            with contextlib.suppress(OSError):
                os.rmdir(run)  # nothing left running: tmpfs is memory
        if self.cgroups is not None:
            self.cgroups.close()
