"""Batch runs on a Ray cluster: one ``RecursiveLM`` per actor, many runs in flight on each.

Install ``rlm-sdk[ray]`` (it adds ``ray[data]``) and run a batch over a list, a JSONL file or a
Parquet dataset::

    from rlm_sdk.ray import RLMConfig, run_batch

    summary = run_batch(
        "items.jsonl",
        RLMConfig(model="openai:gpt-5-mini"),
        output="results/",
        actors=8,
        runs_per_actor=32,
    )

Why it is built this way:

* **Ray Data, not a job system.** The batch is a Ray Data pipeline over an actor pool. Each
  actor builds one :class:`~rlm_sdk.RecursiveLM` (its provider, its connection pool, its fork
  server) from a plain :class:`RLMConfig` sent as JSON, and Ray Data calls its async UDF with
  one row at a time, ``runs_per_actor`` at once. Ray Data bounds async UDFs with a constant
  read on the driver when it plans the job; the job sets it there (setting it in an actor's
  ``runtime_env`` would change nothing).
* **A record per row, never an exception.** Whatever stops a run (a provider failing after
  its retries, a budget, a bad row) becomes that row's ``error_type`` and ``error``; Ray
  Data, which fails the whole dataset on one exception by default, never sees it.
* **The driver writes.** Records stream back to the driver, which appends each to
  ``results.jsonl`` (flushed) and to Parquet parts, and drops an id it has already written
  in this job: Ray restarts a killed actor and runs its rows again (at least once), and the
  output still holds each id once. Resuming skips the ids already present without an error.
* **No secrets in rows or arguments.** Workers read keys from their own environment (the
  node's, or ``runtime_env={"env_vars": ...}``, which Ray stores and ships unencrypted).
* **Cancel reaches every REPL worker.** A cancel (``cancel.set()``, Ctrl-C, or cancelling
  :func:`arun_batch`) tells every actor to cancel its runs, whose own cleanup stops their
  REPL workers; then the pipeline is shut down, which kills the actors.

Nothing here is imported by ``import rlm_sdk``, and Ray itself is imported only when a job runs.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.to_thread

from ._exceptions import ConfigurationError
from ._ray._config import ITEM_OPTIONS, RLMConfig
from ._ray._driver import RayBatchProgress, RayBatchSummary, run_job
from ._ray._output import RESULT_FIELDS, read_results

if importlib.util.find_spec("ray") is None:  # pragma: no cover - the extra is installed in CI
    raise ImportError("rlm_sdk.ray needs Ray, which is not installed: pip install 'rlm-sdk[ray]'")

__all__ = [
    "ITEM_OPTIONS",
    "RESULT_FIELDS",
    "RLMConfig",
    "RayBatchProgress",
    "RayBatchSummary",
    "arun_batch",
    "read_results",
    "run_batch",
]

DEFAULT_ACTORS = 2
DEFAULT_RUNS_PER_ACTOR = 16
DEFAULT_CANCEL_GRACE = 10.0


def run_batch(
    items: Iterable[Any] | str | os.PathLike[str] | Any,
    config: RLMConfig,
    output: str | os.PathLike[str],
    *,
    address: str | None = None,
    actors: int = DEFAULT_ACTORS,
    runs_per_actor: int = DEFAULT_RUNS_PER_ACTOR,
    rows_per_block: int | None = None,
    num_cpus_per_actor: float = 1.0,
    runtime_env: Mapping[str, Any] | None = None,
    trajectories: bool = False,
    on_progress: Callable[[RayBatchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    grace: float = DEFAULT_CANCEL_GRACE,
    flush_rows: int = 1000,
    flush_seconds: float = 10.0,
    ray_progress_bars: bool = False,
) -> RayBatchSummary:
    """Run every item not yet done in ``output`` on Ray, and write one record per item there.

    Args:
        items: a list of items (mappings or :class:`~rlm_sdk.BatchItem`), a ``.jsonl`` file of
            them, a Parquet file or folder, or a ``ray.data.Dataset``. An item has an ``id``
            (required: resuming is by id), its text as ``context`` or a file as ``path`` (read
            on the worker, so on a cluster it must be readable there; in a JSONL file it is
            relative to the file), an optional ``query``, and optional ``options`` for its
            run (:data:`ITEM_OPTIONS`: budgets, ``model``, ``sub_model``, ``temperature``).
        config: what each actor builds its ``RecursiveLM`` from.
        output: a directory: ``results.jsonl``, ``parquet/part-*.parquet`` and, with
            ``trajectories``, ``trajectories/<worker>.jsonl`` (on each worker's disk).
        address: the cluster to connect to when Ray is not initialised yet (``"auto"``, or
            ``"ray://head:10001"``); ``None`` starts a local one, bound to 127.0.0.1. A Ray
            this call starts, it shuts down.
        actors: actors in the pool, each with its own ``RecursiveLM``.
        runs_per_actor: runs in flight on each actor at most (and its REPL workers).
        rows_per_block: rows per task sent to an actor (default ``2 * runs_per_actor``).
        num_cpus_per_actor: CPUs Ray reserves for each actor (its REPL workers run there).
        runtime_env: the actors' Ray runtime environment, e.g. ``{"env_vars": {...}}``.
            Ray does not encrypt it: prefer keys already in the nodes' environment.
        trajectories: record every event of every run under ``output/trajectories``.
        on_progress: called on the driver after each record is written.
        cancel: set it (from any thread) to stop the job: runs are cancelled, their REPL
            workers stopped, the actors killed, and the records so far kept.
        grace: seconds a cancel waits for the runs to close their REPL workers before the
            actors are killed (which also kills them).
        flush_rows: the records so far become a Parquet part once there are this many...
        flush_seconds: ...or once this many seconds have passed since the last part (checked
            as each record is written, and the last part is written when the job ends).
        ray_progress_bars: also show Ray Data's own progress bars.

    Returns:
        Counts of what this job did; the records are in ``output`` (see :func:`read_results`).

    Raises:
        ConfigurationError: an invalid item (no id, repeated ids, unknown options) or option.
        KeyboardInterrupt: after stopping everything, as for a cancel.
    """
    import ray

    started_here = False
    if not ray.is_initialized():
        if address is None:  # a new single-machine Ray, reachable from this machine only
            ray.init(
                address="local",
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                log_to_driver=False,
            )
        else:
            ray.init(address=address, log_to_driver=False)
        started_here = True
    elif address is not None:
        raise ConfigurationError("Ray is already initialised; address= applies only to a new one")
    try:
        return run_job(
            items,
            config,
            output,
            actors=actors,
            runs_per_actor=runs_per_actor,
            rows_per_block=rows_per_block,
            num_cpus_per_actor=num_cpus_per_actor,
            runtime_env=runtime_env,
            trajectories=trajectories,
            on_progress=on_progress,
            cancel=cancel,
            grace=grace,
            flush_rows=flush_rows,
            flush_seconds=flush_seconds,
            ray_progress_bars=ray_progress_bars,
        )
    finally:
        if started_here:
            ray.shutdown()


async def arun_batch(
    items: Iterable[Any] | str | os.PathLike[str] | Any,
    config: RLMConfig,
    output: str | os.PathLike[str],
    **options: Any,
) -> RayBatchSummary:
    """Async twin of :func:`run_batch` (same arguments): the driver loop runs in a thread.

    Cancelling the calling task cancels the job as ``cancel.set()`` does, and waits for it to
    stop (its REPL workers and actors included) before the cancellation propagates.
    """
    cancel: threading.Event = options.pop("cancel", None) or threading.Event()
    finished = threading.Event()

    def job() -> RayBatchSummary:
        try:
            return run_batch(items, config, output, cancel=cancel, **options)
        finally:
            finished.set()

    try:
        return await anyio.to_thread.run_sync(job, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        cancel.set()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(finished.wait)
        raise
