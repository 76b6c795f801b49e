"""The ``rlm-sdk`` command line: ``run``, ``demo`` and friends.

A front end: it uses only the public API, and it is the one place (with the server) that
configures logging and output. Errors print as one actionable line; ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ._eval import add_eval_parser, cmd_eval
from ._items import read_batch_file
from ._ray import add_ray_options, cmd_batch_ray

if TYPE_CHECKING:
    from rlm_sdk import Corpus, JSONLRecorder, RLMResult

__all__ = ["main"]

_NEEDS_RICH = "rlm-sdk: the {what} needs rich, which is not installed: pip install 'rlm-sdk[cli]'"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):  # refuses nan too
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text!r}")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="root model, e.g. openai:gpt-5-mini (default: RLM_MODEL)")
    p.add_argument(
        "--sub-model", help="model for llm_query and child runs (default: the root model)"
    )
    p.add_argument(
        "--max-depth", type=int, default=None, help="recursion depth of rlm_query (default 1)"
    )
    p.add_argument("--max-iterations", type=int, default=None, help="turns per run (default 20)")
    p.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="cap on the tokens of each model reply (default: the server's own)",
    )
    p.add_argument(
        "--max-cost",
        type=_positive_float,
        default=None,
        metavar="USD",
        help="stop a run once its whole tree has cost this much (needs reported costs)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="stop a run after this much wall time (each item's, in a batch)",
    )
    p.add_argument(
        "--isolation",
        choices=("auto", "strict", "none"),
        default=None,
        help="the REPL worker's sandbox: every layer the host has (auto, the default), "
        "all of them or fail (strict), or resource limits only (none, for trusted code)",
    )
    p.add_argument(
        "--protocol",
        choices=("fenced", "tools", "auto"),
        default="fenced",
        help="how the model runs code: fenced repl blocks (the default), the REPL as a tool, "
        "or tools where the provider has them (auto)",
    )
    p.add_argument(
        "--record", type=Path, metavar="FILE", help="write every event to this JSONL trajectory"
    )
    p.add_argument("--verbose", action="store_true", help="show each step of the run live")
    p.add_argument(
        "-v", dest="log_level", action="count", default=0, help="log to stderr (-v info, -vv debug)"
    )
    p.add_argument(
        "--log-json", action="store_true", help="write the SDK's logs to stderr as JSON lines"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-sdk",
        description="Recursive Language Models: answer queries over contexts far too long for one prompt.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="answer a query over files or stdin")
    run.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="context files (several become a list), or one folder, whose files the REPL "
        "worker reads from disk as the code asks; stdin when none",
    )
    run.add_argument("-q", "--query", help="the query (default: the context states the task)")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _add_model_options(run)

    demo = sub.add_parser("demo", help="needle in a haystack over a million lines")
    demo.add_argument("--lines", type=int, default=1_000_000, help="lines in the haystack")
    demo.add_argument("--seed", type=int, default=None, help="seed for the haystack")
    demo.add_argument(
        "--offline",
        action="store_true",
        help="use the scripted stand-in even when a provider is configured",
    )
    _add_model_options(demo)

    batch = sub.add_parser("batch", help="run many items from a JSONL file or a folder, resumably")
    batch.add_argument(
        "input",
        type=Path,
        help="JSONL of {id?, context | context_file, query?}, or a folder of files",
    )
    batch.add_argument(
        "-o", "--output", type=Path, required=True, help="JSONL results, one line per finished item"
    )
    batch.add_argument("-q", "--query", help="the query for every item (required for a folder)")
    batch.add_argument("-c", "--concurrency", type=int, default=8, help="items in flight at once")
    add_ray_options(batch)  # --engine, --address, --actors: cli/_ray.py
    _add_model_options(batch)

    view = sub.add_parser("view", help="render a saved JSONL trajectory in the terminal")
    view.add_argument("file", type=Path)
    view.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    add_eval_parser(sub)  # rlm-sdk eval: its own module, cli/_eval.py
    try:
        from rlm_sdk.server import add_serve_parser
    except ImportError:  # pragma: no cover - the server package is part of the SDK
        pass
    else:
        add_serve_parser(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(getattr(args, "log_level", 0), logging.DEBUG)
    if getattr(args, "debug", False):
        level = logging.DEBUG
    if getattr(args, "log_json", False):
        import structlog

        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        )
    elif level < logging.WARNING:
        logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(message)s")


def _read_context(files: Sequence[Path]) -> str | list[str] | Corpus:
    """Stdin, one file's text, several files' texts as a list, or, when any argument is a
    folder, every file as a corpus the REPL worker reads from disk (never loaded here)."""
    if any(f.is_dir() for f in files):
        from rlm_sdk import ConfigurationError, Corpus

        if len(files) > 1:
            raise SystemExit("rlm-sdk: give one folder, or files, not both")
        try:
            return Corpus(files[0])
        except ConfigurationError as err:
            raise SystemExit(f"rlm-sdk: {err}") from err
    if not files or [str(f) for f in files] == ["-"]:
        if sys.stdin.isatty():
            raise SystemExit("rlm-sdk: no context: pass files, or pipe text on stdin")
        return sys.stdin.read()
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8", errors="replace"))
        except OSError as err:
            raise SystemExit(f"rlm-sdk: cannot read {f}: {err.strerror}") from err
    return texts[0] if len(texts) == 1 else texts


def _rlm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_sdk import Limits

    return {
        "sub_model": args.sub_model,
        "max_depth": args.max_depth,
        "max_iterations": args.max_iterations,
        "max_tokens": args.max_tokens,
        "limits": Limits(max_cost=args.max_cost, max_wall_time=args.timeout),
        "isolation": args.isolation,
        "protocol": args.protocol,
        "verbose": args.verbose,
    }


def _recorder(args: argparse.Namespace, stack: contextlib.ExitStack) -> JSONLRecorder | None:
    """The ``--record`` file's recorder, closed with ``stack``; ``None`` without the option."""
    from rlm_sdk import JSONLRecorder

    if args.record is None:
        return None
    try:
        return stack.enter_context(JSONLRecorder(args.record))
    except OSError as err:
        raise SystemExit(f"rlm-sdk: cannot write {args.record}: {err.strerror}") from err


