"""``rlm-sdk eval``: offline with the oracle doubles, and for real against a loopback server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rlm_sdk.cli import main
from rlm_sdk.cli._eval import split_tasks
from rlm_sdk.eval import oracle_policy
from rlm_sdk.providers import ChatMessage, CompletionRequest
from rlm_sdk.testing import FakeChatServer

pytestmark = pytest.mark.integration


def test_task_lists_keep_their_parameters() -> None:
    """Commas separate tasks, except those that continue a task's parameters."""
    assert split_tasks("niah:haystack=prose,needles=4,aggregate, pairs:question=both") == [
        "niah:haystack=prose,needles=4",
        "aggregate",
        "pairs:question=both",
    ]
    assert split_tasks("rlm,rlm:max_depth=2,sub_model=openai:gpt-5-nano,direct") == [
        "rlm",
        "rlm:max_depth=2,sub_model=openai:gpt-5-nano",
        "direct",
    ]


def test_offline_eval_writes_results_summary_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--offline runs the oracle doubles, says so, and writes every output file."""
    out = tmp_path / "eval"
    code = main(
        ["eval", "--offline", "--tasks", "niah,chains:hops=3", "--lengths", "8k", "-n", "2",
         "--methods", "rlm,direct", "-o", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert "OFFLINE EVAL: no language model is called" in captured.err
    assert "[8] " in captured.err  # progress, one line per run
    assert "chains" in captured.out and "100.0" in captured.out
    assert {p.name for p in out.iterdir()} == {
        "eval.json",  # the seed drawn for this folder
        "results.jsonl",
        "summary.json",
        "report.html",
        "trajectories",
    }
    assert len((out / "results.jsonl").read_text().splitlines()) == 8


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown family is one line naming the known ones, exit status 1."""
    code = main(["eval", "--offline", "--tasks", "trivia", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "unknown task family 'trivia'" in err and "Traceback" not in err


def _oracle_over_http(body: dict[str, Any]) -> str:
    """The oracle double behind a real OpenAI-compatible server on loopback."""
    messages = [
        ChatMessage(role=m["role"], content=m.get("content") or "") for m in body["messages"]
    ]
    return oracle_policy()(CompletionRequest(model=body["model"], messages=messages))


def test_the_issues_command_against_a_loopback_server(tmp_path: Path) -> None:
    """The documented command runs for real over HTTP: RLM and direct, prices give costs, the cap holds."""
    with FakeChatServer(_oracle_over_http) as server:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test-not-a-key",
        }
        done = subprocess.run(
            [sys.executable, "-m", "rlm_sdk.cli", "eval", "--tasks", "niah,aggregate", "--lengths", "8k",
             "--model", "openai:gpt-5-mini", "--methods", "rlm,direct", "-n", "2",
             "--price", "openai:gpt-5-mini=0.25,2", "--max-cost", "5", "-o", str(tmp_path / "out")],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {h["method"]: h["mean"] for h in summary["headline"] if h["family"] == "niah"} == {
        "rlm": 1.0,
        "direct": 1.0,
    }
    assert all(h["cost_mean"] > 0 for h in summary["headline"])
    assert summary["cost_cap"]["max_cost"] == 5.0 and not summary["cost_cap"]["reached"]


def test_methods_with_their_own_settings_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--methods takes configured methods; --protocol and --seed reach every RLM and sample."""
    out = tmp_path / "eval"
    code = main(
        ["eval", "--offline", "--tasks", "chains", "--lengths", "8k", "-n", "1", "--seed", "5",
         "--methods", "rlm,rlm:max_depth=2,name=rlm-deep,direct:window=1000", "--protocol", "auto",
         "--no-report", "-o", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by = {r["method"]: r for r in rows}
    assert set(by) == {"rlm", "rlm-deep", "direct:window=1000"}
    assert by["rlm"]["method_config"]["protocol"] == "auto"
    assert by["rlm-deep"]["method_config"]["max_depth"] == 2
    assert by["direct:window=1000"]["status"] == "overflow"
    assert by["rlm"]["score"] == by["rlm-deep"]["score"] == 1.0
    assert "seed:    5" in captured.out and not (out / "eval.json").exists()


def test_a_cost_cap_without_known_costs_is_called_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-cost with no reported cost and no --price says the cap could not apply."""
    code = main(
        ["eval", "--offline", "--tasks", "niah", "-n", "1", "--methods", "direct",
         "--max-cost", "1", "--no-report", "-o", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert "--max-cost could not apply" in capsys.readouterr().err


def test_lengths_in_tokens_from_the_command_line(tmp_path: Path) -> None:
    """--unit tokens fits each context to the length in the SDK's token estimate."""
    code = main(
        ["eval", "--offline", "--tasks", "niah", "--lengths", "8k", "-n", "1", "--unit", "tokens",
         "--methods", "rlm", "--no-report", "-o", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    (row,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert row["unit"] == "tokens" and 8192 - 200 < row["achieved"] <= 8192
    assert row["score"] == 1.0
