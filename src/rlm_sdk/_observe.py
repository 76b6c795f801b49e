"""How a shared provider reports to the run that is using it.

A provider is shared by every run in a process, so it cannot hold one run's event sink. The
orchestrator sets the run as the *observer* around each model call it makes (every call, the
same way); the provider reports through :func:`notify_retry` and :func:`notify_request_sent`,
which reach that run and nobody else. Outside a run nothing is set, and reporting costs one
context-variable lookup.

Two things are reported: a retry being scheduled (it becomes a ``RetryScheduled`` event of
the run), and a request being on the wire (the run then starts its REPL worker, so the fork
and the context load overlap the model's latency instead of delaying the request).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

__all__ = ["CallObserver", "current_observer", "notify_request_sent", "notify_retry"]


class CallObserver(Protocol):
    """What a run is told about the model call it is waiting for."""

    def retry_scheduled(self, provider: str, attempt: int, delay_s: float, reason: str) -> None:
        """A failed attempt will be retried after ``delay_s`` seconds."""

    def request_sent(self) -> None:
        """The request has been written to the network."""


current_observer: ContextVar[CallObserver | None] = ContextVar("rlm_call_observer", default=None)
"""The run waiting for the model call in this context, if any."""


def notify_retry(provider: str, attempt: int, delay_s: float, reason: str) -> None:
    """Tell the current run, if any, that a retry is scheduled."""
    observer = current_observer.get()
    if observer is not None:
        observer.retry_scheduled(provider, attempt, delay_s, reason)


def notify_request_sent() -> None:
    """Tell the current run, if any, that its request has been written to the network."""
    observer = current_observer.get()
    if observer is not None:
        observer.request_sent()
