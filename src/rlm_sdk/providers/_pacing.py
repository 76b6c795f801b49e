"""Requests-per-minute and tokens-per-minute pacing for any provider.

A wrapper rather than a knob on each provider, so it paces every model source the same way,
including third-party providers. Everything sharing one wrapper instance shares its budget:
a batch of 200 runs with fan-outs of 32 stays under the account's limits instead of meeting
429s. Tokens are estimated before a call (characters / 4 plus ``max_tokens``) and the
estimate is corrected with the usage the reply reports.
"""

from __future__ import annotations

from typing import ClassVar

import anyio

from rlm_sdk._exceptions import ConfigurationError

from ._types import CompletionRequest, CompletionResponse, Provider, supports_tools

__all__ = ["RateLimitedProvider"]


class _Bucket:
    """A token bucket refilled continuously at ``per_minute / 60`` per second."""

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = per_minute if burst is None else burst
        self.level = self.capacity
        self.updated: float | None = None
        self._lock: anyio.Lock | None = None

    def _refill(self) -> None:
        now = anyio.current_time()
        if self.updated is not None:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)  # one huge request waits for a full bucket, not forever
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:  # first come, first served
            self._refill()
            while self.level < amount:
                await anyio.sleep((amount - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


def _estimate_tokens(request: CompletionRequest) -> int:
    chars = sum(len(m.content) for m in request.messages)
    return chars // 4 + (request.max_tokens or 0)


class RateLimitedProvider:
    """Wraps a provider so its calls stay within requests and tokens per minute.

    Args:
        provider: the provider to pace; closed by :meth:`aclose`.
        requests_per_minute: calls start at this average rate.
        tokens_per_minute: tokens are spent at about this average rate.
        burst: how many calls may start at once before pacing begins (default: a minute's
            worth of ``requests_per_minute``).
    """

    name: ClassVar[str] = "rate-limited"

    def __init__(
        self,
        provider: Provider,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst: float | None = None,
    ) -> None:
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ConfigurationError("requests_per_minute must be positive")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise ConfigurationError("tokens_per_minute must be positive")
        self.provider = provider
        self._requests = (
            None if requests_per_minute is None else _Bucket(requests_per_minute, burst)
        )
        self._tokens = None if tokens_per_minute is None else _Bucket(tokens_per_minute)

    def __repr__(self) -> str:
        return f"RateLimitedProvider({self.provider!r})"

    def supports_tools(self, model: str) -> bool:
        """Whether the wrapped provider sends tools for ``model``."""
        return supports_tools(self.provider, model)

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        estimate = _estimate_tokens(request)
        if self._requests is not None:
            await self._requests.take(1)
        if self._tokens is not None:
            await self._tokens.take(estimate)
        response = await self.provider.acomplete(request)
        if self._tokens is not None:
            used = response.usage.prompt_tokens + response.usage.completion_tokens
            if used < estimate:
                self._tokens.give_back(estimate - used)
            elif used > estimate:
                self._tokens.level -= used - estimate  # may go negative: later calls wait
        return response

    async def aclose(self) -> None:
        await self.provider.aclose()
