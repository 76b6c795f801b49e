"""A small eval against the real model: the harness runs end to end on llama.cpp, and the
report is kept as a CI artefact (``test-artifacts/realmodel-eval/report.html``).

SmolLM2-135M follows no protocol, so its scores will be low; that is honest. The test
asserts what must hold for any model: every (sample, method) pair has a row with a known
status, scores lie in [0, 1], usage is counted, and the report and summary are written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlm_sdk import Limits, OpenAICompatibleProvider
from rlm_sdk import eval as rlm_eval
from rlm_sdk.eval import DirectMethod, RLMMethod
from tests.realmodel.llama import MODEL, N_CTX

pytestmark = [pytest.mark.realmodel, pytest.mark.integration, pytest.mark.timeout(300)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "realmodel-eval"
STATUSES = {"answered", "no_answer", "limit", "provider_error", "error", "overflow"}


async def test_a_small_eval_runs_against_the_real_model(
    real_provider: OpenAICompatibleProvider, tmp_path: Path
) -> None:
    """RLM and direct calls on niah at 2k characters: every row recorded, report written."""
    methods = [
        RLMMethod(
            limits=Limits(max_iterations=2, max_model_calls=6, max_wall_time=100),
            max_tokens=64,
            temperature=0.0,
        ),
        DirectMethod(window=N_CTX, reply_tokens=64, temperature=0.0),
    ]
    out = tmp_path / "eval"
    results = await rlm_eval.arun(
        ["niah"], ["2k"], methods, model=MODEL, n=1, seed=0, out=out, provider=real_provider,
        concurrency=1, report=True, title="SmolLM2-135M on llama.cpp (CI)",
    )  # fmt: skip
    assert len(results.rows) == 2
    for row in results.rows:
        assert row.status in STATUSES, row.error
        assert 0.0 <= row.score <= 1.0
    direct = [r for r in results.rows if r.method == "direct"]
    assert all(r.status == "answered" and r.calls == 1 and r.prompt_tokens > 400 for r in direct)
    rlm = [r for r in results.rows if r.method == "rlm"]
    assert all(r.trajectory and (out / r.trajectory).is_file() for r in rlm)
    assert all(1 <= r.calls <= 6 for r in rlm if r.status != "provider_error")
    summary = json.loads(results.summary.read_text())
    assert {h["method"] for h in summary["headline"]} == {"rlm", "direct"}
    assert results.report is not None and results.report.stat().st_size > 100_000
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    shutil.copytree(out, ARTIFACTS)  # kept by CI as an artefact
