"""Ask one question about every file in a folder, concurrently, and save the answers.

Each file is its own RLM run with its own REPL. Answers are written to a JSONL file as
each run finishes, so an interrupted batch keeps what it finished.

    RLM_MODEL=openai:gpt-5-mini uv run python examples/batch_folder.py contracts/ \\
        -q "Who may terminate, and how?" -o answers.jsonl

The model comes from ``--model`` or ``RLM_MODEL`` (with its key in the environment or
``.env``); ``RLM_SUB_MODEL`` picks the sub model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import anyio

from rlm_sdk import BatchItem, BatchProgress, ConfigurationError, RecursiveLM


def progress(p: BatchProgress) -> None:
    cost = "" if p.cost is None else f", ${p.cost:.4f}"
    print(f"  {p.done}/{p.total} done, {p.failed} failed, {p.tokens:,} tokens{cost}")


async def main(args: argparse.Namespace) -> int:
    files = sorted(p for p in args.folder.iterdir() if p.is_file())
    items = [
        BatchItem(
            id=f.name, context=f.read_text(encoding="utf-8", errors="replace"), query=args.query
        )
        for f in files
    ]
    print(f"{len(items)} files in {args.folder}")
    failed = 0
    async with RecursiveLM(args.model, max_iterations=args.max_iterations) as rlm:
        stream = rlm.abatch_iter(items, concurrency=args.concurrency, on_progress=progress)
        async with contextlib.aclosing(stream) as results:
            with args.output.open("w", encoding="utf-8") as out:
                async for r in results:
                    row = {"id": r.id, "answer": r.answer, "error": r.error}
                    out.write(json.dumps(row) + "\n")
                    print(f"{r.id}: {r.answer}" if r.ok else f"{r.id}: FAILED {r.error}")
                    failed += 0 if r.ok else 1
    print(f"answers written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder of text files, one item each")
    parser.add_argument("-q", "--query", required=True, help="the question asked of every file")
    parser.add_argument("-o", "--output", type=Path, default=Path("answers.jsonl"))
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="files in flight at once")
    parser.add_argument("--max-iterations", type=int, default=10, help="turns per run")
    parser.add_argument("--model", help="default: RLM_MODEL, from the environment or .env")
    args = parser.parse_args()
    try:
        raise SystemExit(anyio.run(main, args))
    except ConfigurationError as err:  # no model named, or a missing key: one line, no traceback
        raise SystemExit(f"{parser.prog}: {err}") from None
