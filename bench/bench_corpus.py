"""Corpora larger than memory: one run over files on disk, and the peak memory it takes.

Builds (once, in ``--data``, default a folder under the temporary directory) a folder of
``--files`` documents of ``--file-kb`` KB each, one of which holds a magic number, and one
big file of ``--big-mb`` MB with the number in its middle. Then one run over each, with a
scripted stand-in model (a TEST/DEMO double, no language model): it greps the context in the
REPL and answers from what the REPL printed. Reported: the wall time, the time to the first
cell, and the peak PSS of the whole process tree (this process, the fork server and
the worker), sampled every 20 ms.

    uv run python bench/bench_corpus.py                  # 100,000 files of 100 KB (10 GB) and 1 GB
    uv run python bench/bench_corpus.py --files 2000     # a smaller run
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import threading
import time
from pathlib import Path

import anyio

from rlm_sdk import CellStarted, CompletionRequest, Event, RecursiveLM
from rlm_sdk.testing import ScriptedProvider

_WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "ember",
    "lantern",
    "meadow",
    "copper",
    "violet",
    "harbor",
    "quiet",
    "thunder",
]


def _block(kb: int, seed: int) -> bytes:
    rng = random.Random(seed)
    line = []
    out = bytearray()
    while len(out) < kb * 1024:
        line = rng.choices(_WORDS, k=rng.randint(4, 10))
        out += (" ".join(line) + "\n").encode()
    return bytes(out[: kb * 1024])


def build_folder(root: Path, files: int, kb: int, number: int) -> None:
    marker = root / ".complete"
    if marker.exists():
        return
    blocks = [_block(kb, seed) for seed in range(16)]
    needle_at = files // 2
    for i in range(files):
        folder = root / f"part{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        data = blocks[i % len(blocks)]
        if i == needle_at:
            middle = len(data) // 2
            data = data[:middle] + f"\nThe magic number is {number}\n".encode() + data[middle:]
        (folder / f"doc{i:06d}.txt").write_bytes(data)
    marker.write_text("ok")


def build_file(path: Path, mb: int, number: int) -> None:
    if path.exists() and path.stat().st_size >= mb * 1024 * 1024:
        return
    block = _block(1024, 99)
    with path.open("wb") as f:
        for i in range(mb):
            if i == mb // 2:
                f.write(f"\nThe magic number is {number}\n".encode())
            f.write(block)


def _pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    pids = [root]
    for pid in parents:
        p = pid
        while p in parents and p > 1:
            p = parents[p]
            if p == root:
                pids.append(pid)
                break
    return pids


def policy(request: CompletionRequest) -> str:
    """The stand-in model: grep the context, then answer from the REPL's output."""
    if len(request.messages) == 2:
        return "```repl\nprint(context.grep(r'magic number is \\d+', limit=3))\n```"
    found = re.search(r"magic number is (\d+)", request.messages[-1].content)
    return f"FINAL({found.group(1) if found else 'not found'})"


async def one_run(context: Path, label: str, number: int) -> None:
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, sum(_pss_kb(pid) for pid in _tree(os.getpid())))

    first_cell: list[float] = []
    started = time.perf_counter()

    def on_event(event: Event) -> None:
        if isinstance(event, CellStarted) and not first_cell:
            first_cell.append(time.perf_counter() - started)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        async with RecursiveLM("stand-in", provider=ScriptedProvider(policy)) as rlm:
            result = await rlm.acomplete(context, "What is the magic number?", on_event=on_event)
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    assert result.answer == str(number), result.answer
    cell = result.trajectory.turns[0].cells[0].duration_s
    print(
        f"{label}: answered in {wall:.2f} s; the first cell started at {first_cell[0]:.2f} s "
        f"(the grep over everything took {cell:.2f} s); peak PSS of the process tree "
        f"{peak / 1024:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "rlm-bench-corpus"
    )
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--file-kb", type=int, default=100)
    parser.add_argument("--big-mb", type=int, default=1024)
    args = parser.parse_args()
    number = 7_654_321
    folder = args.data / f"folder-{args.files}x{args.file_kb}k"
    big = args.data / f"big-{args.big_mb}m.txt"
    t0 = time.perf_counter()
    build_folder(folder, args.files, args.file_kb, number)
    build_file(big, args.big_mb, number)
    print(f"data ready in {time.perf_counter() - t0:.1f} s under {args.data}")
    size = sum(p.stat().st_size for p in folder.rglob("*.txt"))
    anyio.run(one_run, folder, f"{args.files:,} files, {size / 1e9:.2f} GB", number)
    anyio.run(one_run, big, f"one file of {big.stat().st_size / 1e9:.2f} GB", number)


if __name__ == "__main__":
    main()
