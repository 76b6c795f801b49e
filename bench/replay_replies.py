"""Replay real model replies through the SDK's reply parser and compare with their harness.

The folder ``real-replies`` (by default ``../shared/real-replies`` next to this checkout,
or the path given as the first argument) holds replies that real models wrote during real
RLM runs of other harnesses, with what each harness extracted and ran. For every raw
reply this script asks the SDK what it would run and what it would answer, and compares:

* code: the blocks the SDK would run against the blocks the harness ran (each block's
  surrounding whitespace ignored, order kept);
* final answers: the SDK's answer against the harness's, where the harness logged one. A
  ``FINAL_VAR`` (or ``FINAL`` of a bound name) is resolved from the variables the harness
  logged for that run, as the SDK would resolve it from its REPL.

Sources with no raw text (``fast-rlm`` logs code its harness had already extracted) are
counted but not compared. Nothing here calls a model or starts a REPL worker.

    uv run python bench/replay_replies.py [PATH] [--show N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_sdk import _protocol as proto

DEFAULT_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "real-replies"


@dataclass
class Case:
    """One raw reply and what its harness made of it."""

    source: str
    key: str
    reply: str
    harness_code: list[str] | None
    """The blocks the harness ran, in order; None when it did not log them."""
    harness_final: str | None = None
    has_harness_final: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    """The run's REPL variables as the harness logged them before this reply (``str()``)."""


@dataclass
class Reading:
    """What the SDK makes of one reply."""

    code: list[str]
    final: str | None
    fence: str | None = None
    notes: list[str] = field(default_factory=list)


# --- the SDK's reading -------------------------------------------------------------------


def sdk_reading(case: Case) -> Reading:
    """The code the SDK would run for ``case.reply`` and the answer it would give."""
    parsed = proto.parse_reply(case.reply)
    code = list(parsed.code_blocks)
    final: str | None = None
    answer = parsed.final
    if answer is not None:
        if answer.kind == "var":
            final = case.variables.get(answer.value)
        elif answer.name is not None and answer.name in case.variables:
            final = case.variables[answer.name]  # FINAL(name) of a bound REPL variable
        else:
            final = answer.value
    return Reading(code, final, parsed.fence, list(parsed.notes))


# --- the sources -------------------------------------------------------------------------


def recursive_flow(root: Path) -> Iterator[Case]:
    path = root / "recursive-flow-even.jsonl"
    if not path.exists():
        return
    for n, line in enumerate(path.read_text().splitlines()):
        record = json.loads(line)
        harness = record.get("harness_code") or ""
        yield Case(
            "recursive-flow",
            f"{record.get('session')}#{n}",
            record["reply"],
            [harness] if harness.strip() else [],
        )


def rlms_trace(root: Path) -> Iterator[Case]:
    path = root / "rlms-pr46" / "trace-log-example.jsonl"
    if not path.exists():
        return
    variables: dict[str, str] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "run_context":
            variables = {}
        if record.get("type") != "iteration":
            continue
        blocks = record.get("code_blocks") or []
        yield Case(
            "rlms",
            f"iteration {record['iteration']}",
            record["response"],
            [b["code"] for b in blocks],
            record.get("final_answer"),
            True,
            dict(variables),
        )
        for block in blocks:
            local = (block.get("result") or {}).get("locals") or {}
            variables.update({k: _text(v) for k, v in local.items()})


def dspy_log(root: Path) -> Iterator[Case]:
    """``dspy.RLM``'s verbose log: each iteration's Reasoning and Code fields, as one reply."""
    path = root / "dspy-cohort" / "cohort_analysis_demo.ipynb"
    if not path.exists():
        return
    notebook = json.loads(path.read_text())
    text = "".join(
        "".join(output.get("text", ""))
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "dspy.predict.rlm" in "".join(output.get("text", ""))
    )
    chunks = re.split(r"[^\n]*INFO dspy\.predict\.rlm: RLM iteration (\d+)/\d+\n", text)
    for number, chunk in zip(chunks[1::2], chunks[2::2], strict=True):
        body = re.split(r"\n[^\n]*INFO dspy\.predict\.rlm: ", chunk)[0]
        reasoning, _, code_field = body.partition("\nCode:\n")
        reasoning = reasoning.removeprefix("Reasoning: ")
        # dspy strips the fence around its Code field and runs what is inside.
        inner = re.sub(r"^```[a-z]*\n", "", code_field.strip())
        inner = re.sub(r"\n?```$", "", inner)
        yield Case("dspy", f"iteration {number}", f"{reasoning}\n{code_field}", [inner])


def fast_rlm_count(root: Path) -> int:
    """Replies in the fast-rlm logs: code extracted by their harness, no raw text to parse."""
    folder = root / "fast-rlm"
    if not folder.exists():
        return 0
    return sum(
        1
        for path in folder.glob("*.jsonl")
        for line in path.read_text().splitlines()
        if json.loads(line).get("event_type") in ("code_generated", "execution_result")
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# --- comparing ---------------------------------------------------------------------------


def _same_code(ours: list[str], theirs: list[str]) -> bool:
    return [c.strip() for c in ours] == [c.strip() for c in theirs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--show", type=int, default=20, help="differences to print")
    args = parser.parse_args()
    root: Path = args.path
    if not root.is_dir():
        print(f"no real replies at {root}: nothing to replay")
        return 0
    cases = [*recursive_flow(root), *rlms_trace(root), *dspy_log(root)]
    code_total = code_same = final_total = final_same = 0
    fences: dict[str, int] = {}
    differences: list[str] = []
    for case in cases:
        reading = sdk_reading(case)
        if reading.fence:
            fences[reading.fence] = fences.get(reading.fence, 0) + 1
        if case.harness_code is not None:
            code_total += 1
            if _same_code(reading.code, case.harness_code):
                code_same += 1
            else:
                differences.append(
                    f"[code] {case.source} {case.key}: SDK runs {len(reading.code)} block(s) "
                    f"{_brief(reading.code)}; harness ran {len(case.harness_code)} "
                    f"{_brief(case.harness_code)}; reply ends {case.reply[-80:]!r}"
                )
        if case.has_harness_final:
            final_total += 1
            if reading.final == case.harness_final:
                final_same += 1
            else:
                differences.append(
                    f"[final] {case.source} {case.key}: SDK answers {reading.final!r}; harness "
                    f"answered {case.harness_final!r}; reply ends {case.reply[-80:]!r}"
                )
    by_source: dict[str, int] = {}
    for case in cases:
        by_source[case.source] = by_source.get(case.source, 0) + 1
    print(f"real replies from {root}:")
    print("  " + ", ".join(f"{name} {n}" for name, n in by_source.items()))
    skipped = fast_rlm_count(root)
    if skipped:
        print(f"  fast-rlm {skipped} (code pre-extracted by its harness: not compared)")
    print(f"code agreement: {code_same}/{code_total} = {_pct(code_same, code_total)}")
    print(f"final-answer agreement: {final_same}/{final_total} = {_pct(final_same, final_total)}")
    if fences:
        print("fences accepted: " + ", ".join(f"{k} {v}" for k, v in sorted(fences.items())))
    for line in differences[: args.show]:
        print("  " + line)
    if len(differences) > args.show:
        print(f"  ... {len(differences) - args.show} more (--show N)")
    return 0


def _brief(blocks: list[str]) -> str:
    return "[" + ", ".join(f"{len(b)} chars" for b in blocks) + "]"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "n/a"


if __name__ == "__main__":
    sys.exit(main())
