"""One provider per model prefix, shared by every call: the one router of model strings.

A :class:`~rlm_sdk.RecursiveLM` given no ``provider`` sends every call through a
:class:`ModelRouter` of its own; a server hands one router to all of its runs, so they share
connections and the bound on requests in flight. Either way a model string is split by
:func:`~rlm_sdk.providers.split_model` and nothing else, so a name is read the same on the
first call and the thousandth (``meta-llama/llama-3.3-70b-instruct:free`` is a bare
OpenAI-compatible name every time).
"""

from __future__ import annotations

from typing import ClassVar

from ._registry import DEFAULT_REGISTRY, ProviderRegistry, split_model
from ._types import CompletionRequest, CompletionResponse, Provider, supports_tools

__all__ = ["ModelRouter"]


class ModelRouter:
    """A :class:`Provider` that sends each request to the provider its model string names.

    The request's ``model`` is the whole string (``"anthropic:claude-sonnet-4-5"``); the
    provider receives the name without its prefix. Providers are made on first use, one per
    prefix, from ``registry`` (by default the process-wide one that
    :func:`~rlm_sdk.register_provider` fills), and :meth:`aclose` closes them all.
    """

    name: ClassVar[str] = "router"

    def __init__(self, registry: ProviderRegistry | None = None) -> None:
        self._registry = registry or DEFAULT_REGISTRY
        self._by_prefix: dict[str, Provider] = {}
        self._routes: dict[str, tuple[Provider, str]] = {}

    def __repr__(self) -> str:
        return f"ModelRouter(prefixes={sorted(self._by_prefix)!r})"

    @property
    def providers(self) -> dict[str, Provider]:
        """The providers made so far, by prefix."""
        return dict(self._by_prefix)

    def route(self, model: str) -> tuple[Provider, str]:
        """The provider for ``model`` and the name to send it (made on first use).

        Raises:
            ConfigurationError: as :meth:`ProviderRegistry.resolve`.
        """
        route = self._routes.get(model)
        if route is None:
            prefix, name = split_model(model)
            provider = self._by_prefix.get(prefix)
            if provider is None:
                provider = self._by_prefix[prefix] = self._registry.make(prefix, model=model)
            route = self._routes[model] = (provider, name)
        return route

    def supports_tools(self, model: str) -> bool:
        """Whether the provider ``model`` routes to sends tools (see :class:`Provider`)."""
        provider, name = self.route(model)
        return supports_tools(provider, name)

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        provider, name = self.route(request.model)
        if name != request.model:
            request = request.model_copy(update={"model": name})
        return await provider.acomplete(request)

    async def aclose(self) -> None:
        """Close every provider made so far; idempotent. A later request makes new ones."""
        providers = list(self._by_prefix.values())
        self._by_prefix.clear()
        self._routes.clear()
        for provider in providers:
            await provider.aclose()
