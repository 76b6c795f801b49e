"""What runs inside the Ray cluster: the row UDF each actor holds, and the job's control actor.

``RowRunner`` is the callable class Ray Data instantiates once per actor. It owns one
provider (one connection pool), one fork server and a ``RecursiveLM`` per distinct set of
item options sharing them, and Ray Data calls it on the actor's event loop with one row at
a time, many calls in flight. Whatever happens to a run becomes fields of its record: a
row never raises into Ray Data, whose default is to fail the whole dataset on one error.

``JobControl`` is one small async actor per job (no CPU). It counts the attempts of each id
(so an item Ray runs again after its actor died is marked as retried) and carries the
driver's cancel to every actor: each actor keeps one call to
:meth:`JobControl.wait_cancelled` pending, and when it returns cancels its runs, whose own
cleanup stops their REPL workers, then reports that it has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from rlm_sdk._exceptions import RLMError
from rlm_sdk._recorder import JSONLRecorder
from rlm_sdk._types import RLMResult
from rlm_sdk.providers import Provider
from rlm_sdk.repl import ForkServer

from ._config import RLMConfig, build_rlm, check_options, make_provider

__all__ = ["CANCELLED", "FLUSH_ID", "JobControl", "RowRunner", "decode_options"]

CANCELLED = "Cancelled"
"""The ``error_type`` of a row whose run a cancel stopped (the driver does not write it)."""

FLUSH_ID = ""
"""The id of the marker row that follows each record out of its actor (never an item's id)."""

_MAX_VARIANTS = 32


class JobControl:
    """Attempts per id, the job's actors, and the cancel flag, for one job (an async actor)."""

    def __init__(self) -> None:
        self._attempts: dict[str, int] = {}
        self._cancelled: anyio.Event | None = None  # made on the actor's event loop
        self._workers: dict[str, int] = {}
        self._drained: set[str] = set()

    def _flag(self) -> anyio.Event:
        if self._cancelled is None:
            self._cancelled = anyio.Event()
        return self._cancelled

    async def hello(self, worker: str, pid: int) -> None:
        self._workers[worker] = pid

    async def begin(self, item_id: str) -> int:
        """Count an attempt at ``item_id`` and return its number in this job (1 for the first)."""
        attempt = self._attempts[item_id] = self._attempts.get(item_id, 0) + 1
        return attempt

    async def cancel(self) -> None:
        self._flag().set()

    async def wait_cancelled(self) -> bool:
        await self._flag().wait()
        return True

    async def drained(self, worker: str) -> None:
        """An actor's cancelled runs have all ended (their REPL workers stopped)."""
        self._drained.add(worker)

    async def undrained(self) -> list[str]:
        """The actors that said hello and have not yet reported their runs ended."""
        return sorted(set(self._workers) - self._drained)


def decode_options(raw: Any) -> dict[str, Any]:
    """An item's options from a row: a mapping (Arrow struct) or a JSON string, unset ones dropped."""
    import json

    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, Mapping):
        raise TypeError(f"an item's options are a mapping, not {type(raw).__name__}")
    return check_options(raw)


def _reap_children_normally() -> None:
    """Undo an ignored ``SIGCHLD`` (Ray's subreaper option sets it) so that waiting works.

    With ``SIGCHLD`` ignored the kernel reaps children itself and ``waitpid`` can no longer
    report an exit status; the fork server and any directly started REPL worker need it.
    """
    with contextlib.suppress(ValueError, OSError):  # not the main thread: leave it alone
        if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)


