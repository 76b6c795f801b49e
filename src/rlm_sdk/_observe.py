"""A context-local listener that lets shared parts report to the run that is using them.

A provider is shared by every run in a process, so it cannot hold one run's event sink. The
orchestrator sets this listener around each model call; the provider's retry code reports
through it, and the report becomes a ``RetryScheduled`` event of the right run. Outside a run
the listener is unset and reporting costs one lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["RetryListener", "notify_retry", "retry_listener"]

RetryListener = Callable[[str, int, float, str], None]
"""Called as ``listener(provider, attempt, delay_s, reason)``."""

retry_listener: ContextVar[RetryListener | None] = ContextVar("rlm_retry_listener", default=None)


def notify_retry(provider: str, attempt: int, delay_s: float, reason: str) -> None:
    """Tell the current run, if any, that a retry is scheduled."""
    listener = retry_listener.get()
    if listener is not None:
        listener(provider, attempt, delay_s, reason)
