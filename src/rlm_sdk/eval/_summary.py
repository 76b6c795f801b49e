"""The numbers of a report: means with 95 % intervals, paired comparisons, quantiles.

Pure Python on purpose: the summary is what CI reads, so it must not need the plotting
extra, and a few thousand rows need no array library. Intervals: Wilson's for 0/1 scores
(right near 0 and 1, where the normal one leaves [0, 1]), the normal one on the sample's
spread for graded scores. Paired comparisons count wins, ties and losses per sample, give
a seeded paired-bootstrap interval for the mean difference, and McNemar's exact test when
both methods' scores are 0/1. Rows stopped by the cost cap are not scores: they are left
out of every mean and counted among the failures.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._rows import EvalRow

__all__ = [
    "SCHEMA",
    "interval",
    "mcnemar_p",
    "paired",
    "quantile",
    "summarise",
    "wilson",
]

SCHEMA = "rlm_sdk.eval.summary"
Z95 = 1.959964
QUANTILES = (0.25, 0.5, 0.75, 0.95)


def wilson(successes: float, n: int) -> tuple[float, float]:
    """Wilson's 95 % interval for a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(scores: Sequence[float]) -> tuple[float, float]:
    """A 95 % interval for the mean of ``scores`` (each in [0, 1])."""
    n = len(scores)
    if n == 0:
        return 0.0, 1.0
    if all(s in (0.0, 1.0) for s in scores):
        return wilson(sum(scores), n)
    if n == 1:
        return 0.0, 1.0
    mean = math.fsum(scores) / n
    sd = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile by linear interpolation between order statistics."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value from the discordant pairs."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / float(2**n)
    return min(1.0, 2 * tail)


def paired(a: Sequence[float], b: Sequence[float], *, resamples: int = 2000) -> dict[str, Any]:
    """Wins, ties and losses of ``a`` over ``b`` (same samples, same order), the mean
    difference with a paired-bootstrap 95 % interval, and McNemar's p for 0/1 scores."""
    n = len(a)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    wins = sum(1 for d in diffs if d > 1e-9)
    losses = sum(1 for d in diffs if d < -1e-9)
    out: dict[str, Any] = {
        "n": n,
        "wins": wins,
        "ties": n - wins - losses,
        "losses": losses,
        "mean_diff": math.fsum(diffs) / n if n else None,
        "ci_low": None,
        "ci_high": None,
        "mcnemar_p": None,
    }
    if n:
        rng = random.Random(0)
        means = sorted(
            math.fsum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)
        )
        out["ci_low"] = means[int(0.025 * resamples)]
        out["ci_high"] = means[int(0.975 * resamples) - 1]
        if all(s in (0.0, 1.0) for s in [*a, *b]):
            out["mcnemar_p"] = mcnemar_p(wins, losses)
    return out


def _stats(rows: Sequence[EvalRow]) -> dict[str, Any]:
    scored = [r for r in rows if r.status != "cost_cap"]
    scores = [r.score for r in scored]
    low, high = interval(scores)
    costs = [r.cost for r in scored if r.cost is not None]
    latencies = [r.latency_s for r in scored]
    n = len(scored)
    return {
        "n": n,
        "mean": math.fsum(scores) / n if n else None,
        "ci_low": low if n else None,
        "ci_high": high if n else None,
        "strict_mean": math.fsum(r.strict for r in scored) / n if n else None,
        "statuses": dict(Counter(r.status for r in rows)),
        "overflow_rate": sum(1 for r in scored if r.status == "overflow") / n if n else 0.0,
        "cost_mean": math.fsum(costs) / len(costs) if costs else None,
        "cost_known": len(costs),
        "cost_quantiles": {f"p{round(q * 100)}": quantile(costs, q) for q in QUANTILES},
        "calls_mean": math.fsum(r.calls for r in scored) / n if n else None,
        "sub_calls_mean": math.fsum(r.sub_calls for r in scored) / n if n else None,
        "turns_mean": math.fsum(r.turns for r in scored) / n if n else None,
        "latency_quantiles": {f"p{round(q * 100)}": quantile(latencies, q) for q in QUANTILES},
        "tokens_mean": math.fsum(r.prompt_tokens + r.completion_tokens for r in scored) / n
        if n
        else None,
    }


def _ordered(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def summarise(rows: Sequence[EvalRow]) -> dict[str, Any]:
    """The JSON summary of an eval: per cell, per family and method, paired, failures."""
    methods = _ordered(r.method for r in rows)
    families = _ordered(r.family for r in rows)
    lengths = sorted({r.length for r in rows})
    by_cell: dict[tuple[str, int, str], list[EvalRow]] = defaultdict(list)
    by_family: dict[tuple[str, str], list[EvalRow]] = defaultdict(list)
    by_method: dict[str, list[EvalRow]] = defaultdict(list)
    for r in rows:
        by_cell[(r.family, r.length, r.method)].append(r)
        by_family[(r.family, r.method)].append(r)
        by_method[r.method].append(r)
    cells = [
        {"family": f, "length": n, "length_label": rs[0].length_label, "method": m, **_stats(rs)}
        for (f, n, m), rs in sorted(
            by_cell.items(),
            key=lambda kv: (families.index(kv[0][0]), kv[0][1], methods.index(kv[0][2])),
        )
    ]
    headline = [
        {"family": f, "method": m, **_stats(by_family[(f, m)])}
        for f in families
        for m in methods
        if by_family.get((f, m))
    ]
    comparisons = []
    for f in [*families, None]:
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                left = {
                    r.sample_id: r
                    for r in rows
                    if r.method == a and (f is None or r.family == f) and r.status != "cost_cap"
                }
                right = {
                    r.sample_id: r
                    for r in rows
                    if r.method == b and (f is None or r.family == f) and r.status != "cost_cap"
                }
                common = sorted(set(left) & set(right))
                if common:
                    comparisons.append(
                        {
                            "family": f or "all",
                            "a": a,
                            "b": b,
                            **paired(
                                [left[s].score for s in common], [right[s].score for s in common]
                            ),
                        }
                    )
    return {
        "schema": SCHEMA,
        "version": 1,
        "methods": methods,
        "families": families,
        "lengths": lengths,
        "cells": cells,
        "headline": headline,
        "overall": {m: _stats(by_method[m]) for m in methods},
        "paired": comparisons,
        "failures": {
            m: dict(Counter(r.status for r in by_method[m] if r.status != "answered"))
            for m in methods
        },
    }
