"""The launcher: a helper process that starts attempts for the process executor.

A launch is a dozen system calls (a log stream, a working directory, a
cgroup, and posix_spawn, whose vfork holds the caller until the child has
exec'd), and cleaning up after an attempt is a dozen more. Made on the
server's event loop they cost a third of its time per job; a thread would
fight the event loop for the GIL. So a small process of its own does them, on
the other core, and the server only sends a message per launch.

The wire is a SOCK_SEQPACKET socket pair (message boundaries kept, so each
message is one JSON object). Server to launcher: `{"op": "launch", ...a
LaunchRequest}` or `{"op": "clean", "tasks": [[task, cgroup], ...]}`. Launcher to server,
for each launch: `{"task", "pid", "cgroup", "start"}` (the pid and start time
name the process: see `attempt_files.same_start`), or `{"task", "error"}`;
and `{"exited": [[task, code, epoch ms], ...], "launched": [answers]}` (below).

A launch may name an attempt it comes `after` (one of ours, on the slot the
engine gives the new one): it waits here until that attempt has been reaped,
and starts the moment it is, without a round trip to the server. Its answer
comes with that exit, so answers are matched by task, not by order. A launch
still waiting when the server goes never happens (the next server finds it
never started, and queues its job again).

The launcher is the parent of the attempts it spawns (no per-attempt
supervisor: that `sh` doubled the cost of a short job). It reaps each, kills
what the job left in its process group, writes `<task>.exit` and sends the
exit (with the answers of what waited for it). It is also the subreaper of
what jobs leave behind. When the server's end closes, it stops launching and
stays until its attempts have ended, so their exits are recorded for the next
server; if it is killed, its attempts are adopted by the server (see
`process.py`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from shoal.executors.attempt_files import AttemptFiles, Launched, LaunchRequest
from shoal.executors.base import LaunchError, LaunchWithdrawn
from shoal.executors.cgroups import MemoryCgroups
from shoal.logs.store import LogStore

log = logging.getLogger("shoal.executors.launcher")

# Messages are read into one buffer of this size per side: `recv(1 MiB)`
# would map and unmap a fresh megabyte for every message (three system calls).
_MAX_MESSAGE = 1 << 20
# How long a launcher whose server is stopping goes on cleaning up; how long
# a stopping server waits for a launcher with no jobs left to leave; and how
# long it may block handing over its last requests (the launcher may itself be
# blocked telling us of exits we no longer read: then those requests are lost,
# as in a crash, and the next server recovers their attempts).
_CLEANUP_ON_EXIT_SECONDS = 1.0
_CLEANUP_BACKLOG = 32  # finished attempts left to clean up before a busy launcher cleans too
_EXIT_WAIT_SECONDS = 3.0
_LAST_SEND_SECONDS = 2.0
_PR_SET_CHILD_SUBREAPER = 36


class LauncherLost(Exception):
    """The launcher process ended with this launch in flight."""


class Launcher:
    """The server's side: starts the launcher process and talks to it."""

    def __init__(self, config: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shoal.executors.launcher", str(theirs.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C is the server's to handle
            )
        assert self.proc.stdin is not None
        with self.proc.stdin:
            self.proc.stdin.write(orjson.dumps(config))
        self.sock = ours
        self._pending: dict[str, asyncio.Future[Launched]] = {}
        # A unix seqpacket socket holds only a few messages (max_dgram_qlen,
        # often 10): what does not fit waits here, and the server never blocks
        # on a busy launcher (nor deadlocks with it).
        self._outbox: collections.deque[bytes] = collections.deque()
        self._cleanups: list[tuple[str, str | None]] = []
        self._exits: dict[str, asyncio.Future[int]] = {}
        self._ended_at: dict[str, int] = {}
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray(_MAX_MESSAGE)
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self.alive = True

    def launch(self, request: LaunchRequest) -> asyncio.Future[Launched]:
        """Send the request now; the future gives what was launched, or raises
        LaunchError, or LauncherLost if the launcher ended before answering."""
        future: asyncio.Future[Launched] = self._loop.create_future()
        if not self.alive:
            future.set_exception(LauncherLost(request["task"]))
            return future
        self._pending[request["task"]] = future
        self._send(orjson.dumps({"op": "launch", **request}))
        return future

    def withdraw(self, task: str) -> None:
        """Call off a launch waiting for the attempt it comes after (if it has
        begun, its answer comes as usual)."""
        if self.alive and task in self._pending:
            self._send(orjson.dumps({"op": "withdraw", "task": task}))

    def clean(self, task: str, cgroup: str | None) -> bool:
        """Ask for an attempt's files to be removed (those asked for in one turn
        of the event loop go in one message); False if it cannot be asked."""
        if not self.alive:
            return False
        if not self._cleanups:
            self._loop.call_soon(self._send_cleanups)
        self._cleanups.append((task, cgroup))
        return True

    def _send_cleanups(self) -> None:
        tasks, self._cleanups = self._cleanups, []
        if tasks and self.alive:
            self._send(orjson.dumps({"op": "clean", "tasks": tasks}))

    def _send(self, data: bytes) -> None:
        if not self._outbox:
            try:
                self.sock.send(data, socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                self._loop.add_writer(self.sock.fileno(), self._flush)
            except OSError:
                self._lost()
                return
        self._outbox.append(data)

    def _flush(self) -> None:
        while self._outbox:
            try:
                self.sock.send(self._outbox[0], socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                self._lost()
                return
            self._outbox.popleft()
        self._loop.remove_writer(self.sock.fileno())

    def _on_readable(self) -> None:
        view = memoryview(self._buffer)
        while True:
            try:
                size = self.sock.recv_into(view, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                size = 0
            if not size:
                self._lost()
                return
            message = orjson.loads(view[:size])
            if "exited" in message:
                # With the answers of the launches that waited for them.
                for answer in message.get("launched", ()):
                    self._answered(answer)
                for task, code, *at in message["exited"]:
                    self._exited(str(task), int(code), int(at[0]) if at else None)
                continue
            self._answered(message)

    def _answered(self, message: Any) -> None:
        task = str(message.get("task"))
        future = self._pending.pop(task, None)
        if future is None:
            log.error("the launcher answered a launch nobody asked for: %s", message)
            return
        if future.cancelled():
            return
        if message.get("withdrawn"):
            future.set_exception(LaunchWithdrawn())
        elif "error" in message:
            future.set_exception(LaunchError(str(message["error"])))
        else:
            launched: Launched = {
                "task": task,
                "pid": int(message["pid"]),
                "cgroup": message.get("cgroup"),
            }
            if "start" in message:
                launched["start"] = int(message["start"])
                self._exits[task] = self._loop.create_future()
            if "at" in message:
                launched["at"] = int(message["at"])
            future.set_result(launched)

    def exit_of(self, task: str) -> asyncio.Future[int] | None:
        """The exit status of an attempt this launcher spawned directly (it
        is their parent: it reaps them and tells us); None for any other. It
        may have come already. `drop_exit` once it is taken."""
        return self._exits.get(task)

    def drop_exit(self, task: str) -> None:
        self._exits.pop(task, None)
        self._ended_at.pop(task, None)

    def _exited(self, task: str, code: int, at: int | None) -> None:
        future = self._exits.get(task)
        if future is not None and not future.done():
            if at is not None:
                self._ended_at[task] = at
            future.set_result(code)

    def ended_at(self, task: str) -> int | None:
        """When an attempt whose exit came was reaped (epoch ms)."""
        return self._ended_at.get(task)

    def _lost(self) -> None:
        if self.alive:
            log.error("the launcher process ended; launching in the server from now on")
        self.alive = False
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        self._outbox.clear()
        pending, self._pending = self._pending, {}
        for task, future in pending.items():
            if not future.done():
                future.set_exception(LauncherLost(task))
        self._ended_at.clear()
        exits, self._exits = self._exits, {}
        for task, exit_future in exits.items():
            if not exit_future.done():
                exit_future.set_exception(LauncherLost(task))

    def close(self) -> None:
        """Close our end: the launcher finishes what it was sent, then exits
        once the attempts it spawned have ended (recording their exits)."""
        if self.alive:
            self._send_cleanups()
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
            # What is still waiting goes now (the launcher is reading).
            self.sock.settimeout(_LAST_SEND_SECONDS)
            with contextlib.suppress(OSError):
                while self._outbox:
                    self.sock.send(self._outbox.popleft())
            self.alive = False
        self.sock.close()
        running = any(not future.done() for future in self._exits.values())
        for future in self._exits.values():
            future.cancel()
        self._exits.clear()
        if not running:  # else it stays with the jobs, and we do not wait
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=_EXIT_WAIT_SECONDS)


# -- the launcher process ------------------------------------------------------
class _Children:
    """The attempts this launcher spawned and is the parent of, by pid."""

    def __init__(self, files: AttemptFiles) -> None:
        self.files = files
        self.tasks: dict[int, str] = {}
        # Attempts under an `sh` supervisor (which records their exits itself),
        # by the supervisor's pid: launches may wait for them too.
        self.supervised: dict[int, str] = {}
        self.live: set[str] = set()  # the tasks of both
        self.ended: list[str] = []  # supervised attempts ended, since last asked

    def reap(self) -> list[list[Any]]:
        """Record every exit there is: ([task, exit code, epoch ms], ...) of
        our attempts (supervised ones go to `ended`).

        An attempt's exit is seen before it is reaped (WNOWAIT), so that its
        pid cannot be reused while the rest of its process group is killed
        (what a job leaves running ends with it, as in a container) and its
        exit status goes to `<task>.exit`, for a server that is not there."""
        exited: list[list[Any]] = []
        now = time.time_ns() // 1_000_000  # when the exits were seen (epoch ms)
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return exited
            if info is None:
                return exited
            pid = info.si_pid
            supervised = self.supervised.pop(pid, None)
            if supervised is not None:
                self.live.discard(supervised)
                self.ended.append(supervised)
            task = self.tasks.pop(pid, None)
            if task is not None:
                self.live.discard(task)
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                code = info.si_status
                if info.si_code != os.CLD_EXITED:
                    code += 128  # killed by a signal, as a shell reports it
                try:
                    _write_exit(self.files.base(task) + ".exit", code)
                except OSError:
                    log.exception("recording the exit of %s failed", task)
                exited.append([task, code, now])
            # Ours, or an orphan of a job's (we are their subreaper): reaped.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _write_exit(path: str, code: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{code}\n".encode())
    finally:
        os.close(fd)


def _become_subreaper() -> None:
    """Orphans of our jobs come to us (and are reaped), not to init."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _serve(sock: socket.socket, files: AttemptFiles) -> None:
    """Launches at once; exits as they happen; clean-ups when no message is
    waiting, and two per message while more than _CLEANUP_BACKLOG are due.
    When the server goes, the launcher stays for the attempts it
    runs (recording their exits in files) and leaves when the last ends."""
    cleanups: collections.deque[tuple[str, str | None]] = collections.deque()
    children = _Children(files)
    # Launches waiting for an attempt to end, by the task they come after.
    waiting: dict[str, Any] = {}
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select
    connected = True
    cleanup_deadline = float("inf")
    view = memoryview(bytearray(_MAX_MESSAGE))

    def lose_server() -> None:
        # Clean up for a moment more, not for as long as a backlog of
        # thousands takes: the next start sweeps what is left. What waited
        # never starts: the next server queues those jobs again.
        nonlocal connected, cleanup_deadline
        connected = False
        cleanup_deadline = time.monotonic() + _CLEANUP_ON_EXIT_SECONDS
        waiting.clear()

    try:
        while True:
            if not connected:
                if time.monotonic() > cleanup_deadline:
                    cleanups.clear()  # the next start's sweep takes them
                if not children.tasks and not cleanups:
                    return
            watched = [sock.fileno(), wake_r] if connected else [wake_r]
            ready, _, _ = select.select(watched, [], [], 0 if cleanups else 1.0)
            if wake_r in ready or not ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                exited = children.reap()
                ended = [task for task, *_ in exited] + children.ended
                children.ended = []
                answers: list[Any] = []
                if ended and waiting and connected and _server_gone(sock):
                    # Closed while they waited: they never start (the next
                    # server queues their jobs again).
                    waiting.clear()
                for task in ended if connected else ():  # what follows them starts at once
                    _start_waiting(files, children, waiting, task, answers)
                if (exited or answers) and connected:
                    # One message: the exits, and the launches they let go.
                    try:
                        sock.send(orjson.dumps({"exited": exited, "launched": answers}))
                    except OSError:
                        lose_server()
            # Clean-ups wait for a quiet moment, but not for ever: under a
            # steady stream there is none, and a backlog holds cgroups (of
            # which the kernel has at most 65535) while the launches make new
            # ones instead of reusing them.
            due = 16 if not ready else min(len(cleanups) - _CLEANUP_BACKLOG, 2)
            for _ in range(min(len(cleanups), due)):
                task, cgroup = cleanups.popleft()
                try:
                    files.clean(task, cgroup)
                except OSError:
                    log.exception("cleaning up after %s failed", task)
            if not ready:
                continue
            if sock.fileno() not in ready:
                continue
            try:
                size = sock.recv_into(view)
            except OSError:  # a killed server's end may reset rather than close
                size = 0
            if not size:
                lose_server()
                continue
            message = orjson.loads(view[:size])
            if message.get("op") == "clean":
                cleanups.extend((task, cgroup) for task, cgroup in message["tasks"])
                continue
            if message.get("op") == "withdraw":
                if not _withdraw(sock, waiting, message["task"]):
                    lose_server()
                continue
            after = message.get("after")
            queued = {m["task"] for m in waiting.values()} if waiting else set()
            if after and (after in children.live or after in queued):
                while after in waiting:  # (never so: the engine gives a slot one successor)
                    after = waiting[after]["task"]
                waiting[after] = message
                continue
            if not _launch(sock, files, children, message):
                lose_server()
    finally:
        if files.cgroups is not None:
            files.cgroups.close()  # its spares, and the parent if that leaves it empty
        signal.signal(signal.SIGCHLD, previous)
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)


def _withdraw(sock: socket.socket, waiting: dict[str, Any], task: str) -> bool:
    """Call off the launch of `task` if it is waiting (what waits behind it
    then waits for what it waited for); False if the server is gone."""
    for after, message in waiting.items():
        if message["task"] == task:
            behind = waiting.pop(task, None)
            if behind is None:
                del waiting[after]
            else:
                waiting[after] = behind
            break
    else:
        return True  # launched (its answer is on its way), or never asked for
    try:
        sock.send(orjson.dumps({"task": task, "error": "withdrawn", "withdrawn": True}))
    except OSError:
        return False
    return True


def _server_gone(sock: socket.socket) -> bool:
    """Has the server's end closed (with nothing left unread)?"""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _start_waiting(
    files: AttemptFiles,
    children: _Children,
    waiting: dict[str, Any],
    ended: str,
    answers: list[Any],
) -> None:
    """Launch what waited for `ended` (and, if that fails to start, what
    waited for it in turn), adding the answers to `answers`."""
    message = waiting.pop(ended, None)
    while message is not None:
        answers.append(_start(files, children, message))
        if message["task"] in children.live:
            return
        message = waiting.pop(message["task"], None)


def _launch(sock: socket.socket, files: AttemptFiles, children: _Children, message: Any) -> bool:
    """Launch and answer; False if the server is gone (the attempt, if it
    started, is ours to see to the end all the same)."""
    try:
        sock.send(orjson.dumps(_start(files, children, message)))
    except OSError:
        return False
    return True


def _start(files: AttemptFiles, children: _Children, message: Any) -> Any:
    """Launch; the answer for the server."""
    task = message["task"]
    at = time.time_ns() // 1_000_000  # (before: the job may run before we return)
    try:
        launched = files.launch(message, direct=True)
    except LaunchError as e:
        return {"task": task, "error": e.reason}
    except Exception as e:  # never leave the server waiting
        log.exception("launching %s failed", task)
        return {"task": task, "error": f"CannotStartContainerError: {e}"}
    if "start" in launched:
        children.tasks[launched["pid"]] = task
    else:
        children.supervised[launched["pid"]] = task
    children.live.add(task)
    launched["at"] = at
    return launched


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="shoal launcher: %(message)s")
    sock = socket.socket(fileno=int(sys.argv[1]))
    # Inherited from the server, so inheritable: jobs must not get it (they
    # could read launch requests, secrets included, or forge our answers, and
    # it would hide our death from the server).
    sock.set_inheritable(False)
    config = orjson.loads(sys.stdin.buffer.read())
    cgroups = MemoryCgroups(config["cgroup"], sweep=False) if config.get("cgroup") else None
    user = config.get("user")
    files = AttemptFiles(
        Path(config["root"]),
        Path(config["run"]),
        LogStore(Path(config["logs"])),
        cgroups,
        (int(user[0]), int(user[1])) if user else None,
    )
    _become_subreaper()
    with contextlib.suppress(KeyboardInterrupt):
        _serve(sock, files)


if __name__ == "__main__":
    main()