def _say_why_stopped(result: RLMResult) -> None:
    """A run that a budget stopped says which one, on stderr (stdout keeps the answer)."""
    if result.stop_reason == "limit" and result.error:
        print(f"rlm-sdk: stopped: {result.error}", file=sys.stderr)


async def _cmd_run(args: argparse.Namespace) -> int:
    from rlm_sdk import RecursiveLM

    context = _read_context(args.files)
    with contextlib.ExitStack() as stack:
        recorder = _recorder(args, stack)
        async with RecursiveLM(args.model, on_limit="return", **_rlm_kwargs(args)) as rlm:
            result = await rlm.acomplete(context, args.query, on_event=recorder)
    _say_why_stopped(result)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(result.answer if result.answer is not None else f"(no answer: {result.stop_reason})")
    return 0 if result.answer is not None else 1


def _demo_model(args: argparse.Namespace) -> str | None:
    """The model the demo runs for real: --model, RLM_MODEL, or a default for a key that is set."""
    from rlm_sdk._frontend import DEMO_ANTHROPIC_MODEL, DEMO_OPENAI_MODEL, load_settings

    s = load_settings()
    if args.model or s.model:
        return str(args.model or s.model)
    if s.openai_api_key:
        return DEMO_OPENAI_MODEL
    if s.anthropic_api_key:
        return DEMO_ANTHROPIC_MODEL
    return None


async def _cmd_demo(args: argparse.Namespace) -> int:
    from rlm_sdk import RecursiveLM
    from rlm_sdk.testing import NIAH_QUERY, ScriptedProvider, make_haystack, niah_policy

    model = None if args.offline else _demo_model(args)
    offline = model is None
    t0 = time.perf_counter()
    context, number = make_haystack(args.lines, seed=args.seed)
    print(
        f"Haystack: {args.lines:,} lines, {len(context) / 1e6:.1f} MB, built in "
        f"{time.perf_counter() - t0:.1f} s. Query: {NIAH_QUERY!r}"
    )
    kwargs = _rlm_kwargs(args)
    if offline:
        print(
            "OFFLINE DEMO: no language model is called. A scripted test/demo double plays the "
            "model's part (set OPENAI_API_KEY or pass --model to use a real model)."
        )
        rlm = RecursiveLM(
            "scripted-niah", provider=ScriptedProvider(niah_policy), on_limit="return", **kwargs
        )
    else:
        print(f"Running for real with {model}.")
        rlm = RecursiveLM(model, on_limit="return", **kwargs)
    with contextlib.ExitStack() as stack:
        recorder = _recorder(args, stack)
        async with rlm:
            result = await rlm.acomplete(context, NIAH_QUERY, on_event=recorder)
    _say_why_stopped(result)
    usage = result.usage
    print(f"Answer: {result.answer}")
    print(
        f"Expected: {number} -> {'correct' if result.answer and str(number) in result.answer else 'WRONG'}; "
        f"{result.iterations} turns, {usage.calls} model calls, {usage.total_tokens:,} tokens, "
        f"{result.wall_time_s:.2f} s" + ("" if not offline else " (offline: no model was called)")
    )
    return 0 if result.answer and str(number) in result.answer else 1


