"""The files, cgroup and process of a process-executor attempt.

Used in two places: by the launcher process (see `launcher.py`), which makes
attempts off the server's event loop, and by the server itself when there is
no launcher. Nothing here needs the server's state: a launch is described by
a `LaunchRequest` that crosses a socket as JSON.

Per attempt: `<task>.work/` under the root on disk (the job's working
directory), and under the run directory `<task>.out` (its output),
`<task>.started` (the claim on the attempt, then "PID START" of the job the
launcher spawned, or the pid of its supervisor), `<task>.exit` (the exit
status) and `<task>.pumped` (how much output has reached the log store).

The run directory is on tmpfs where the host has one: these files need only
outlive the server's process, not the host (a reboot ends the jobs too), and
making a file there costs microseconds where a disk filesystem can spend half
a millisecond of CPU on the inode. For the same reason emptied working
directories are kept in a small pool (`.pool/`) and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import NotRequired, TypedDict

from shoal.executors.base import LaunchError
from shoal.executors.cgroups import MemoryCgroups
from shoal.executors.which import CachedWhich
from shoal.logs.store import LogStore

# The supervisor of each attempt the server launches itself (when it has no
# launcher process; the launcher spawns and supervises attempts directly), run by `sh -c`:
# - claims the attempt atomically (`set -C` makes `>` an O_EXCL create), so an
#   attempt that a restarted server has declared abandoned never starts late;
# - joins the attempt's memory cgroup, so MEMORY is a hard limit;
# - waits for the command and writes its exit status to a file, so the status
#   survives the death of the server (and of the launcher).
SUPERVISOR = r"""
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
# How long a PATH lookup is remembered (a program put earlier in the PATH is
# seen after at most this long).


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _ticks(boottime_ns: int) -> int:
    return boottime_ns * _CLOCK_TICKS // 1_000_000_000


def same_start(recorded: int, actual: int) -> bool:
    """Is `actual` (from /proc/PID/stat) the start recorded at the spawn? The
    record is the tick the spawn began in; the child's start may fall in the next."""
    return recorded <= actual <= recorded + 1


