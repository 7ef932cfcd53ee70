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
for each launch in order: `{"task", "pid", "cgroup"}` with a pidfd of the
supervisor attached (taken before the launcher reaps it, so it can never name
a recycled pid), or `{"task", "error"}`.

The launcher reaps the supervisors it spawned, and exits when the server's
end of the socket closes. The supervisors outlive both: each records its job's
exit status in a file, as before.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from shoal.executors.attempt_files import AttemptFiles, Launched, LaunchRequest
from shoal.executors.base import LaunchError
from shoal.executors.cgroups import MemoryCgroups
from shoal.logs.store import LogStore

log = logging.getLogger("shoal.executors.launcher")

_MAX_MESSAGE = 1 << 20
# How long a launcher whose server is stopping goes on cleaning up, and how
# long the server waits for it (a little more) before killing it.
_CLEANUP_ON_EXIT_SECONDS = 1.0
_EXIT_WAIT_SECONDS = 3.0


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
        self._pending: list[tuple[str, asyncio.Future[tuple[Launched, int]]]] = []
        # A unix seqpacket socket holds only a few messages (max_dgram_qlen,
        # often 10): what does not fit waits here, and the server never blocks
        # on a busy launcher (nor deadlocks with it).
        self._outbox: collections.deque[bytes] = collections.deque()
        self._cleanups: list[tuple[str, str | None]] = []
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self.alive = True

    def launch(self, request: LaunchRequest) -> asyncio.Future[tuple[Launched, int]]:
        """Send the request now; the future gives (what was launched, a pidfd
        of its supervisor), or raises LaunchError, or LauncherLost if the
        launcher ended before answering."""
        future: asyncio.Future[tuple[Launched, int]] = self._loop.create_future()
        if not self.alive:
            future.set_exception(LauncherLost(request["task"]))
            return future
        self._pending.append((request["task"], future))
        self._send(orjson.dumps({"op": "launch", **request}))
        return future

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
        while True:
            try:
                data, fds = _receive(self.sock)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._lost()
                return
            message = orjson.loads(data)
            if not self._pending:
                log.error("the launcher answered a launch nobody asked for: %s", message)
                for fd in fds:
                    os.close(fd)
                continue
            task, future = self._pending.pop(0)
            if message.get("task") != task:
                log.error("the launcher answered %s for %s", message.get("task"), task)
            if "error" in message:
                future.set_exception(LaunchError(str(message["error"])))
            elif not fds:
                future.set_exception(LauncherLost(task))
            elif future.cancelled():
                os.close(fds[0])
            else:
                launched: Launched = {
                    "task": task,
                    "pid": int(message["pid"]),
                    "cgroup": message.get("cgroup"),
                }
                future.set_result((launched, fds[0]))

    def _lost(self) -> None:
        if self.alive:
            log.error("the launcher process ended; launching in the server from now on")
        self.alive = False
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        self._outbox.clear()
        pending, self._pending = self._pending, []
        for task, future in pending:
            if not future.done():
                future.set_exception(LauncherLost(task))

    def close(self) -> None:
        """Close our end: the launcher finishes what it was sent, then exits."""
        if self.alive:
            self._send_cleanups()
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
            # What is still waiting goes now (the launcher is reading).
            self.sock.settimeout(10)
            with contextlib.suppress(OSError):
                while self._outbox:
                    self.sock.send(self._outbox.popleft())
            self.alive = False
        self.sock.close()
        try:
            self.proc.wait(timeout=_EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the descriptors it carries, without blocking.
    (`socket.recv_fds` of Python 3.11 drops its `flags`.)"""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(
        _MAX_MESSAGE, socket.CMSG_LEN(fds.itemsize), socket.MSG_DONTWAIT
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


# -- the launcher process ------------------------------------------------------
def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _serve(sock: socket.socket, files: AttemptFiles) -> None:
    """Launches at once; clean-ups when no launch is waiting."""
    cleanups: collections.deque[tuple[str, str | None]] = collections.deque()
    while True:
        ready, _, _ = select.select([sock], [], [], 0 if cleanups else 1.0)
        if not ready:
            _reap()
            for _ in range(min(len(cleanups), 16)):
                task, cgroup = cleanups.popleft()
                try:
                    files.clean(task, cgroup)
                except OSError:
                    log.exception("cleaning up after %s failed", task)
            continue
        data = sock.recv(_MAX_MESSAGE)
        if not data:
            # The server is going. Clean up for a moment more, not for as long
            # as a backlog of thousands takes: the server waits for us, and
            # the next start sweeps what is left.
            deadline = time.monotonic() + _CLEANUP_ON_EXIT_SECONDS
            while cleanups and time.monotonic() < deadline:
                task, cgroup = cleanups.popleft()
                with contextlib.suppress(OSError):
                    files.clean(task, cgroup)
            return
        message = orjson.loads(data)
        if message.get("op") == "clean":
            cleanups.extend((task, cgroup) for task, cgroup in message["tasks"])
            continue
        _launch(sock, files, message)
        _reap()


def _launch(sock: socket.socket, files: AttemptFiles, message: Any) -> None:
    task = message["task"]
    try:
        launched = files.launch(message)
    except LaunchError as e:
        sock.send(orjson.dumps({"task": task, "error": e.reason}))
        return
    except Exception as e:  # never leave the server waiting
        log.exception("launching %s failed", task)
        sock.send(orjson.dumps({"task": task, "error": f"CannotStartContainerError: {e}"}))
        return
    pidfd = os.pidfd_open(launched["pid"])  # our unreaped child: it cannot be recycled
    try:
        socket.send_fds(sock, [orjson.dumps(launched)], [pidfd])
    finally:
        os.close(pidfd)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="shoal launcher: %(message)s")
    sock = socket.socket(fileno=int(sys.argv[1]))
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
    with contextlib.suppress(KeyboardInterrupt):
        _serve(sock, files)


if __name__ == "__main__":
    main()