def _batch_items(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The batch's items, each with an ``id`` (line number or file name) for resuming."""
    src: Path = args.input
    items: list[dict[str, Any]] = []
    if src.is_dir():
        if not args.query:
            raise SystemExit("rlm-sdk: a folder batch needs --query")
        for f in sorted(p for p in src.iterdir() if p.is_file()):
            items.append(
                {
                    "id": f.name,
                    "context": f.read_text(encoding="utf-8", errors="replace"),
                    "query": args.query,
                }
            )
        return items
    for item in read_batch_file(src, args.query):
        path = item.get("path")
        context = item.get("context")
        if path is not None:
            context = Path(path).read_text(encoding="utf-8", errors="replace")
        items.append({"id": item["id"], "context": context, "query": item["query"]})
    return items


def _finished_ids(output: Path) -> set[str]:
    """Ids already written to ``output`` without an error: a resumed batch skips them."""
    done: set[str] = set()
    if not output.exists():
        return done
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by an interruption: that item runs again
        if isinstance(row, dict) and row.get("error") is None and "id" in row:
            done.add(str(row["id"]))
    return done


async def _cmd_batch(args: argparse.Namespace) -> int:
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        raise SystemExit(_NEEDS_RICH.format(what="batch's progress bar")) from None

    from rlm_sdk import BatchItem, BatchProgress, RecursiveLM

    items = _batch_items(args)
    skip = _finished_ids(args.output)
    todo = [
        BatchItem(id=i["id"], context=i["context"], query=i["query"])
        for i in items
        if i["id"] not in skip
    ]
    print(
        f"{len(items)} items; {len(skip & {i['id'] for i in items})} already done; running {len(todo)}",
        file=sys.stderr,
    )
    failed = 0
    with (
        contextlib.ExitStack() as stack,
        Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed · {task.fields[spend]}"),
            TimeElapsedColumn(),
            transient=False,
        ) as bar,
        args.output.open("a", encoding="utf-8") as out,
    ):
        recorder = _recorder(args, stack)
        task = bar.add_task("batch", total=len(todo), failed=0, spend="")

        def progress(p: BatchProgress) -> None:
            spend = f"{p.tokens:,} tok" + (f" · ${p.cost:.4f}" if p.cost is not None else "")
            bar.update(task, completed=p.done, failed=p.failed, spend=spend)

        async with RecursiveLM(args.model, **_rlm_kwargs(args)) as rlm:
            async for outcome in rlm.abatch_iter(
                todo, concurrency=args.concurrency, on_progress=progress, on_event=recorder
            ):
                r = outcome.result
                row = {
                    "id": outcome.id,
                    "answer": outcome.answer,
                    "stop_reason": None if r is None else r.stop_reason,
                    "error": outcome.error,
                    "error_type": outcome.error_type,
                    "iterations": None if r is None else r.iterations,
                    "wall_time_s": None if r is None else round(r.wall_time_s, 3),
                    "tokens": None if r is None else r.usage.total_tokens,
                    "cost": None if r is None else r.usage.cost,
                    "run_id": None if r is None else r.run_id,
                }
                out.write(json.dumps(row) + "\n")
                out.flush()  # a finished item survives an interruption
                failed += 0 if outcome.ok else 1
    return 1 if failed else 0


async def _cmd_view(args: argparse.Namespace) -> int:
    from rlm_sdk import load_events
    from rlm_sdk._frontend import console_view

    view = console_view(file=sys.stdout, threaded=False)
    for event in load_events(args.file):
        view.render(event)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlm-sdk`` console script."""
    args = _parser().parse_args(argv)
    _configure_logging(args)
    from rlm_sdk import RLMError

    if args.command == "serve":
        from rlm_sdk.server import serve

        return serve(args)
    command = {
        "run": _cmd_run,
        "demo": _cmd_demo,
        "batch": _cmd_batch,
        "view": _cmd_view,
        "eval": cmd_eval,
    }[args.command]
    try:
        if args.command == "batch" and args.engine == "ray":
            return cmd_batch_ray(args)  # sync: Ray's driver wants the main thread
        return anyio.run(command, args)
    except KeyboardInterrupt:
        print("rlm-sdk: interrupted", file=sys.stderr)
        return 130
    except RLMError as err:
        if args.debug:
            raise
        print(f"rlm-sdk: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
