"""`rlm-sdk run` against the real model: the budget flags keep a small model's run short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_sdk import ModelResponse, load_events
from tests.realmodel.llama import MODEL, LlamaServer

pytestmark = [pytest.mark.realmodel, pytest.mark.integration, pytest.mark.timeout(240)]


def test_run_with_budget_flags_is_capped_recorded_and_clean(
    llama: LlamaServer, tmp_path: Path
) -> None:
    """`run --verbose --max-tokens 32 --max-iterations 2 --timeout --record` caps every reply
    at 32 tokens, records every call, and ends with an answer or a stop reason, not a traceback."""
    doc = tmp_path / "notes.txt"
    doc.write_text("Meeting on Monday: we chose the blue logo.\nTuesday: lunch was late.\n")
    trace = tmp_path / "trace.jsonl"
    command = [sys.executable, "-m", "rlm_sdk.cli", "run", str(doc), "-q", "Which logo?"]
    flags = ["--max-tokens", "32", "--max-iterations", "2", "--timeout", "150", "--verbose"]
    done = subprocess.run(
        [*command, "--model", f"openai:{MODEL}", *flags, "--record", str(trace)],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENAI_BASE_URL": llama.base_url, "COLUMNS": "100"},
        timeout=200,
    )
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip()  # the answer, or "(no answer: <stop reason>)"
    responses = [e for e in load_events(trace) if isinstance(e, ModelResponse)]
    assert responses, "no model call was recorded"
    assert all(e.completion_tokens <= 32 for e in responses)
    assert all(e.finish_reason in ("stop", "length") for e in responses)
    assert "── turn 1" in done.stderr and "Usage" in done.stderr  # --verbose drew the run
