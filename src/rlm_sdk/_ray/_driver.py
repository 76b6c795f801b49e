"""The driver side of a Ray batch: the items, the pipeline, the writer loop and cancellation.

The pipeline is ``input -> [repartition(rows_per_block)] -> flat_map(RowRunner)`` on a
fixed actor pool. Ray Data runs an async UDF's rows ``DEFAULT_ASYNC_ROW_UDF_MAX_CONCURRENCY``
at a time within one task (16 by default). That constant is read when the plan is built, on
the driver, and baked into the function shipped to the actors, so setting it in an actor's
``runtime_env`` does nothing: :func:`_rows_in_flight` sets it on the driver for the job.
Each actor runs one task (one block) at a time, so ``runs_per_actor`` bounds its runs in
flight, and blocks of ``rows_per_block`` rows keep that many busy.

An actor is given its next block only once it is free (one task in flight per actor, not
Ray Data's two). A block queued on a busy actor waits for that actor's whole block: with
one straggler in it, the queued block is stuck while other actors idle. And Ray does not
promise to run an actor's queued tasks in the order they were sent (Ray Data retries them,
and Ray keeps the order only for actors without retries): the second block can start
first, its rows held, the first one stuck behind it. With one task per actor, blocks start
in input order, each on the first actor that is free.

The output blocks are kept small, and each record is followed out of its actor by a marker
row, so that records reach the driver as their rows finish (in input order within a block)
instead of a block at a time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlm_sdk._batch import BatchItem
from rlm_sdk._exceptions import ConfigurationError
from rlm_sdk._logging import get_logger

from ._actor import CANCELLED, FLUSH_ID, JobControl, RowRunner
from ._config import RLMConfig, check_options
from ._output import TRAJECTORY_DIR, ResultWriter, scan_output

__all__ = ["RayBatchProgress", "RayBatchSummary", "run_job"]

_OUTPUT_BLOCK_BYTES = 1  # a block per record: records leave as soon as they are in order
_PATCH_LOCK = threading.Lock()
_log = get_logger()


class RayBatchProgress(BaseModel):
    """Counts after each record the driver writes: the same fields the progress line shows."""

    total: int
    """Items in the input."""
    skipped: int
    """Items already done in the output before this job started."""
    done: int = 0
    """Records written by this job (failures included)."""
    failed: int = 0
    retried: int = 0
    """Records of items that needed more than one attempt."""
    tokens: int = 0
    cost: float | None = None
    elapsed_s: float = 0.0


class RayBatchSummary(RayBatchProgress):
    """What a job did, returned when it ends (also after a cancel)."""

    output: str
    cancelled: bool = False
    duplicates_dropped: int = 0
    """Records of an id this job had already written (an at-least-once rerun), not written."""


@dataclass
class _Input:
    dataset: Any
    total: int
    skipped: int
    prior_failures: Counter[str] = field(default_factory=Counter)
    reshape: bool = False


def _row(raw: Any, where: str) -> dict[str, Any]:
    """One item as a row: ``id``, ``context`` or ``path``, ``query``, ``options`` (JSON)."""
    if isinstance(raw, BatchItem):
        raw = {"id": raw.id, "context": raw.context, "query": raw.query}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where}: an item is a mapping or a BatchItem")
    if raw.get("id") is None or str(raw["id"]) == FLUSH_ID:
        raise ConfigurationError(f"{where}: every item needs an 'id' (resuming is by id)")
    context, path = raw.get("context"), raw.get("path", raw.get("context_file"))
    if context is None and path is None:
        raise ConfigurationError(f"{where}: an item needs 'context' or 'path'")
    if context is not None and not isinstance(context, str):
        raise ConfigurationError(f"{where}: 'context' is text here (or give a 'path')")
    try:
        options = check_options(raw.get("options"))
    except ConfigurationError as err:
        raise ConfigurationError(f"{where}: {err}") from None
    return {
        "id": str(raw["id"]),
        "context": context,
        "path": None if path is None else str(path),
        "query": raw.get("query"),
        "options": json.dumps(options) if options else None,
    }


def _jsonl_items(path: Path) -> list[dict[str, Any]]:
    items = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigurationError(f"{path}:{n}: not JSON ({err.msg})") from None
            row = _row(raw, f"{path}:{n}")
            if row["path"] is not None:  # relative to the JSONL file, as the local engine reads it
                row["path"] = str((path.parent / row["path"]).resolve())
            items.append(row)
    return items


def _load_input(items: Any, done: set[str], failures: Counter[str], rows_per_block: int) -> _Input:
    import ray.data

    if isinstance(items, str | os.PathLike):
        path = Path(items)
        if path.suffix in (".jsonl", ".json"):
            items = _jsonl_items(path)
        else:
            items = ray.data.read_parquet(str(path))
    if isinstance(items, ray.data.Dataset):
        total = items.count()
        dataset = items.filter(lambda row: str(row["id"]) not in done)
        return _Input(dataset, total, len(done), failures, reshape=True)
    rows = [_row(raw, f"item {n}") for n, raw in enumerate(items)]
    counts = Counter(r["id"] for r in rows)
    twice = sorted(item_id for item_id, n in counts.items() if n > 1)
    if twice:
        raise ConfigurationError(f"item ids must be unique; repeated: {twice[:5]}")
    todo = [r for r in rows if r["id"] not in done]
    blocks = max(1, math.ceil(len(todo) / rows_per_block))
    built = ray.data.from_items(todo, override_num_blocks=blocks) if todo else None
    return _Input(built, len(rows), len(rows) - len(todo), failures)


@contextlib.contextmanager
def _rows_in_flight(n: int) -> Iterator[None]:
    """Set Ray Data's async row concurrency (read on the driver at planning) for one job."""
    from ray.data._internal.planner import plan_udf_map_op as plan

    if not _PATCH_LOCK.acquire(blocking=False):
        raise ConfigurationError(
            "another rlm_sdk.ray batch is running in this process; run one job at a time "
            "per driver process"
        )
    previous = plan.DEFAULT_ASYNC_ROW_UDF_MAX_CONCURRENCY
    plan.DEFAULT_ASYNC_ROW_UDF_MAX_CONCURRENCY = n
    try:
        yield
    finally:
        plan.DEFAULT_ASYNC_ROW_UDF_MAX_CONCURRENCY = previous
        _PATCH_LOCK.release()


