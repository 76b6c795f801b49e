"""JSONL trajectories: write, load, rebuild; secrets never reach the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm_sdk import ConfigurationError, RecursiveLM
from rlm_sdk._recorder import JSONLRecorder, load_events, load_runs
from rlm_sdk.testing import ScriptedProvider

from .test_orchestrator import _nesting_policy, code

pytestmark = pytest.mark.integration


async def test_round_trip_rebuilds_the_same_trajectory(tmp_path: Path) -> None:
    """A depth-2 run written to JSONL loads back into an equal trajectory tree."""
    path = tmp_path / "run.jsonl"
    rlm = RecursiveLM("root", provider=ScriptedProvider(_nesting_policy), max_depth=2)
    with JSONLRecorder(path) as recorder:
        result = await rlm.acomplete("ctx", "nest", on_event=recorder)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["schema"] == "rlm_sdk.trajectory" and header["version"] == 1
    (saved,) = load_runs(path)
    assert saved.result == result
    assert saved.trajectory == result.trajectory
    assert saved.trajectory.turns[0].cells[0].sub_calls[0].child is not None


async def test_interrupted_run_still_loads(tmp_path: Path) -> None:
    """A file cut before run_finished rebuilds what happened so far."""
    path = tmp_path / "run.jsonl"
    rlm = RecursiveLM("root", provider=ScriptedProvider([code("print('hi')"), "FINAL(x)"]))
    with JSONLRecorder(path) as recorder:
        await rlm.acomplete("ctx", "q", on_event=recorder)
    lines = path.read_text().splitlines()
    cut = [
        line
        for line in lines
        if '"type":"run_finished"' not in line and '"type":"final_answer"' not in line
    ]
    path.write_text("\n".join(cut) + "\n")
    (saved,) = load_runs(path)
    assert saved.result is None
    assert saved.trajectory.turns[0].cells[0].stdout == "hi\n"


async def test_keys_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider key from the environment is redacted even when the model echoes it."""
    key = "sk-test-abcdefghijklmnop1234"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    path = tmp_path / "run.jsonl"
    rlm = RecursiveLM("root", provider=ScriptedProvider([f"FINAL(the key is {key})"]))
    with JSONLRecorder(path, redact=["extra-secret-value"]) as recorder:
        await rlm.acomplete("extra-secret-value in the context", "q", on_event=recorder)
    text = path.read_text()
    assert key not in text and "[REDACTED]" in text


def test_wrong_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not a trajectory, or of another version, is refused with a clear error."""
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"hello": 1}\n')
    with pytest.raises(ConfigurationError, match="not an rlm_sdk trajectory"):
        list(load_events(bad))
    bad.write_text('{"schema": "rlm_sdk.trajectory", "version": 99}\n')
    with pytest.raises(ConfigurationError, match="schema version 99"):
        list(load_events(bad))
    bad.write_text('{"schema": "rlm_sdk.trajectory", "version": 1}\n{"type": "nope"}\n')
    with pytest.raises(ConfigurationError, match=":2: not a valid event"):
        list(load_events(bad))
