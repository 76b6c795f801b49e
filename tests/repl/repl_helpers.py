"""Process helpers for the REPL tests: they start real workers, so they look at real pids."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import anyio


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``R``, ``S``, ``Z``...), or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, or being reaped as we read
        return None


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    return process_state(pid) not in (None, "Z", "X")


def wait_not_running(pid: int, timeout: float = 3.0) -> bool:
    """Poll until ``pid`` stops running; False if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_reaped(pid: int, timeout: float = 3.0) -> bool:
    """Poll until ``pid`` is gone from the process table (dead and reaped)."""
    deadline = time.monotonic() + timeout
    while process_state(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


async def open_many_sessions(count: int, **session: Any) -> list[int]:
    """Open ``count`` sessions at once, each running a cell on its own context; their pids.

    Waits until every worker is gone and reaped (a forked one is reaped by the fork server,
    after the session has closed).
    """
    import anyio

    from rlm_sdk.repl import REPLOptions, REPLSession

    pids: list[int] = []

    async def one(index: int) -> None:
        async with REPLSession(
            f"context {index}", options=REPLOptions(start_timeout=30), **session
        ) as repl:
            result = await repl.run_cell("context")
            assert result.stdout == f"'context {index}'\n"
            assert repl.pid is not None
            pids.append(repl.pid)

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(one, index)
    assert len(set(pids)) == count
    assert all(wait_reaped(pid) for pid in pids)  # gone and reaped, no zombies
    return pids


def accepted(server: socket.socket) -> bool:
    """Whether a connection is waiting on ``server`` (it is accepted and closed)."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


async def fds_settle_to(expected: set[int], timeout: float = 5.0) -> set[int]:
    """This process's open descriptors once they equal ``expected``, or after ``timeout`` s.

    Descriptors of closed sessions go on a thread or after the fork server's reply, so on a
    loaded machine they may take a moment; a real leak never settles.
    """
    with anyio.move_on_after(timeout):
        while open_fds() != expected:
            await anyio.sleep(0.02)
    return open_fds()


def forge_on_channel(data: bytes) -> str:
    """Cell code that writes ``data`` onto the worker's protocol pipe, then waits.

    The pipe is found with fstat (``/proc`` is out of the sandbox's reach): a write-only pipe
    that is not the cell's own stdout or stderr.
    """
    return (
        "import fcntl, os, stat, time\n"
        "capture = {os.fstat(1).st_ino, os.fstat(2).st_ino}\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        info = os.fstat(fd)\n"
        "        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE\n"
        "    except OSError:\n"
        "        continue\n"
        "    if stat.S_ISFIFO(info.st_mode) and mode == os.O_WRONLY and info.st_ino not in capture:\n"
        f"        os.write(fd, {data!r})\n"
        "time.sleep(5)"
    )


def thread_children(pid: int) -> list[int]:
    """The children of ``pid``'s main thread (the processes it started and has not reaped)."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]
