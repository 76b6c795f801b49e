"""The HTML report: self-contained, charts from plotly, links to trajectories; importing the
SDK never imports plotly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_sdk import eval as rlm_eval
from rlm_sdk.eval import DirectMethod, oracle_policy
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[rlm_eval.EvalResults, str]:
    """An offline eval with an RLM, a direct call that overflows at the longer length, and its report."""
    out = tmp_path_factory.mktemp("eval")
    results = rlm_eval.run(
        ["niah", "chains"], ["8k", "16k"],
        ["rlm", DirectMethod(window=3000, reply_tokens=200)],
        model="scripted", n=2, seed=0, out=out, report=True, title="Offline check",
        provider=ScriptedProvider(oracle_policy(), cost_per_call=0.002),
    )  # fmt: skip
    assert results.report is not None
    return results, results.report.read_text(encoding="utf-8")


def test_the_page_is_self_contained(report: tuple[rlm_eval.EvalResults, str]) -> None:
    """The page embeds plotly's script once and loads nothing from the network."""
    _, page = report
    assert page.count("<script>/**\n* plotly.js v") == 1
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=['\"]?http", page)
    assert "<title>Offline check</title>" in page


def test_the_page_shows_every_part(report: tuple[rlm_eval.EvalResults, str]) -> None:
    """Headline, paired counts, accuracy with a does-not-fit band, cost quantiles, failures."""
    _, page = report
    for part in ("Headline", "Paired on the same samples", "Accuracy against length", "does not fit",
                 "p95", "Cost, calls and latency per query", "Accuracy against cost", "Failures", "overflow"):  # fmt: skip
        assert part in page, part


def test_each_rlm_sample_links_its_trajectory(report: tuple[rlm_eval.EvalResults, str]) -> None:
    """Every RLM row links (relatively) to a trajectory file that exists, as rlm-sdk serve opens them."""
    results, page = report
    rlm_rows = [r for r in results.rows if r.method == "rlm"]
    assert len(rlm_rows) == 8
    for row in rlm_rows:
        assert f"href='{row.trajectory}'" in page
        assert (results.out_dir / str(row.trajectory)).is_file()
    assert "rlm-sdk serve" in page


def test_the_summary_json_is_what_ci_reads(report: tuple[rlm_eval.EvalResults, str]) -> None:
    """summary.json has the headline, cells and paired comparisons, and the direct cells' overflow."""
    import json

    results, _ = report
    summary = json.loads(results.summary.read_text())
    assert summary["schema"] == "rlm_sdk.eval.summary"
    direct_16k = [
        c for c in summary["cells"] if c["method"] == "direct" and c["length_label"] == "16k"
    ]
    assert all(c["overflow_rate"] == 1.0 and c["mean"] == 0.0 for c in direct_16k)
    rlm = [h for h in summary["headline"] if h["method"] == "rlm"]
    assert all(h["mean"] == 1.0 for h in rlm)


def test_rewriting_the_report(report: tuple[rlm_eval.EvalResults, str], tmp_path: Path) -> None:
    """write_report renders the page again from the results."""
    results, _ = report
    path = Path(rlm_eval.write_report(results, title="Again"))
    assert "<title>Again</title>" in path.read_text(encoding="utf-8")


def test_importing_the_sdk_and_the_eval_does_not_import_plotly() -> None:
    """Neither rlm_sdk nor rlm_sdk.eval nor the CLI loads the plotting library on import."""
    code = "import sys, rlm_sdk, rlm_sdk.eval, rlm_sdk.cli; print('plotly' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_linked_trajectory_opens_in_the_serve_page(
    report: tuple[rlm_eval.EvalResults, str],
) -> None:
    """The file a report links to is what `rlm-sdk serve`'s page opens: its upload endpoint
    takes it as one saved run, with every recorded event."""
    import httpx

    from tests.server.helpers import serve_in_thread

    results, page = report
    row = next(r for r in results.rows if r.method == "rlm")
    link = re.search(rf"href='([^']+)' title='run {row.run_id}'", page)
    assert link is not None
    path = results.out_dir / link.group(1)
    recorded = path.read_text(encoding="utf-8").splitlines()
    with (
        serve_in_thread(ScriptedProvider([])) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        opened = http.post(
            "/api/trajectories", params={"name": path.name}, content=path.read_bytes()
        )
    assert opened.status_code == 201, opened.text
    assert opened.json()["runs"] == 1
    assert opened.json()["events"] == len(recorded) - 1  # the first line is the file's header


def test_failures_are_tabled_where_they_happened(report: tuple[rlm_eval.EvalResults, str]) -> None:
    """The failures table names method, family, status and lengths, says why a direct call did
    not fit, and links to an example sample's row."""
    results, page = report
    overflows = [r for r in results.rows if r.status == "overflow"]
    said = [
        r for r in overflows
        if f"about {r.detail['estimated_tokens']:,} tokens for a window of 3,000" in page
    ]  # fmt: skip
    assert {r.family for r in said} == {"niah", "chains"}  # each family's line says why
    assert re.search(r"<td>direct</td><td>niah</td><td class='s-overflow'>overflow</td>", page)
    anchor = re.search(r"<a href='#([^']+)'>", page)
    assert anchor is not None and f"<tr id='{anchor.group(1)}'>" in page


def test_without_costs_the_page_says_so_instead_of_drawing_empty_charts(tmp_path: Path) -> None:
    """When no call has a known cost, the page says the cost is unknown and how to give prices,
    and draws no cost chart."""
    results = rlm_eval.run(
        ["niah"], ["8k"], ["rlm", "direct"], model="scripted", n=1, out=tmp_path, report=True,
        provider=ScriptedProvider(oracle_policy()),
    )  # fmt: skip
    assert results.report is not None
    page = results.report.read_text(encoding="utf-8")
    assert "cost unknown" in page and "--price" in page
    assert "cost per query (USD)" not in page and "mean cost per query (USD)" not in page
    assert "Every run answered." in page
