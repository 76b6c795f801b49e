"""``rlm-sdk batch --engine ray``: the same batch, run on a Ray cluster by ``rlm_sdk.ray``.

A front end on the public API. The items are read as the local engine reads them, except
that a file is passed on as a path, which the worker that runs the item reads (so on a
cluster it must be readable there). Output goes to a directory. Keys are never sent:
workers read them from their own environment. Provider base URLs, which are addresses and
not secrets, are forwarded to the actors' environment so that ``--model openai:...`` reaches
the same server on every node as on this one.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._items import read_batch_file

__all__ = ["add_ray_options", "cmd_batch_ray"]

_FORWARDED = ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_BASE_URL")


def add_ray_options(batch: argparse.ArgumentParser) -> None:
    """The ``batch`` command's engine options."""
    batch.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="run in this process (local, the default) or on a Ray cluster (ray: -o is a "
        "folder, -c is the runs in flight per actor)",
    )
    batch.add_argument(
        "--address",
        default=None,
        help="with --engine ray: the cluster (auto, ray://HOST:10001); default: a local one",
    )
    batch.add_argument(
        "--actors",
        type=int,
        default=2,
        metavar="N",
        help="with --engine ray: actors, each with its own RecursiveLM (default 2)",
    )


def _items(args: argparse.Namespace) -> list[dict[str, Any]]:
    src: Path = args.input
    if src.is_dir():
        if not args.query:
            raise SystemExit("rlm-sdk: a folder batch needs --query")
        return [
            {"id": f.name, "path": str(f.resolve()), "query": args.query}
            for f in sorted(p for p in src.iterdir() if p.is_file())
        ]
    return read_batch_file(src, args.query)


def _config(args: argparse.Namespace) -> Any:
    import rlm_sdk
    import rlm_sdk.ray as rlm_ray  # imported as a module: the CLI uses only public modules
    from rlm_sdk._frontend import load_settings

    model = args.model or load_settings().model
    if not model:
        raise SystemExit("rlm-sdk: no model given: pass --model or set RLM_MODEL")
    limits: dict[str, Any] = {"max_cost": args.max_cost, "max_wall_time": args.timeout}
    if args.max_depth is not None:
        limits["max_depth"] = args.max_depth
    if args.max_iterations is not None:
        limits["max_iterations"] = args.max_iterations
    repl: dict[str, Any] = {} if args.isolation is None else {"isolation": args.isolation}
    return rlm_ray.RLMConfig(
        model=model,
        sub_model=args.sub_model,
        max_tokens=args.max_tokens,
        limits=rlm_sdk.Limits(**limits),
        repl_options=rlm_sdk.REPLOptions(**repl),
    )


class _ProgressLine:
    """One status line on stderr, redrawn at most a few times a second."""

    def __init__(self) -> None:
        self._shown = 0.0
        self._lock = threading.Lock()

    def __call__(self, p: Any, *, final: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not final and now - self._shown < 0.25:
                return
            self._shown = now
        spend = f"{p.tokens:,} tok" + (f" · ${p.cost:.4f}" if p.cost is not None else "")
        todo = p.total - p.skipped
        line = (
            f"\rray batch {p.done}/{todo} · {p.failed} failed · {p.retried} retried · {spend}"
            f" · {p.elapsed_s:.0f}s"
        )
        print(line, end="\n" if final else "", file=sys.stderr, flush=True)


def cmd_batch_ray(args: argparse.Namespace) -> int:
    """Run ``rlm-sdk batch --engine ray``; exit status 1 if an item failed."""
    try:
        import rlm_sdk.ray as rlm_ray
    except ImportError as err:
        raise SystemExit(f"rlm-sdk: {err}") from None

    if args.actors < 1 or args.concurrency < 1:
        raise SystemExit("rlm-sdk: --actors and --concurrency must be at least 1")
    items = _items(args)
    config = _config(args)
    forwarded = {name: os.environ[name] for name in _FORWARDED if os.environ.get(name)}
    progress = _ProgressLine()
    print(f"{len(items)} items; output in {args.output}/", file=sys.stderr)
    if args.record is not None:
        print(
            f"rlm-sdk: with --engine ray, each actor records its runs under "
            f"{args.output}/trajectories/ (on its own node); --record's file is not used",
            file=sys.stderr,
        )
    summary = rlm_ray.run_batch(
        items,
        config,
        args.output,
        address=args.address,
        actors=args.actors,
        runs_per_actor=args.concurrency,
        runtime_env={"env_vars": forwarded} if forwarded else None,
        trajectories=args.record is not None,
        on_progress=progress,
    )
    if summary.skipped:
        print(f"{summary.skipped} already done", file=sys.stderr)
    progress(summary, final=True)
    return 1 if summary.failed else 0
