"""The summary's statistics: intervals, quantiles, paired comparisons, and the CI JSON."""

from __future__ import annotations

import pytest

from rlm_sdk.eval import EvalRow, summarise
from rlm_sdk.eval._summary import interval, mcnemar_p, paired, quantile, wilson


def test_fifty_samples_give_about_fourteen_points() -> None:
    """At 50 samples and a 50 % score, the 95 % interval is about ±14 points; 100 give ±10, 200 ±7."""
    for n, half in ((50, 0.14), (100, 0.10), (200, 0.07)):
        low, high = wilson(n / 2, n)
        assert (high - low) / 2 == pytest.approx(half, abs=0.01)


def test_intervals_stay_in_range_and_use_the_spread_for_graded_scores() -> None:
    """0/1 scores use Wilson's interval (inside [0, 1] at the edges); graded ones the normal one."""
    assert interval([1.0] * 10) == (pytest.approx(0.722, abs=0.001), pytest.approx(1.0))
    low, high = interval([0.5, 0.5, 0.5, 0.5])
    assert low == high == 0.5
    low, high = interval([0.25, 0.75] * 10)
    assert low < 0.5 < high and high - low < 0.3
    assert interval([]) == (0.0, 1.0)


def test_quantiles_interpolate() -> None:
    """Quantiles interpolate between order statistics."""
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [quantile(values, q) for q in (0.25, 0.5, 0.75, 0.95)] == [
        2.0,
        3.0,
        4.0,
        pytest.approx(4.8),
    ]
    assert quantile([], 0.5) is None


def test_paired_counts_and_mcnemar() -> None:
    """Wins, ties and losses per sample; McNemar's exact test on the discordant pairs."""
    a = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    b = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    got = paired(a, b)
    assert (got["wins"], got["ties"], got["losses"]) == (6, 1, 1)
    assert got["mean_diff"] == pytest.approx(5 / 8)
    assert got["ci_low"] <= 5 / 8 <= got["ci_high"]
    assert got["mcnemar_p"] == pytest.approx(mcnemar_p(6, 1)) == pytest.approx(2 * 8 / 128)
    assert paired([0.5, 0.25], [0.5, 0.5])["mcnemar_p"] is None  # graded scores


def row(
    sample: str, method: str, score: float, status: str = "answered", cost: float | None = 0.01
) -> EvalRow:
    return EvalRow(
        sample_id=sample, family="niah", kind="k", params={}, seed=1, index=0, length=8192,
        length_label="8k", unit="chars", achieved=8000, method=method, method_config={},
        answer="x", gold=["x"], score=score, strict=score, status=status, latency_s=1.0,  # type: ignore[arg-type]
        calls=2, cost=cost,
    )  # fmt: skip


def test_summary_cells_headline_paired_and_failures() -> None:
    """The summary holds per-cell and per-family stats, paired comparisons and failures; rows
    stopped by the cost cap are counted as failures, not scores."""
    rows = [
        row("s1", "rlm", 1.0), row("s2", "rlm", 1.0), row("s3", "rlm", 0.0, "cost_cap"),
        row("s1", "direct", 0.0, "overflow", None), row("s2", "direct", 1.0), row("s3", "direct", 1.0),
    ]  # fmt: skip
    summary = summarise(rows)
    assert summary["methods"] == ["rlm", "direct"]
    cell = {c["method"]: c for c in summary["cells"]}
    assert cell["rlm"]["n"] == 2 and cell["rlm"]["mean"] == 1.0
    assert cell["direct"]["overflow_rate"] == pytest.approx(1 / 3)
    assert cell["direct"]["cost_known"] == 2
    (by_family, overall) = summary["paired"]
    assert by_family["family"] == "niah" and overall["family"] == "all"
    assert (by_family["n"], by_family["wins"], by_family["ties"]) == (2, 1, 1)
    assert summary["failures"] == {"rlm": {"cost_cap": 1}, "direct": {"overflow": 1}}
