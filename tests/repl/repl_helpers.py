"""Process helpers for the REPL tests: they start real workers, so they look at real pids."""

from __future__ import annotations

import os
import time


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


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}
