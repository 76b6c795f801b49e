"""What the worker sandbox costs at start-up: ``python -I`` + ``apply_sandbox``, per policy.

Each run starts a fresh ``python -I`` that imports ``repl/_sandbox.py`` as a sibling module
(its directory on ``sys.path`` for the import only, as the worker does), applies the policy and
exits; the wall time is measured from here, spawn to
exit, and the child reports the time ``apply_sandbox`` itself took. Medians of ``--repeat``
runs (30 by default). The worker's whole handshake must stay within 60 ms.

Then, as the fork server starts its workers: children forked from this process apply the
full policy and report the CPU time ``apply_sandbox`` took, once with nothing prepared (each
child loads the libraries and compiles its seccomp filter) and once after ``prepare()`` (what
the fork server does before it forks: each child writes its pid into a ready-made filter).

    uv run python bench/bench_sandbox.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import median

SANDBOX_PY = Path(__file__).resolve().parents[1] / "src" / "rlm_sdk" / "repl" / "_sandbox.py"

CHILD = r"""
import json, os, sys, time
if sys.argv[1] == "bare":
    print(json.dumps({"apply_ms": 0.0, "layers": []}))
    raise SystemExit
started = time.perf_counter()
sys.path.insert(0, os.path.dirname(sys.argv[2]))
import _sandbox as sandbox
del sys.path[0]
loaded = time.perf_counter()
layers = sandbox.apply_sandbox(json.loads(sys.argv[1]))
done = time.perf_counter()
print(json.dumps({"import_ms": (loaded - started) * 1e3, "apply_ms": (done - loaded) * 1e3,
                  "layers": layers}))
"""

VARIANTS: dict[str, dict[str, object] | None] = {
    "python -I, no sandbox module": None,
    'mode="none" (rlimits)': {"mode": "none"},
    'mode="auto", netns off': {"disable_layers": ["netns"]},
    'mode="auto", seccomp off': {"disable_layers": ["seccomp"]},
    'mode="auto", landlock off': {"disable_layers": ["landlock"]},
    'mode="auto" (all layers)': {},
}


def measure(policy: dict[str, object] | None, workdir: str) -> tuple[float, float, float, int]:
    """One run: (wall ms, import ms, apply ms, number of layers)."""
    arg = "bare" if policy is None else json.dumps({"workdir": workdir, **policy})
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, arg, str(SANDBOX_PY)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    wall = (time.perf_counter() - started) * 1e3
    report = json.loads(out)
    return wall, report.get("import_ms", 0.0), report["apply_ms"], len(report["layers"])


def _load_sandbox() -> Any:
    """A fresh copy of ``_sandbox.py``, loaded by file as the worker loads it."""
    spec = importlib.util.spec_from_file_location("_sandbox_bench", SANDBOX_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def forked(prepared: bool, workdir: str, repeat: int) -> float:
    """Median CPU ms of ``apply_sandbox`` (every layer) in children forked from here."""
    sandbox = _load_sandbox()
    if prepared:
        sandbox.prepare()
    policy = {"workdir": workdir, "tmpdir": workdir}
    samples = []
    for _ in range(repeat):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            before = resource.getrusage(resource.RUSAGE_SELF)
            sandbox.apply_sandbox(policy)
            after = resource.getrusage(resource.RUSAGE_SELF)
            spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            os.write(write, json.dumps(spent * 1e3).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as answer:
            samples.append(float(answer.read()))
        os.waitpid(pid, 0)
    return median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(f"{'variant':<32} {'layers':>6} {'wall ms':>8} {'import ms':>10} {'apply ms':>9}")
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(3):  # warm the page cache
            measure({}, workdir)
        for name, policy in VARIANTS.items():
            runs = [measure(policy, workdir) for _ in range(args.repeat)]
            wall, imp, apply = (median([run[i] for run in runs]) for i in range(3))
            print(f"{name:<32} {runs[0][3]:>6} {wall:>8.1f} {imp:>10.2f} {apply:>9.2f}")
        cold = forked(False, workdir, args.repeat)
        ready = forked(True, workdir, args.repeat)
    print(f"medians of {args.repeat} runs each")
    print(
        f"forked, apply_sandbox CPU: {cold:.2f} ms compiling its filter, {ready:.2f} ms ready-made"
    )


if __name__ == "__main__":
    main()
