"""From a model string to a provider: ``"anthropic:claude-sonnet-4-5"`` -> (AnthropicProvider(), name).

Built-ins, in-process registrations and third-party plugins all resolve the same way, through a
:class:`ProviderRegistry`. Plugins are packages declaring an entry point in the
``rlm_sdk.providers`` group (entry name = prefix, object = a zero-argument callable returning a
provider); they are imported only when a prefix nobody registered is asked for.

``DEFAULT_REGISTRY``, used by :func:`resolve_model` and :func:`register_provider`, is the one
piece of module-level mutable state in the SDK, on purpose: a registration is meant to hold for
the whole process, as a plugin's does. Code that wants isolation builds its own registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

from rlm_sdk._constants import DEFAULT_OLLAMA_BASE_URL, ENTRY_POINT_GROUP
from rlm_sdk._exceptions import ConfigurationError
from rlm_sdk._settings import load_settings

from ._anthropic import AnthropicProvider
from ._openai import OpenAICompatibleProvider
from ._types import Provider

__all__ = [
    "DEFAULT_REGISTRY",
    "ProviderFactory",
    "ProviderRegistry",
    "register_provider",
    "resolve_model",
    "split_model",
]

ProviderFactory = Callable[[], Provider]
"""Makes a provider configured from the environment; called once per :meth:`~ProviderRegistry.resolve`."""

_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
"""What may precede the first ``:``; anything else (``meta-llama/x:free``) is a bare model name."""


def _ollama() -> Provider:
    """Ollama's OpenAI-compatible API at ``OLLAMA_BASE_URL`` (with ``/v1``) or the default; no key."""
    base_url = load_settings().ollama_base_url or DEFAULT_OLLAMA_BASE_URL
    return OpenAICompatibleProvider(base_url=base_url, api_key="")


_BUILTINS: Mapping[str, ProviderFactory] = {
    "anthropic": AnthropicProvider,
    "ollama": _ollama,
    "openai": OpenAICompatibleProvider,
}


class ProviderRegistry:
    """Maps a model-string prefix (``openai``, ``anthropic``, ``ollama``, ...) to a provider factory.

    A string without a prefix goes to the ``openai`` factory: any OpenAI-compatible server.

    Args:
        factories: the starting table; the built-ins when omitted.
        entry_point_group: where to look for plugins when a prefix is unknown; None for nowhere.
    """

    def __init__(
        self,
        factories: Mapping[str, ProviderFactory] | None = None,
        *,
        entry_point_group: str | None = ENTRY_POINT_GROUP,
    ) -> None:
        self._factories = dict(_BUILTINS if factories is None else factories)
        self._group = entry_point_group

    def register(self, prefix: str, factory: ProviderFactory) -> None:
        """Make ``prefix:model`` resolve through ``factory`` (replacing any earlier one)."""
        if not _PREFIX.fullmatch(prefix):
            raise ConfigurationError(
                f"a provider prefix is a letter then letters, digits, '_' or '-', not {prefix!r}"
            )
        self._factories[prefix] = factory

    def known_prefixes(self) -> list[str]:
        """The registered prefixes and the installed plugins' (without importing them)."""
        plugins = {ep.name for ep in entry_points(group=self._group)} if self._group else set()
        return sorted(self._factories.keys() | plugins)

    def resolve(self, model: str) -> tuple[Provider, str]:
        """A new provider for ``model`` and the model name to send it.

        Raises:
            ConfigurationError: an empty name, an unknown prefix, a plugin that fails to load,
                or what the provider raises about its own configuration (a missing key).
        """
        prefix, name = split_model(model)
        return self.make(prefix, model=model), name

    def make(self, prefix: str, *, model: str | None = None) -> Provider:
        """A new provider for ``prefix``; ``model`` (the string asked for) only words errors."""
        factory = self._factories.get(prefix) or self._load_plugin(prefix)
        if factory is None:
            asked = model or f"{prefix}:..."
            raise ConfigurationError(
                f"unknown provider prefix {prefix!r} in {asked!r}; known: "
                f"{', '.join(self.known_prefixes())}. For a model name that contains ':', "
                f"name the provider too, e.g. 'openai:{asked}'."
            )
        provider = factory()
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                f"the factory for {prefix!r} returned {provider!r}, not a Provider"
            )
        return provider

    def _load_plugin(self, prefix: str) -> ProviderFactory | None:
        if self._group is None:
            return None
        for entry_point in entry_points(group=self._group, name=prefix):
            try:
                factory: ProviderFactory = entry_point.load()
            except Exception as err:
                raise ConfigurationError(
                    f"the provider plugin {entry_point.value!r} for {prefix!r} failed to load: {err}"
                ) from err
            self._factories[prefix] = factory
            return factory
        return None


DEFAULT_REGISTRY = ProviderRegistry()


def split_model(model: str) -> tuple[str, str]:
    """The provider prefix of a model string and the name to send: the one parser of them.

    ``"anthropic:claude-sonnet-4-5"`` -> ``("anthropic", "claude-sonnet-4-5")``. A string
    with no prefix, or whose text before the first ``:`` cannot be one
    (``"meta-llama/llama-3.3-70b-instruct:free"``), is a bare name for the OpenAI-compatible
    provider, sent whole: ``("openai", "meta-llama/llama-3.3-70b-instruct:free")``.

    Raises:
        ConfigurationError: the name is empty (``"openai:"``, ``""``).
    """
    prefix, colon, name = model.partition(":")
    if not colon or not _PREFIX.fullmatch(prefix):
        prefix, name = "openai", model
    if not name:
        raise ConfigurationError(f"no model name in {model!r}; write e.g. 'openai:gpt-5-mini'")
    return prefix, name


def resolve_model(model: str) -> tuple[Provider, str]:
    """A new provider and the model name for a model string, through :data:`DEFAULT_REGISTRY`.

    ``"openai:gpt-5-mini"``, ``"anthropic:claude-sonnet-4-5"``, ``"ollama:qwen3"``; a string
    without a prefix (``"gpt-5-mini"``) goes to the OpenAI-compatible provider.
    """
    return DEFAULT_REGISTRY.resolve(model)


def register_provider(prefix: str, factory: ProviderFactory) -> None:
    """Make ``prefix:model`` strings resolve through ``factory``, process-wide."""
    DEFAULT_REGISTRY.register(prefix, factory)
