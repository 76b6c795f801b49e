"""What a server offers and accepts, in one validated object.

The server is a front end that may hold provider keys, so everything a client can choose
(models, iterations, depth, body size) is bounded here, by whoever starts the server, and
nothing a browser page or an HTTP client sends can widen it. The page learns the models from
``GET /api/config``; no model name is baked into the page.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlm_sdk._frontend import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITERATIONS
from rlm_sdk.providers import Provider

__all__ = [
    "ANY_HOST",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY_MB",
    "DEFAULT_PORT",
    "LOOPBACK_NAMES",
    "MODEL_PREFIX",
    "OFFLINE_MODEL",
    "ServerConfig",
    "is_loopback",
    "loopback_hosts",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_MB = 256
MAX_ITERATIONS_CAP = 100
MAX_DEPTH_CAP = 5
MAX_RUNS_KEPT = 50
"""Finished runs held in memory for replay; the oldest finished ones are dropped first."""
HEARTBEAT_S = 10.0
"""Seconds between SSE comment lines while nothing else is sent (keeps proxies and clients awake)."""

MODEL_PREFIX = "rlm:"
"""``/v1`` model names are ``rlm:`` + a configured model, e.g. ``rlm:openai:gpt-5-mini``."""
OFFLINE_MODEL = "scripted-niah"
"""The one model of ``--offline`` mode: a scripted stand-in, not a language model."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
ANY_HOST = "*"


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def loopback_hosts(port: int) -> list[str]:
    """The ``Host`` header values a loopback-bound server accepts (DNS-rebinding defence)."""
    hosts = [f"{name}:{port}" for name in LOOPBACK_NAMES]
    if port == 80:  # browsers omit the default port
        hosts += list(LOOPBACK_NAMES)
    return hosts


class ServerConfig(BaseModel):
    """Everything :func:`~rlm_sdk.server.create_app` needs.

    Attributes:
        models: model names offered to the page and to ``/v1`` (``"openai:gpt-5-mini"``);
            the first is the default root model, the second (if any) the default sub model.
        provider: serve every model through this provider (tests and ``--offline`` pass a
            :class:`~rlm_sdk.testing.ScriptedProvider`); ``None`` resolves each model name's
            prefix once, and every run of the app shares that provider (its connections and
            its bound on requests in flight).
        offline: the provider is a scripted stand-in; the page says no model is called.
        max_body_bytes: largest request body accepted (a context upload, a chat request).
        allowed_hosts: accepted ``Host`` header values (``"127.0.0.1:8000"``), compared
            case-insensitively. ``None`` (the default) accepts the loopback names
            (:data:`LOOPBACK_NAMES`) on any port; ``["*"]`` accepts any host, for a server
            deliberately bound to a public address.
        default_max_iterations / default_max_depth: what a run gets when it names none.
        max_iterations_cap / max_depth_cap: the most a client may ask for.
        max_tokens: the cap on each model reply's tokens in every run (``None``: the
            provider's own); a small local model may otherwise write until its context is full.
        max_wall_time: seconds each run may take before it stops with ``stop_reason="limit"``.
        otel: record every run as OpenTelemetry spans (:class:`rlm_sdk.otel.OTelTracer`,
            through the tracer provider the process configured) and continue the trace that
            a request's ``traceparent`` header names. Needs the ``otel`` extra.
        max_sessions: conversations ``/v1/chat/completions`` keeps at once for clients that
            send the ``X-RLM-Session`` header (each holds a REPL worker); past it, the least
            recently used idle one is closed, or the request is refused (429) if none is idle.
            ``0`` refuses the header.
        session_idle_timeout: seconds a conversation may sit idle before it is closed and
            its worker reaped.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    models: list[str] = Field(min_length=1)
    provider: Provider | None = None
    offline: bool = False
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_MB * 1024 * 1024, ge=1)
    allowed_hosts: list[str] | None = None
    default_max_iterations: int = Field(default=DEFAULT_MAX_ITERATIONS, ge=1)
    default_max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1)
    max_iterations_cap: int = Field(default=MAX_ITERATIONS_CAP, ge=1)
    max_depth_cap: int = Field(default=MAX_DEPTH_CAP, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_wall_time: float | None = Field(default=None, gt=0)
    otel: bool = False
    max_sessions: int = Field(default=16, ge=0)
    session_idle_timeout: float = Field(default=600.0, gt=0)

    @field_validator("models")
    @classmethod
    def _clean_models(cls, models: list[str]) -> list[str]:
        cleaned = list(dict.fromkeys(m.strip() for m in models if m.strip()))
        if not cleaned:
            raise ValueError("at least one model name is needed")
        return cleaned

    @field_validator("allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str] | None) -> list[str] | None:
        return None if hosts is None else [h.lower() for h in hosts]

    @model_validator(mode="after")
    def _defaults_within_caps(self) -> ServerConfig:
        if self.default_max_iterations > self.max_iterations_cap:
            raise ValueError("default_max_iterations is above max_iterations_cap")
        if self.default_max_depth > self.max_depth_cap:
            raise ValueError("default_max_depth is above max_depth_cap")
        return self

    @property
    def default_sub_model(self) -> str:
        return self.models[1] if len(self.models) > 1 else self.models[0]

    def public(self) -> dict[str, Any]:
        """What ``GET /api/config`` tells the page (no provider details)."""
        return {
            "models": self.models,
            "default_model": self.models[0],
            "default_sub_model": self.default_sub_model,
            "offline": self.offline,
            "max_body_bytes": self.max_body_bytes,
            "default_max_iterations": self.default_max_iterations,
            "default_max_depth": self.default_max_depth,
            "max_iterations_cap": self.max_iterations_cap,
            "max_depth_cap": self.max_depth_cap,
        }
