"""Helpers shared by the tests of the run loop."""

from __future__ import annotations

import os
from pathlib import Path


def descendants() -> set[int]:
    """Pids of every live process below this one (zombies included; Linux ``/proc``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    me, found = os.getpid(), set()
    for pid in parents:
        p = pid
        while p > 1 and p in parents:
            p = parents[p]
            if p == me:
                found.add(pid)
                break
    return found
