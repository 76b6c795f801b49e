"""The rows of a results file: one method's attempt at one sample per JSONL line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rlm_sdk import ModelUsage

from ._methods import Status
from ._sample import Unit

__all__ = ["RESULTS", "EvalRow", "lines", "load_rows"]

RESULTS = "results.jsonl"


class EvalRow(BaseModel):
    """One line of ``results.jsonl``: one method's attempt at one sample."""

    sample_id: str
    family: str
    kind: str
    params: dict[str, Any]
    seed: int
    index: int
    length: int
    length_label: str
    unit: Unit
    achieved: int
    method: str
    method_config: dict[str, Any]
    answer: str | None
    gold: list[str]
    score: float
    strict: float
    status: Status
    error: str | None = None
    latency_s: float
    turns: int = 0
    sub_calls: int = 0
    depth: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    models: dict[str, ModelUsage] = Field(default_factory=dict)
    """Calls, tokens and cost per model."""
    run_id: str | None = None
    trajectory: str | None = None
    """The JSONL trajectory, relative to the output folder (open it in ``rlm-sdk serve``)."""
    detail: dict[str, Any] = Field(default_factory=dict)
    finished_at: float = 0.0


def lines(path: Path) -> list[EvalRow]:
    """Every row of a results file, in order; lines cut short by an interruption are skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(EvalRow.model_validate_json(line))
        except ValueError:
            continue
    return rows


def load_rows(path: str | Path) -> list[EvalRow]:
    """The rows of a results file, the last line winning for each (sample, method).

    A line cut short by an interruption is skipped (its pair runs again on resume).
    """
    found = {(row.sample_id, row.method): row for row in lines(Path(path))}
    return list(found.values())