def run_job(
    items: Any,
    config: RLMConfig,
    output: str | os.PathLike[str],
    *,
    actors: int,
    runs_per_actor: int,
    rows_per_block: int | None,
    num_cpus_per_actor: float,
    runtime_env: Mapping[str, Any] | None,
    trajectories: bool,
    on_progress: Callable[[RayBatchProgress], None] | None,
    cancel: threading.Event | None,
    grace: float,
    flush_rows: int,
    flush_seconds: float,
    ray_progress_bars: bool,
) -> RayBatchSummary:
    """The body of :func:`rlm_sdk.ray.run_batch` (see there), on an initialised Ray."""
    if actors < 1 or runs_per_actor < 1:
        raise ConfigurationError("actors and runs_per_actor must be at least 1")
    block_rows = rows_per_block or 2 * runs_per_actor
    if block_rows < 1:
        raise ConfigurationError("rows_per_block must be at least 1")
    out_dir = Path(output).resolve()
    done_ids, failures = scan_output(out_dir)
    source = _load_input(items, done_ids, failures, block_rows)
    progress = RayBatchProgress(total=source.total, skipped=source.skipped)
    started = time.perf_counter()
    writer = ResultWriter(out_dir, flush_rows=flush_rows, flush_seconds=flush_seconds)
    cancelled = False
    try:
        if source.dataset is not None:
            cancelled = _drive(
                source,
                config,
                writer,
                progress,
                started=started,
                actors=actors,
                runs_per_actor=runs_per_actor,
                block_rows=block_rows,
                num_cpus_per_actor=num_cpus_per_actor,
                runtime_env=runtime_env,
                trajectories=str(out_dir / TRAJECTORY_DIR) if trajectories else None,
                on_progress=on_progress,
                cancel=cancel,
                grace=grace,
                ray_progress_bars=ray_progress_bars,
            )
    finally:
        writer.close()
    progress.elapsed_s = time.perf_counter() - started
    return RayBatchSummary(
        **progress.model_dump(),
        output=str(out_dir),
        cancelled=cancelled,
        duplicates_dropped=writer.duplicates,
    )


