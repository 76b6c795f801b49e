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
