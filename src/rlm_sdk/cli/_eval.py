"""``rlm-sdk eval``: the eval harness (:mod:`rlm_sdk.eval`) on the command line.

A front end like the rest of the CLI: it parses, reports progress on stderr and prints the
headline on stdout; :func:`rlm_sdk.eval.arun` does the work. ``--offline`` swaps the model
for the scripted oracle doubles, so the whole pipeline (tasks, REPL, scoring, report) can be
tried without a key; it says so loudly.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_eval_parser", "cmd_eval", "split_tasks"]

OFFLINE_MODEL = "scripted-oracle"


_SETTING = re.compile(r"^\w+=")


def split_tasks(text: str) -> list[str]:
    """``"niah:needles=4,haystack=prose,aggregate"`` -> ``["niah:needles=4,haystack=prose",
    "aggregate"]``: a piece that starts ``key=`` continues the task (or method) before it, so
    ``rlm:max_depth=2,sub_model=openai:gpt-5-nano,direct`` is two methods."""
    tasks: list[str] = []
    for piece in filter(None, (p.strip() for p in text.split(","))):
        if _SETTING.match(piece) and tasks:
            tasks[-1] += "," + piece
        else:
            tasks.append(piece)
    return tasks


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number above 0, not {text!r}")
        return value

    return parse


def add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Define ``rlm-sdk eval`` on the CLI's subparsers."""
    p = sub.add_parser(
        "eval",
        help="measure whether an RLM helps your model: generated tasks, scores, an HTML report",
        description=(
            "Run methods (the RLM, a direct long-context call) on generated long-context tasks "
            "at the lengths you choose, score them, and write results.jsonl, summary.json and "
            "report.html to --out. Running again with the same --out resumes."
        ),
    )
    p.add_argument(
        "--tasks",
        default="niah",
        help="task families, comma-separated, each optionally with parameters: niah, aggregate, "
        "pairs, chains, docs_multihop, code_lookup; e.g. niah:haystack=prose,needles=4,aggregate "
        "(default niah)",
    )
    p.add_argument(
        "--lengths", default="8k", help="context lengths, e.g. 8k,64k,512k,4M (default 8k)"
    )
    p.add_argument(
        "--methods",
        default="rlm,direct",
        help="rlm, direct, direct-truncate, each optionally with its own settings, e.g. "
        "rlm,rlm:max_depth=2,protocol=tools,direct (default rlm,direct)",
    )
    p.add_argument(
        "-n", type=_positive(int), default=20, help="samples per task and length (default 20)"
    )
    p.add_argument("--model", help="the model of every method (default: RLM_MODEL)")
    p.add_argument("--sub-model", help="the RLM's model for llm_query and child runs")
    p.add_argument(
        "--max-depth", type=_positive(int), default=None, help="the RLM's recursion depth"
    )
    p.add_argument(
        "--max-iterations", type=_positive(int), default=None, help="the RLM's turns per run"
    )
    p.add_argument(
        "--protocol",
        choices=("fenced", "tools", "auto"),
        default=None,
        help="how the RLM's model runs code and answers (default fenced)",
    )
    p.add_argument(
        "--max-tokens",
        type=_positive(int),
        default=None,
        metavar="N",
        help="cap on each model reply",
    )
    p.add_argument(
        "--max-cost",
        type=_positive(float),
        default=None,
        metavar="USD",
        help="stop the whole eval at this spend, earlier runs in --out included (needs reported "
        "costs or --price)",
    )
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=IN,OUT",
        help="USD per million prompt and completion tokens for a model whose provider reports no "
        "cost, e.g. openai:gpt-5-mini=0.25,2 (repeatable)",
    )
    p.add_argument(
        "--window",
        type=_positive(int),
        default=None,
        metavar="TOKENS",
        help="the direct call's context window (default: the SDK's table of known models)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        default=None,
        help="samples in flight (default: the provider's bound on requests in flight)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="base seed of the samples (default: a random one, kept in --out/eval.json so a "
        "resumed eval builds the same samples)",
    )
    p.add_argument(
        "--unit",
        choices=("chars", "tokens"),
        default="chars",
        help="what lengths count: characters (default), or tokens by the SDK's estimate "
        "(about 3.5 characters a token)",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("eval-results"),
        help="output folder (default eval-results)",
    )
    p.add_argument("--title", default=None, help="the report's title")
    p.add_argument("--no-report", action="store_true", help="write results and summary.json only")
    p.add_argument(
        "--offline",
        action="store_true",
        help="no model is called: scripted oracle doubles answer (a demo of the pipeline)",
    )
    p.add_argument("-v", dest="log_level", action="count", default=0, help="log to stderr")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _prices(items: list[str]) -> dict[str, tuple[float, float]]:
    prices: dict[str, tuple[float, float]] = {}
    for item in items:
        model, eq, pair = item.rpartition("=")
        try:
            prompt, completion = (float(x) for x in pair.split(","))
        except ValueError:
            raise SystemExit(f"rlm-sdk eval: --price is MODEL=IN,OUT, not {item!r}") from None
        if not eq or not model:
            raise SystemExit(f"rlm-sdk eval: --price is MODEL=IN,OUT, not {item!r}")
        prices[model] = (prompt, completion)
    return prices


async def cmd_eval(args: argparse.Namespace) -> int:
    """Run the eval the arguments describe; exit 0 when it finished (whatever it scored)."""
    from rlm_sdk import estimate_tokens
    from rlm_sdk import eval as rlm_eval
    from rlm_sdk.testing import ScriptedProvider

    rlm_options: dict[str, Any] = {
        k: v
        for k, v in {
            "sub_model": args.sub_model,
            "max_depth": args.max_depth,
            "max_iterations": args.max_iterations,
            "max_tokens": args.max_tokens,
            "protocol": args.protocol,
        }.items()
        if v is not None
    }
    direct_options: dict[str, Any] = {"window": args.window, "max_tokens": args.max_tokens}
    provider = None
    model = args.model
    if args.offline:
        print(
            "OFFLINE EVAL: no language model is called. Scripted test/demo doubles that solve "
            "each task through the REPL play the model's part; their scores say nothing about "
            "any model.",
            file=sys.stderr,
        )
        provider = ScriptedProvider(rlm_eval.oracle_policy())
        model = OFFLINE_MODEL
        rlm_options.pop("sub_model", None)
    done = 0

    def progress(row: rlm_eval.EvalRow) -> None:
        nonlocal done
        done += 1
        cost = "" if row.cost is None else f" ${row.cost:.4f}"
        print(
            f"[{done}] {row.sample_id} {row.method}: {row.status} score {row.score:.2f}"
            f" {row.latency_s:.1f}s{cost}",
            file=sys.stderr,
        )

    results = await rlm_eval.arun(
        split_tasks(args.tasks),
        _csv(args.lengths),
        split_tasks(args.methods),
        model=model,
        n=args.n,
        seed=args.seed,
        unit=args.unit,
        tokenizer=estimate_tokens if args.unit == "tokens" else None,
        out=args.out,
        provider=provider,
        concurrency=args.concurrency,
        max_cost=args.max_cost,
        prices=_prices(args.price),
        rlm_options=rlm_options,
        direct_options=direct_options,
        report=False if args.no_report else None,
        title=args.title,
        on_row=progress,
    )
    summary = rlm_eval.summarise(results.rows)
    print(
        f"{'family':<14} {'method':<16} {'n':>4} {'score %':>8} {'95 % interval':>15} {'mean cost':>10}"
    )
    for h in summary["headline"]:
        cost = "-" if h["cost_mean"] is None else f"${h['cost_mean']:.4f}"
        interval = f"{100 * h['ci_low']:.1f}-{100 * h['ci_high']:.1f}" if h["n"] else "-"
        mean = f"{100 * h['mean']:.1f}" if h["n"] else "-"
        print(
            f"{h['family']:<14} {h['method']:<16} {h['n']:>4} {mean:>8} {interval:>15} {cost:>10}"
        )
    print(f"results: {results.results}\nsummary: {results.summary}\nseed:    {results.seed}")
    if results.report is not None:
        print(f"report:  {results.report}")
    elif not args.no_report:
        print("report:  not written (pip install 'rlm-sdk[eval]' for the HTML report)")
    if args.max_cost and results.rows and all(r.cost is None for r in results.rows):
        print(
            "rlm-sdk eval: no call had a known cost, so --max-cost could not apply; give "
            "--price MODEL=IN,OUT for models whose provider reports none",
            file=sys.stderr,
        )
    if results.stopped_by_cost_cap:
        print(
            f"rlm-sdk eval: stopped at the cost cap (${results.spent:.4f} spent; "
            f"{results.not_run} runs not started; run again with a higher --max-cost to go on)",
            file=sys.stderr,
        )
    return 0
