"""A context-local listener that lets shared parts report to the run that is using them.

A provider is shared by every run in a process, so it cannot hold one run's event sink. The
orchestrator sets this listener around each model call; the provider's retry code reports
through it, and the report becomes a ``RetryScheduled`` event of the right run. Outside a run
the listener is unset and reporting costs one lookup.

The same mechanism tells a run when its first request is on the wire, so the run can start
its REPL worker (a fork, and encoding a large context) without delaying that request.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

__all__ = [
    "RetryListener",
    "notify_request_sent",
    "notify_retry",
    "request_sent_listener",
    "retry_listener",
]

RetryListener = Callable[[str, int, float, str], None]
"""Called as ``listener(provider, attempt, delay_s, reason)``."""

retry_listener: ContextVar[RetryListener | None] = ContextVar("rlm_retry_listener", default=None)


def notify_retry(provider: str, attempt: int, delay_s: float, reason: str) -> None:
    """Tell the current run, if any, that a retry is scheduled."""
    listener = retry_listener.get()
    if listener is not None:
        listener(provider, attempt, delay_s, reason)


request_sent_listener: ContextVar[Callable[[], None] | None] = ContextVar(
    "rlm_request_sent_listener", default=None
)


def notify_request_sent() -> None:
    """Tell the current run, if any, that its request has been written to the network."""
    listener = request_sent_listener.get()
    if listener is not None:
        listener()