def proc_stat(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name: [state, ppid,
    pgrp, session, ...], starttime at 19; empty if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start(pid: int) -> int:
    """When `pid` started (clock ticks since boot); 0 if it is gone. With the
    pid, it names one process: a pid can be reused, the pair cannot (pids
    wrap after millions of processes, not within one clock tick)."""
    stat = proc_stat(pid)
    return int(stat[19]) if stat else 0


def own_cgroup_procs(cgroups: MemoryCgroups | None) -> Path | None:
    """The `cgroup.procs` of the memory cgroup this process is in now."""
    if cgroups is None or cgroups.root is None:
        return None
    mount = cgroups.root.parent
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (cgroups.v2 and controllers == "") or (
            not cgroups.v2 and "memory" in controllers.split(",")
        ):
            return mount / path.lstrip("/") / "cgroup.procs"
    return None


def _join(procs: Path | str) -> None:
    """Move this process into the cgroup of `procs` ("0": the writer)."""
    fd = os.open(procs, os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


class LaunchRequest(TypedDict):
    task: str
    command: list[str]
    environment: dict[str, str]  # complete: nothing is added
    memory_mib: int | None
    log_group: str
    log_stream: str
    # The launcher's own attempt this one waits for (see launcher.py).
    after: NotRequired[str]


class Launched(TypedDict):
    task: str
    pid: int
    cgroup: str | None
    # Set for an attempt spawned directly by the launcher, which supervises
    # it: the process's start time (clock ticks since boot, /proc/PID/stat),
    # which tells it from a later process that got the same pid.
    start: NotRequired[int]
    at: NotRequired[int]  # when it was spawned (epoch ms), from the launcher


class AttemptFiles:
    def __init__(
        self,
        root: Path,
        run: Path,
        logs: LogStore,
        cgroups: MemoryCgroups | None,
        job_user: tuple[int, int] | None = None,
    ) -> None:
        """`job_user`: (uid, gid) the jobs run as, when not as this process's
        user: their working directories are theirs, and `setpriv` drops to
        them (no supplementary groups) just before the command."""
        self.job_user = job_user
        self._setpriv = shutil.which("setpriv") if job_user is not None else None
        if job_user is not None and self._setpriv is None:
            raise OSError("running jobs as another user needs setpriv (util-linux)")
        self.root = root
        self.run = run
        self.logs = logs
        self.cgroups = cgroups
        # Where a direct spawn comes back to after joining a job's cgroup.
        self.home_cgroup = own_cgroup_procs(cgroups)
        self._home_fd = -1  # its cgroup.procs, opened once: a path lookup in cgroupfs per launch
        self._root, self._run = str(root), str(run)  # paths built per attempt
        self._pool = root / ".pool"
        self._pool.mkdir(parents=True, exist_ok=True)
        self._spare = [entry.name for entry in os.scandir(self._pool)]
        self._pool_serial = max((int(n) for n in self._spare if n.isdigit()), default=0)
        self._which = CachedWhich()

    def base(self, task: str) -> str:
        """Prefix of the attempt's files in the run directory."""
        return f"{self._run}/{task}"

    def workdir(self, task: str) -> str:
        return f"{self._root}/{task}.work"

    def cgroup(self, task: str) -> Path | None:
        return self.cgroups.root / task if self.cgroups and self.cgroups.root else None

    # -- launching ------------------------------------------------------------
    def launch(self, request: LaunchRequest, *, direct: bool = False) -> Launched:
        """Make the attempt's stream, working directory and cgroup, then spawn
        its supervisor (in a session of its own); LaunchError if it cannot.

        `direct` (the launcher process only): spawn the command itself, with
        no supervisor; the caller is its parent and must record its exit."""
        task = request["task"]
        if not request["command"]:
            raise LaunchError(
                "CannotStartContainerError: the job has no command, and the process "
                "executor runs commands, not images"
            )
        command = list(request["command"])
        if "/" not in command[0]:
            # The path is resolved here, as a container runtime does before it
            # execs: a missing program fails to start (not exit code 127 from
            # the shell), and the supervisor never runs a shell builtin of the
            # same name in its place (`echo` with escapes, `exit 3`).
            found = self._which(command[0], request["environment"].get("PATH", os.defpath))
            if found is None:
                raise LaunchError(
                    f'CannotStartContainerError: exec: "{command[0]}": executable file '
                    "not found in $PATH"
                )
            command[0] = found
        try:
            # As the awslogs driver does, the stream exists once the job starts;
            # made first, so that nothing can fail after the spawn.
            self.logs.create_stream(request["log_group"], request["log_stream"])
        except OSError as e:
            raise LaunchError(
                f"CannotStartContainerError: cannot create the log stream: {e}"
            ) from None
        workdir = self.workdir(task)
        try:
            self._make_workdir(workdir)
        except FileExistsError:
            raise LaunchError(
                f"CannotStartContainerError: attempt {task} was launched before"
            ) from None
        except OSError as e:
            raise LaunchError(
                f"CannotStartContainerError: cannot make the working directory: {e}"
            ) from None
        if self.job_user is not None:
            try:
                os.chown(workdir, *self.job_user)
            except OSError as e:
                raise LaunchError(
                    f"CannotStartContainerError: cannot give the working directory to the "
                    f"job's user: {e}"
                ) from None
            uid, gid = self.job_user
            command = [
                str(self._setpriv),
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        cgroup = None
        memory = request["memory_mib"]
        if self.cgroups is not None and memory:
            cgroup = self.cgroups.create(task, memory)
        base = self.base(task)
        if direct and (cgroup is None or self.home_cgroup is not None):
            return self._spawn_direct(task, command, request["environment"], workdir, cgroup)
        procs = str(cgroup / "cgroup.procs") if cgroup else ""
        argv = ["sh", "-c", SUPERVISOR, f"shoal-{task}", base, workdir, procs]
        argv += command
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
                request["environment"],
                file_actions=actions,
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD),
            )
        except OSError as e:
            raise LaunchError(f"CannotStartContainerError: {e}") from None
        return {"task": task, "pid": pid, "cgroup": str(cgroup) if cgroup else None}

    def _spawn_direct(
        self,
        task: str,
        command: list[str],
        environment: dict[str, str],
        workdir: str,
        cgroup: Path | None,
    ) -> Launched:
        """Claim the attempt, then spawn its command as our child: in its
        working directory (ours for the moment of the spawn) and its cgroup
        (likewise: we join it, spawn, and go back, since posix_spawn cannot
        place a child in a cgroup and a fork of Python costs three spawns)."""
        base = self.base(task)
        try:
            claim = os.open(base + ".started", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            # A restarted server declared the attempt abandoned: it never starts late.
            raise LaunchError(
                f"CannotStartContainerError: attempt {task} was abandoned before it started"
            ) from None
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, base + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        try:
            joined = False
            try:
                if cgroup is not None:
                    _join(f"{cgroup}/cgroup.procs")
                    joined = True
                os.chdir(workdir)
                before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                # Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive
                # exec: a job gets the defaults, as in a container (`yes | head`).
                try:
                    pid = os.posix_spawn(
                        command[0],
                        command,
                        environment,
                        file_actions=actions,
                        setsid=True,
                        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD),
                    )
                except OSError as e:  # as a container runtime words it
                    why = (e.strerror or str(e)).lower()
                    raise LaunchError(
                        f'CannotStartContainerError: exec: "{command[0]}": {why}'
                    ) from None
                after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            finally:
                os.chdir(self.root)
                if joined:
                    self._go_home()
            # Written before anything else can happen to the attempt: a server
            # that finds the claim empty knows the launcher died within these
            # few microseconds.
            # Its start time lies between `before` and `after`; /proc/PID/stat,
            # read while the child execs, costs as much as the rest of a launch.
            start = _ticks(before)
            if _ticks(after) > start + 1:
                start = process_start(pid)
            os.write(claim, f"{pid} {start}\n".encode())
        except OSError as e:
            raise LaunchError(f"CannotStartContainerError: {e}") from None
        finally:
            os.close(claim)
        return {
            "task": task,
            "pid": pid,
            "cgroup": str(cgroup) if cgroup else None,
            "start": start,
        }

    def _go_home(self) -> None:
        """Back into the cgroup this process started in."""
        assert self.home_cgroup is not None
        if self._home_fd < 0:
            self._home_fd = os.open(self.home_cgroup, os.O_WRONLY | os.O_CLOEXEC)
        os.write(self._home_fd, b"0")

    def _make_workdir(self, path: str) -> None:
        if os.path.lexists(path):
            raise FileExistsError(path)
        while self._spare:
            try:
                os.rename(f"{self._pool}/{self._spare.pop()}", path)
                return
            except OSError:
                continue
        os.mkdir(path)

    # -- cleaning up ----------------------------------------------------------
    def clean(self, task: str, cgroup: str | None) -> None:
        """Remove a finished attempt's files and cgroup."""
        self._drop_workdir(self.workdir(task))
        base = self.base(task)
        for suffix in (".out", ".started", ".exit", ".pumped"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base + suffix)
        if self.cgroups is not None and cgroup:
            self.cgroups.release(cgroup)

    def _drop_workdir(self, path: str) -> None:
        """Back to the pool if the job left it empty, else removed."""
        try:
            with os.scandir(path) as entries:
                empty = next(entries, None) is None
            if empty and len(self._spare) < _POOL_SIZE:
                os.chmod(path, 0o755)
                self._pool_serial += 1
                name = str(self._pool_serial)
                os.rename(path, f"{self._pool}/{name}")
                self._spare.append(name)
                return
        except FileNotFoundError:
            return
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)

    def tasks(self) -> set[str]:
        """Task ids that have files or a cgroup here."""
        tasks = {entry.split(".", 1)[0] for entry in os.listdir(self.root)}
        tasks |= {entry.split(".", 1)[0] for entry in os.listdir(self.run)}
        if self.cgroups is not None and self.cgroups.root is not None:
            with contextlib.suppress(OSError):
                tasks |= {p.name for p in self.cgroups.root.iterdir() if p.is_dir()}
        tasks.discard("")  # the pool
        return tasks