class RowRunner:
    """Ray Data's callable class: one per actor, called with one row at a time, many at once."""

    def __init__(
        self,
        config: dict[str, Any],
        control: Any,
        runs_per_actor: int,
        trajectories: str | None = None,
    ) -> None:
        _reap_children_normally()
        self._config = RLMConfig.model_validate(config)
        self._control = control
        self._runs_per_actor = runs_per_actor
        self._worker = f"{_node_id()[:12]}:{os.getpid()}"
        self._trajectory_dir = trajectories
        self._recorder: JSONLRecorder | None = None
        self._provider: Provider | None = None
        self._forkserver: ForkServer | None = None
        self._rlms: dict[str, Any] = {}
        self._scopes: set[anyio.CancelScope] = set()
        self._emptied: anyio.Event | None = None
        self._cancelled = False
        self._watcher: asyncio.Task[None] | None = None
        control.hello.remote(self._worker, os.getpid())

    async def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The row's record, then a marker (an empty id) that the driver skips.

        Ray Data hands a row's output on only once the next output of its task is ready; the
        marker is that next output, so the record leaves as soon as its run ends.
        """
        record = await self._record(row)
        return [record, _empty_record(FLUSH_ID, record["worker"])]

    async def _record(self, row: dict[str, Any]) -> dict[str, Any]:
        self._watch()
        item_id = str(row["id"])
        record = _empty_record(item_id, self._worker)
        if self._cancelled:
            return _fail(record, CANCELLED, "the job was cancelled", 0.0)
        t0 = time.perf_counter()
        record["attempt"] = int(await self._control.begin.remote(item_id))
        try:
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    result = await self._run(row)
                finally:
                    self._scopes.discard(scope)
                    if not self._scopes and self._emptied is not None:
                        self._emptied.set()
            if scope.cancelled_caught:
                return _fail(record, CANCELLED, "the job was cancelled", t0)
            _fill(record, result)
            if result.stop_reason == "error" and result.error:
                _fail(record, "RunError", result.error, t0)
        except RLMError as err:
            if err.result is not None:
                _fill(record, err.result)
            _fail(record, type(err).__name__, str(err), t0)
        except Exception as err:  # one row's failure must never fail the dataset
            _fail(record, type(err).__name__, str(err) or repr(err), t0)
        record["wall_time_s"] = time.perf_counter() - t0
        record["finished_at"] = time.time()
        return record

    async def _run(self, row: Mapping[str, Any]) -> RLMResult:
        options = decode_options(row.get("options"))
        rlm = self._rlm(options)
        path = row.get("path")
        if row.get("context") is not None:
            context: Any = row["context"]
        elif path:
            context = await anyio.Path(str(path)).read_text(encoding="utf-8", errors="replace")
        else:
            raise ValueError("the item has neither 'context' nor 'path'")
        result: RLMResult = await rlm.acomplete(context, row.get("query"), on_event=self._sink())
        return result

    def _rlm(self, options: dict[str, Any]) -> Any:
        import json

        key = json.dumps(options, sort_keys=True)
        rlm = self._rlms.get(key)
        if rlm is None:
            if self._provider is None:
                self._provider = make_provider(self._config)
                self._forkserver = ForkServer()
            assert self._forkserver is not None
            if len(self._rlms) >= _MAX_VARIANTS:  # the configurations, not the resources
                self._rlms.pop(next(iter(self._rlms)))
            rlm = self._rlms[key] = build_rlm(
                self._config,
                options,
                provider=self._provider,
                forkserver=self._forkserver,
                max_workers=None,
            )
        return rlm

    def _sink(self) -> JSONLRecorder | None:
        if self._trajectory_dir is None:
            return None
        if self._recorder is None:
            directory = Path(self._trajectory_dir)
            directory.mkdir(parents=True, exist_ok=True)
            name = self._worker.replace(":", "-")
            self._recorder = JSONLRecorder(directory / f"{name}.jsonl")
        return self._recorder

    def _watch(self) -> None:
        """Keep one pending call to the control actor; when it returns, cancel every run."""
        if self._watcher is not None:
            return

        async def watch() -> None:
            with contextlib.suppress(Exception):
                await self._control.wait_cancelled.remote()
                self._cancelled = True
                for scope in list(self._scopes):
                    scope.cancel()
                if self._scopes:  # each run leaves its scope once its cleanup is done
                    self._emptied = anyio.Event()
                    await self._emptied.wait()
                await self._control.drained.remote(self._worker)

        self._watcher = asyncio.get_running_loop().create_task(watch())


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _empty_record(item_id: str, worker: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "answer": None,
        "stop_reason": None,
        "iterations": None,
        "calls": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "cost": None,
        "error_type": None,
        "error": None,
        "wall_time_s": 0.0,
        "attempt": 1,
        "retried": False,
        "run_id": None,
        "worker": worker,
        "finished_at": time.time(),
    }


def _fill(record: dict[str, Any], result: RLMResult) -> None:
    usage = result.usage
    record.update(
        answer=result.answer,
        stop_reason=result.stop_reason,
        iterations=result.iterations,
        calls=usage.calls,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cost=usage.cost,
        run_id=result.run_id,
    )


def _fail(record: dict[str, Any], kind: str, message: str, t0: float) -> dict[str, Any]:
    record.update(error_type=kind, error=message)
    if t0:
        record["wall_time_s"] = time.perf_counter() - t0
    return record
