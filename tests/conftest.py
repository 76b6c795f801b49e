"""Shared fixtures: every test runs hermetic (no provider keys, no RLM_* settings, no proxy,
no .env)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

_PREFIXES = ("OPENAI_", "ANTHROPIC_", "RLM_", "OLLAMA_", "OTEL_")


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Remove provider, SDK, OpenTelemetry and proxy variables (a test sets the ones it needs) and run from an
    empty directory (no stray .env)."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    structlog.reset_defaults()  # capture_logs() leaves structlog marked as configured