def _drive(
    source: _Input,
    config: RLMConfig,
    writer: ResultWriter,
    progress: RayBatchProgress,
    *,
    started: float,
    actors: int,
    runs_per_actor: int,
    block_rows: int,
    num_cpus_per_actor: float,
    runtime_env: Mapping[str, Any] | None,
    trajectories: str | None,
    on_progress: Callable[[RayBatchProgress], None] | None,
    cancel: threading.Event | None,
    grace: float,
    ray_progress_bars: bool,
) -> bool:
    """Run the pipeline and write each record as it arrives; True if it was cancelled."""
    import ray
    import ray.data

    control: Any = ray.remote(JobControl).options(num_cpus=0).remote()
    remote_args: dict[str, Any] = {"num_cpus": num_cpus_per_actor}
    if runtime_env:
        remote_args["runtime_env"] = dict(runtime_env)
    dataset = source.dataset
    if source.reshape:  # a dataset read by Ray: blocks of block_rows rows for the actors
        dataset = dataset.repartition(target_num_rows_per_block=block_rows)
    dataset = dataset.flat_map(
        RowRunner,
        fn_constructor_kwargs={
            "config": config.model_dump(mode="json"),
            "control": control,
            "runs_per_actor": runs_per_actor,
            "trajectories": trajectories,
        },
        # One block per actor at a time, none queued behind it (see the module's docstring).
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        **remote_args,
    )
    context = dataset.context
    context.target_max_block_size = _OUTPUT_BLOCK_BYTES
    # A task may run this many records ahead of the driver (Ray Data's default is 2 blocks).
    # Past it, the actor's event loop blocks on a full queue and every run in it stalls.
    context._max_num_blocks_in_streaming_gen_buffer = max(64, 4 * block_rows)
    context.enable_progress_bars = ray_progress_bars

    stop = threading.Event()
    cancel_sent = threading.Event()

    def relay_cancel() -> None:
        while cancel is not None and not stop.wait(0.05):
            if cancel.is_set():
                control.cancel.remote()
                cancel_sent.set()
                return

    relay = threading.Thread(target=relay_cancel, name="rlm-ray-cancel", daemon=True)
    relay.start()
    rows: Iterator[dict[str, Any]] | None = None
    try:
        with _rows_in_flight(runs_per_actor):
            rows = iter(dataset.iter_rows())
            for record in rows:
                if record.get("id") == FLUSH_ID:
                    continue
                if record.get("error_type") == CANCELLED or cancel_sent.is_set():
                    break
                _write(record, writer, progress, source.prior_failures, started, on_progress)
    except BaseException:  # Ctrl-C or a failure of the pipeline itself: stop everything
        control.cancel.remote()
        cancel_sent.set()
        raise
    finally:
        stop.set()
        relay.join()
        try:
            if cancel_sent.is_set():
                _drain(control, grace)
        finally:
            if rows is not None and hasattr(rows, "close"):
                rows.close()  # shuts the executor down: the actors are killed
            ray.kill(control)
    return cancel_sent.is_set()


def _drain(control: Any, grace: float) -> None:
    """Give the cancelled runs up to ``grace`` seconds to close their REPL workers."""
    import ray

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            left = ray.get(
                control.undrained.remote(), timeout=max(0.1, deadline - time.monotonic())
            )
        except Exception:
            return
        if not left:
            return
        time.sleep(0.05)
    _log.warning("rlm.ray_cancel_grace_expired", grace=grace)


def _write(
    record: dict[str, Any],
    writer: ResultWriter,
    progress: RayBatchProgress,
    prior_failures: Counter[str],
    started: float,
    on_progress: Callable[[RayBatchProgress], None] | None,
) -> None:
    item_id = str(record["id"])
    attempt = int(record.get("attempt") or 1) + prior_failures.get(item_id, 0)
    record = {**record, "attempt": attempt, "retried": attempt > 1}
    if not writer.write(record):
        return
    progress.done += 1
    progress.failed += record.get("error_type") is not None
    progress.retried += attempt > 1
    progress.tokens += int(record.get("total_tokens") or 0)
    if record.get("cost") is not None:
        progress.cost = (progress.cost or 0.0) + float(record["cost"])
    progress.elapsed_s = time.perf_counter() - started
    if on_progress is not None:
        on_progress(progress.model_copy())


def as_rows(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Items (mappings or BatchItems) as validated rows, for callers that build a Dataset."""
    return [_row(raw, f"item {n}") for n, raw in enumerate(items)]
