"""A logging shim for a library.

Unconfigured structlog prints every level to stdout, which a library must never do to its
host application. So events go through structlog only when the application configured it,
and to the standard library logger ``rlm_sdk`` otherwise (silent unless the host enables it).
Context (run id, depth) is bound per call, never at module scope.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_STDLIB = logging.getLogger("rlm_sdk")


class BoundLog:
    """A tiny logger with bound key-values; cheap to create per run."""

    __slots__ = ("_ctx",)

    def __init__(self, **ctx: Any) -> None:
        self._ctx = ctx

    def bind(self, **ctx: Any) -> BoundLog:
        return BoundLog(**{**self._ctx, **ctx})

    def _emit(self, level: int, event: str, kw: dict[str, Any]) -> None:
        if structlog.is_configured():
            structlog.get_logger("rlm_sdk").log(level, event, **self._ctx, **kw)
        elif _STDLIB.isEnabledFor(level):
            fields = {**self._ctx, **kw}
            _STDLIB.log(level, "%s %s", event, " ".join(f"{k}={v!r}" for k, v in fields.items()))

    def debug(self, event: str, **kw: Any) -> None:
        self._emit(logging.DEBUG, event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit(logging.INFO, event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit(logging.WARNING, event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit(logging.ERROR, event, kw)


def get_logger(**ctx: Any) -> BoundLog:
    """A logger with ``ctx`` bound (``run_id=..., depth=...``)."""
    return BoundLog(**ctx)
