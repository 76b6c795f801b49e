"""Trajectories on disk: one event per JSONL line, and the loader that rebuilds the tree.

The first line is a header with the schema name and version; every other line is one event
as :mod:`rlm_sdk._events` defines it. The loader rebuilds each top-level run's
:class:`Trajectory` from the events alone, with the same builder a live run uses
(:mod:`rlm_sdk._trajectory`), so a loaded trajectory equals the one the run returned, and a
run that was interrupted (no ``run_finished``) still loads. Known secrets (the provider keys in the environment, and any
the caller names) are replaced by ``[REDACTED]`` before a line is written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from ._events import Event, RunFinished, event_adapter
from ._exceptions import ConfigurationError
from ._settings import load_settings
from ._trajectory import build_trajectories
from ._types import RLMResult, Trajectory

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "JSONLRecorder",
    "SavedRun",
    "known_secrets",
    "load_events",
    "load_runs",
    "rebuild_trajectories",
    "redact",
]

SCHEMA = "rlm_sdk.trajectory"
SCHEMA_VERSION = 1
_REDACTED = "[REDACTED]"
_SECRET_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def known_secrets(extra: Iterable[str]) -> list[str]:
    """The strings to scrub: the provider keys in the environment and settings, and ``extra``."""
    s = load_settings()
    found = [os.environ.get(v, "") for v in _SECRET_VARS]
    found += [
        k.get_secret_value() for k in (s.openai_api_key, s.anthropic_api_key) if k is not None
    ]
    found += list(extra)
    # Short strings would redact ordinary words; real keys are long.
    return sorted({x for x in found if len(x) >= 8}, key=len, reverse=True)


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each of ``secrets`` (longest first, as :func:`known_secrets` orders them)
    replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


class JSONLRecorder:
    """An event sink that appends each event to a JSONL file.

    Use it as ``on_event=recorder`` (it is callable), and close it (or use ``with``) when
    done. Lines are flushed when a top-level run finishes, so a crash loses at most the
    unfinished run's tail.

    Args:
        path: the file; created, or appended to (a header is written only to a new file).
        redact: more secret strings to scrub, besides the provider keys in the environment.
    """

    def __init__(self, path: str | os.PathLike[str], *, redact: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self._secrets = known_secrets(redact)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        if new:
            header = {"schema": SCHEMA, "version": SCHEMA_VERSION, "created": time.time()}
            self._file.write(json.dumps(header) + "\n")

    def __call__(self, event: Event) -> None:
        if self._file is None:
            raise ConfigurationError(f"the recorder for {self.path} is closed")
        self._file.write(redact(event.model_dump_json(), self._secrets) + "\n")
        if isinstance(event, RunFinished) and event.depth == 0:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JSONLRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_events(path: str | os.PathLike[str]) -> Iterator[Event]:
    """The events of a JSONL file, validated; a wrong schema or version is a clear error."""
    with Path(path).open(encoding="utf-8") as f:
        first = f.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError as err:
            raise ConfigurationError(f"{path} is not an rlm_sdk trajectory file") from err
        if not isinstance(header, dict) or header.get("schema") != SCHEMA:
            raise ConfigurationError(f"{path} is not an rlm_sdk trajectory file")
        if header.get("version") != SCHEMA_VERSION:
            raise ConfigurationError(
                f"{path} has schema version {header.get('version')}; this SDK reads {SCHEMA_VERSION}"
            )
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                yield event_adapter.validate_json(line)
            except ValueError as err:
                raise ConfigurationError(
                    f"{path}:{n}: not a valid event ({err.__class__.__name__})"
                ) from err


class SavedRun:
    """A top-level run loaded from a file: its trajectory, and its result if it finished."""

    def __init__(self, trajectory: Trajectory, result: RLMResult | None, item: int | None) -> None:
        self.trajectory = trajectory
        self.result = result
        self.item = item

    def __repr__(self) -> str:
        return f"SavedRun(run_id={self.trajectory.run_id!r}, finished={self.result is not None})"


def rebuild_trajectories(events: Iterable[Event]) -> list[SavedRun]:
    """Each top-level run's trajectory tree, rebuilt from its events, in file order."""
    built = build_trajectories(events)
    return [SavedRun(t, built.results.get(t.run_id), item) for t, item in built.roots]


def load_runs(path: str | os.PathLike[str]) -> list[SavedRun]:
    """Every top-level run saved in a JSONL file, rebuilt from its events."""
    return rebuild_trajectories(load_events(path))
