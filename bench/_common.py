"""Helpers shared by the benchmark scripts: a fake model server process and medians."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


@contextmanager
def model_server(policy: str, latency: float) -> Iterator[str]:
    """A fake OpenAI-compatible server on 127.0.0.1 in a child process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_server.py"), policy, str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the fake server did not start: {url!r}")
        yield url
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def report(name: str, walls: list[float], critical: float, bar: float) -> None:
    m = median(walls)
    ratio = m / critical
    verdict = "PASS" if ratio <= bar else "MISS"
    print(
        f"{name}: median {m * 1000:.1f} ms over {len(walls)} runs; critical path "
        f"{critical * 1000:.0f} ms; ratio {ratio:.3f}x (bar {bar:.2f}x) {verdict}"
    )
    print("  runs (ms):", " ".join(f"{w * 1000:.1f}" for w in walls))
