"""Batch runs over many (context, query) items.

Items run concurrently up to a bound; each item's failure is caught in its own
:class:`BatchResult` (with the partial result when there is one) and never cancels the
others. Results come back in input order (:meth:`RecursiveLM.abatch`) or as they finish
(:meth:`RecursiveLM.abatch_iter`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from ._exceptions import ConfigurationError, RLMError
from ._types import RLMResult

__all__ = ["BatchItem", "BatchProgress", "BatchResult", "RunOne", "iter_batch"]

RunOne = Callable[["BatchItem", int], Awaitable[RLMResult]]
"""Runs one item (with its index); :meth:`RecursiveLM.abatch_iter` passes its top-level run."""


class BatchItem(BaseModel):
    """One unit of a batch: a context, a query, and an optional id of the caller's."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    context: Any
    query: str | None = None
    id: str | None = None
    output_type: Any = None
    """This item's ``output_type``, over the batch's (see ``RecursiveLM.acomplete``)."""


class BatchResult(BaseModel):
    """One item's outcome: a result, or the error (and the partial result, if any)."""

    index: int
    id: str | None = None
    result: RLMResult | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None

    @property
    def answer(self) -> str | None:
        return None if self.result is None else self.result.answer

    @property
    def output(self) -> Any:
        """The typed answer, with an ``output_type``."""
        return None if self.result is None else self.result.output


class BatchProgress(BaseModel):
    """Counts reported after each item finishes."""

    done: int
    failed: int
    total: int
    cost: float | None = None
    tokens: int = 0


def _as_item(raw: Any) -> BatchItem:
    if isinstance(raw, BatchItem):
        return raw
    if isinstance(raw, tuple) and len(raw) == 2:
        return BatchItem(context=raw[0], query=raw[1])
    if isinstance(raw, dict) and "context" in raw:
        return BatchItem.model_validate(raw)
    raise ConfigurationError(
        "batch items are BatchItem, (context, query) tuples or dicts with 'context' and 'query'"
    )


async def iter_batch(
    run_one: RunOne,
    items: Iterable[Any],
    *,
    concurrency: int,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> AsyncIterator[BatchResult]:
    """Run every item, yielding each result as it finishes (see the module docstring)."""
    if concurrency < 1:
        raise ConfigurationError("concurrency must be at least 1")
    batch = [_as_item(raw) for raw in items]
    send, receive = anyio.create_memory_object_stream[BatchResult](math.inf)
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int, item: BatchItem) -> None:
        async with limiter:
            try:
                result = await run_one(item, index)
                outcome = BatchResult(index=index, id=item.id, result=result)
            except RLMError as err:
                outcome = BatchResult(
                    index=index,
                    id=item.id,
                    result=err.result,
                    error=str(err),
                    error_type=type(err).__name__,
                )
            except Exception as err:  # one item's failure must not cancel the others
                outcome = BatchResult(
                    index=index, id=item.id, error=str(err), error_type=type(err).__name__
                )
        send.send_nowait(outcome)

    async def run_all() -> None:
        async with send, anyio.create_task_group() as inner:
            for index, item in enumerate(batch):
                inner.start_soon(one, index, item)

    done = failed = tokens = 0
    cost: float | None = None
    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(run_all)
        async for outcome in receive:
            done += 1
            failed += 0 if outcome.ok else 1
            if outcome.result is not None:
                tokens += outcome.result.usage.total_tokens
                if outcome.result.usage.cost is not None:
                    cost = (cost or 0.0) + outcome.result.usage.cost
            if on_progress is not None:
                on_progress(
                    BatchProgress(
                        done=done, failed=failed, total=len(batch), cost=cost, tokens=tokens
                    )
                )
            yield outcome
