"""The plain configuration a Ray actor builds its ``RecursiveLM`` from, and per-item options.

It travels to every actor as JSON (``model_dump(mode="json")``), so it holds only data: no
provider object, no callback, and no secret. Keys are read on the worker, from the variable
that ``api_key_env`` names (or the provider's usual one), in that worker's environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlm_sdk._constants import DEFAULT_COMPACT_AT
from rlm_sdk._exceptions import ConfigurationError
from rlm_sdk._orchestrator import RecursiveLM
from rlm_sdk._types import Limits
from rlm_sdk.providers import ModelRouter, OpenAICompatibleProvider, Provider
from rlm_sdk.repl import ForkServer, REPLOptions

__all__ = ["ITEM_OPTIONS", "RLMConfig", "build_rlm", "check_options", "make_provider"]

_SECRET_WORDS = ("key", "token", "secret", "password", "authorization", "header")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LIMIT_OPTIONS = frozenset(
    {"max_iterations", "max_depth", "max_model_calls", "max_tokens", "max_cost", "max_wall_time"}
)
ITEM_OPTIONS = _LIMIT_OPTIONS | {"model", "sub_model", "temperature"}
"""What an item's ``options`` may set for its own run; the rest comes from :class:`RLMConfig`."""


class RLMConfig(BaseModel):
    """What each actor needs to build its :class:`~rlm_sdk.RecursiveLM`: data only, no secrets.

    It is sent to every actor as JSON, so it holds no provider object, no callback and no
    key: a worker reads its key from its own environment. Fields not described here
    (``temperature``, ``max_tokens``, ``protocol``, ``compact_at``, ``prices``,
    ``context_windows``) mean what they mean for ``RecursiveLM``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    """The root model, as for ``RecursiveLM`` (``"openai:gpt-5-mini"``, or a bare name with
    ``base_url``)."""
    sub_model: str | None = None
    """The model behind ``llm_query`` and child runs (default: ``model``)."""
    base_url: str | None = None
    """An OpenAI-compatible endpoint every model string is sent to, unchanged. Without it, each
    model routes by its prefix and the provider reads its usual environment variables
    (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``...) on the worker."""
    api_key_env: str | None = None
    """With ``base_url``, the *name* of the environment variable that holds the key on the
    workers (default: ``OPENAI_API_KEY``, as the provider reads it)."""
    provider_options: dict[str, float | int] = Field(default_factory=dict)
    """``timeout``, ``max_retries`` and ``max_in_flight`` for the ``base_url`` provider.
    Anything that looks like a credential is refused."""
    limits: Limits = Field(default_factory=Limits)
    """Every run's budgets (see :class:`~rlm_sdk.Limits`); an item's options may change them
    for its own run."""
    repl_options: REPLOptions = Field(default_factory=REPLOptions)
    """The REPL worker's sandbox and bounds."""
    on_limit: Literal["raise", "return"] = "return"
    """``"return"`` (the default here) records a run stopped by a budget with its partial
    answer and ``stop_reason="limit"``; ``"raise"`` records it as an error."""
    max_workers: int | None = Field(default=None, ge=1)
    """REPL workers per actor at once (default: one per run in flight)."""
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    protocol: Literal["fenced", "tools", "auto"] = "fenced"
    compact_at: float | None = DEFAULT_COMPACT_AT
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    context_windows: dict[str, int] = Field(default_factory=dict)

    @field_validator("provider_options")
    @classmethod
    def _no_credentials(cls, value: dict[str, float | int]) -> dict[str, float | int]:
        allowed = {"timeout", "max_retries", "max_in_flight"}
        for name in value:
            if any(word in name.lower() for word in _SECRET_WORDS):
                raise ValueError(
                    f"provider_options must not carry credentials ({name!r}): name the "
                    "environment variable that holds the key with api_key_env"
                )
            if name not in allowed:
                raise ValueError(f"unknown provider option {name!r}; known: {sorted(allowed)}")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                "api_key_env is the name of an environment variable (like MY_API_KEY), "
                "not the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _no_userinfo(cls, value: str | None) -> str | None:
        if value is not None and "@" in value.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError("base_url must not carry credentials (user:password@host)")
        return value


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """An item's options without the unset ones; unknown names raise ConfigurationError."""
    given = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = set(given) - ITEM_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown item option(s) {sorted(unknown)}; an item may set {sorted(ITEM_OPTIONS)}"
        )
    return given


def make_provider(config: RLMConfig) -> Provider:
    """The provider an actor shares between its runs, keyed from this worker's environment."""
    if config.base_url is None:
        return ModelRouter()
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    options: dict[str, Any] = dict(config.provider_options)
    return OpenAICompatibleProvider(base_url=config.base_url, api_key=key, **options)


def build_rlm(
    config: RLMConfig,
    options: Mapping[str, Any],
    *,
    provider: Provider,
    forkserver: ForkServer,
    max_workers: int | None,
) -> RecursiveLM:
    """A ``RecursiveLM`` for one set of item options, sharing the actor's provider and fork server."""
    limits = config.limits
    limit_updates = {k: v for k, v in options.items() if k in _LIMIT_OPTIONS}
    if limit_updates:
        limits = Limits.model_validate({**limits.model_dump(), **limit_updates})
    return RecursiveLM(
        str(options.get("model") or config.model),
        sub_model=options.get("sub_model") or config.sub_model,
        provider=provider,
        limits=limits,
        on_limit=config.on_limit,
        max_workers=config.max_workers or max_workers,
        temperature=options.get("temperature", config.temperature),
        max_tokens=config.max_tokens,
        context_windows=config.context_windows,
        compact_at=config.compact_at,
        protocol=config.protocol,
        prices=config.prices,
        repl_options=config.repl_options,
        forkserver=forkserver,
    )
