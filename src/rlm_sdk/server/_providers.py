"""One provider per model prefix for a whole app, so every run shares its connections.

A run made by :class:`~rlm_sdk.RecursiveLM` without a ``provider`` resolves and owns providers
of its own; behind a server, that would give each run its own connections and its own bound
on requests in flight. The app instead hands every run this router, which resolves a model's
prefix once (``openai:``, ``anthropic:``, ``ollama:``...) and keeps that provider until the app
stops.
"""

from __future__ import annotations

from typing import ClassVar

from rlm_sdk.providers import CompletionRequest, CompletionResponse, Provider, resolve_model

__all__ = ["SharedProviders"]


class SharedProviders:
    """A :class:`~rlm_sdk.providers.Provider` routing each request by its model's prefix.

    It receives model names as the run names them (``"openai:gpt-5-mini"``), since a run hands
    a single provider its models unchanged, and passes the provider the name without prefix.
    """

    name: ClassVar[str] = "shared"

    def __init__(self) -> None:
        self._by_prefix: dict[str, Provider] = {}

    @property
    def providers(self) -> dict[str, Provider]:
        """The providers made so far, by prefix (``""`` for a model named without one)."""
        return dict(self._by_prefix)

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        prefix, _, rest = request.model.partition(":")
        if not rest:
            prefix, rest = "", request.model
        provider = self._by_prefix.get(prefix)
        if provider is None:
            provider, rest = resolve_model(request.model)
            self._by_prefix[prefix] = provider
        return await provider.acomplete(request.model_copy(update={"model": rest}))

    async def aclose(self) -> None:
        """Close every provider made; idempotent. A later request makes new ones."""
        providers, self._by_prefix = list(self._by_prefix.values()), {}
        for provider in providers:
            await provider.aclose()
