"""Where a Ray batch's records go: one JSONL log and Parquet parts, in one directory.

Kept apart from Ray itself so that reading results back (and the resume scan) needs only
pyarrow (a requirement of the ``ray`` extra), imported when first needed. The layout of an
output directory::

    results.jsonl            one line per finished item, appended and flushed as it arrives
    parquet/part-*.parquet   the same records in columnar parts, each written whole, then
                             renamed into place (a part is complete or absent)
    trajectories/*.jsonl     every event of every run, one file per actor (opt-in)

Both logs are append-only. Within one job an id is written at most once (the driver keeps
the ids it wrote: *deduplication on write*), so an item that Ray ran twice after an actor
died is still one record. Across resumed jobs, an item that failed and later succeeded has
both records; :func:`read_results` keeps one per id (*deduplication on read*).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "RESULT_FIELDS",
    "ResultWriter",
    "read_results",
    "scan_output",
]

RESULTS_JSONL = "results.jsonl"
PARQUET_DIR = "parquet"
TRAJECTORY_DIR = "trajectories"

RESULT_FIELDS: dict[str, str] = {
    "id": "string",
    "answer": "string",
    "stop_reason": "string",
    "iterations": "int64",
    "calls": "int64",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "total_tokens": "int64",
    "cost": "float64",
    "error_type": "string",
    "error": "string",
    "wall_time_s": "float64",
    "attempt": "int64",
    "retried": "bool",
    "run_id": "string",
    "worker": "string",
    "finished_at": "float64",
}
"""Every record's columns and their Arrow types, in order."""


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in RESULT_FIELDS.items()])


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The whole lines of a results log; a line cut off by a crash is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("id") is not None:
                yield row


def _parquet_rows(directory: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for part in sorted((directory / PARQUET_DIR).glob("part-*.parquet")):
        yield from pq.read_table(part).to_pylist()


def _rows(directory: Path) -> Iterator[dict[str, Any]]:
    """The JSONL log when there is one (it is never behind the Parquet parts), else the parts."""
    if (directory / RESULTS_JSONL).exists():
        return _jsonl_rows(directory / RESULTS_JSONL)
    return _parquet_rows(directory)


def scan_output(directory: str | os.PathLike[str]) -> tuple[set[str], Counter[str]]:
    """For a resume: the ids with a record without an error, and earlier failures by id."""
    done: set[str] = set()
    failures: Counter[str] = Counter()
    for row in _rows(Path(directory)):
        item_id = str(row["id"])
        if row.get("error") is None and row.get("error_type") is None:
            done.add(item_id)
        else:
            failures[item_id] += 1
    for item_id in done:
        failures.pop(item_id, None)
    return done, failures


def read_results(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One record per id from an output directory, in the order ids first appear.

    An id with a successful record gets its first one; an id that only ever failed gets its
    latest failure. This is the deduplication on read: the logs themselves are append-only.
    """
    chosen: dict[str, dict[str, Any]] = {}
    for row in _rows(Path(directory)):
        item_id = str(row["id"])
        previous = chosen.get(item_id)
        if previous is None or previous.get("error_type") is not None:
            chosen[item_id] = row
    return list(chosen.values())


class ResultWriter:
    """Appends records to ``results.jsonl`` (flushed per record) and to Parquet parts.

    A part is written every ``flush_rows`` records or ``flush_seconds`` seconds, and on
    :meth:`close`. A record whose id this writer has already written is dropped
    (:meth:`write` returns False).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, flush_rows: int, flush_seconds: float
    ) -> None:
        self.directory = Path(directory)
        (self.directory / PARQUET_DIR).mkdir(parents=True, exist_ok=True)
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._job = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._parts = 0
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._seen: set[str] = set()
        self.duplicates = 0
        path = self.directory / RESULTS_JSONL
        self._jsonl: IO[str] | None = path.open("a", encoding="utf-8")
        if path.stat().st_size and not _ends_with_newline(path):
            self._jsonl.write("\n")  # end a line cut off by a crash, so it spoils only itself

    def write(self, record: dict[str, Any]) -> bool:
        """Write one record; False (and nothing written) for an id already written."""
        if self._jsonl is None:
            raise RuntimeError("the result writer is closed")
        item_id = str(record["id"])
        if item_id in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(item_id)
        row = {name: record.get(name) for name in RESULT_FIELDS}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        self._pending.append(row)
        if (
            len(self._pending) >= self._flush_rows
            or time.monotonic() - self._last_flush >= self._flush_seconds
        ):
            self.flush_parquet()
        return True

    def flush_parquet(self) -> None:
        """Write the records since the last part as a new part (nothing when there are none)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._parts += 1
        final = self.directory / PARQUET_DIR / f"part-{self._job}-{self._parts:05d}.parquet"
        partial = final.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(self._pending, schema=_schema()), partial)
        partial.replace(final)
        self._pending = []

    def close(self) -> None:
        """Write the last part and close the JSONL log; idempotent."""
        if self._jsonl is None:
            return
        try:
            self.flush_parquet()
        finally:
            self._jsonl.close()
            self._jsonl = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
