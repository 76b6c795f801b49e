"""Model strings to providers: built-in prefixes, registration and entry-point plugins."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from rlm_sdk._constants import DEFAULT_OLLAMA_BASE_URL, DEFAULT_OPENAI_BASE_URL, ENTRY_POINT_GROUP
from rlm_sdk._exceptions import ConfigurationError
from rlm_sdk.providers import (
    AnthropicProvider,
    OpenAICompatibleProvider,
    ProviderRegistry,
    _registry,
    register_provider,
    resolve_model,
)
from rlm_sdk.testing import ScriptedProvider
from tests.providers.helpers import chat, mock_api


@pytest.fixture(autouse=True)
def fresh_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own default registry, so registrations do not leak between tests."""
    monkeypatch.setattr(_registry, "DEFAULT_REGISTRY", ProviderRegistry())


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *points: EntryPoint) -> list[dict[str, Any]]:
    """Install ``points`` as the only entry points; return the log of look-ups."""
    lookups: list[dict[str, Any]] = []

    def entry_points(**selection: Any) -> list[EntryPoint]:
        lookups.append(selection)
        return [ep for ep in points if all(getattr(ep, k) == v for k, v in selection.items())]

    monkeypatch.setattr(_registry, "entry_points", entry_points)
    return lookups


def plugin(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_openai_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """'openai:gpt-5-mini' gives an OpenAI provider at the default URL and the bare name."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    provider, name = resolve_model("openai:gpt-5-mini")
    assert isinstance(provider, OpenAICompatibleProvider)
    assert (provider.base_url, name) == (DEFAULT_OPENAI_BASE_URL, "gpt-5-mini")


def test_anthropic_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """'anthropic:claude-sonnet-4-5' gives an Anthropic provider."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    provider, name = resolve_model("anthropic:claude-sonnet-4-5")
    assert isinstance(provider, AnthropicProvider)
    assert name == "claude-sonnet-4-5"


def test_missing_key_surfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolving a provider without its key raises the provider's ConfigurationError."""
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        resolve_model("anthropic:claude-sonnet-4-5")


async def test_ollama_prefix_sends_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """'ollama:qwen3:8b' goes to the default Ollama URL, keeps the tag, and never sends OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-ollama")
    provider, name = resolve_model("ollama:qwen3:8b")
    assert isinstance(provider, OpenAICompatibleProvider)
    assert (provider.base_url, name) == (DEFAULT_OLLAMA_BASE_URL, "qwen3:8b")
    body = {"choices": [{"message": {"content": "hi"}}]}
    with mock_api(DEFAULT_OLLAMA_BASE_URL) as router:
        route = router.post("/chat/completions").respond(json=body)
        async with provider:
            await provider.acomplete(chat())
    assert "authorization" not in route.calls.last.request.headers


def test_ollama_base_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """OLLAMA_BASE_URL moves the Ollama provider."""
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://127.0.0.1:9999/v1")
    provider, _ = resolve_model("ollama:qwen3")
    assert isinstance(provider, OpenAICompatibleProvider)
    assert provider.base_url == "http://127.0.0.1:9999/v1"


@pytest.mark.parametrize(
    "model", ["gpt-5-mini", "meta-llama/llama-3.1-8b-instruct:free", "org/model:v1"]
)
def test_no_prefix_means_openai_compatible(monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    """A string without a prefix (or with ':' after a path) goes whole to the OpenAI-compatible provider."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    provider, name = resolve_model(model)
    assert isinstance(provider, OpenAICompatibleProvider)
    assert name == model


def test_unknown_prefix_lists_known(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown prefix raises ConfigurationError naming the known ones, plugins included."""
    fake_entry_points(monkeypatch, plugin("acme", "acme_rlm:Provider"))
    with pytest.raises(ConfigurationError) as caught:
        resolve_model("qwen3:8b")
    assert str(caught.value) == (
        "unknown provider prefix 'qwen3' in 'qwen3:8b'; known: acme, anthropic, ollama, openai. "
        "For a model name that contains ':', name the provider too, e.g. 'openai:qwen3:8b'."
    )


@pytest.mark.parametrize("model", ["", "openai:"])
def test_empty_model_name(model: str) -> None:
    """A model string without a name is refused."""
    with pytest.raises(ConfigurationError, match="no model name"):
        resolve_model(model)


def test_register_provider() -> None:
    """register_provider makes a prefix resolve through the factory, a new provider per call."""
    register_provider("scripted", lambda: ScriptedProvider(["hi"]))
    first, name = resolve_model("scripted:any-model")
    second, _ = resolve_model("scripted:any-model")
    assert isinstance(first, ScriptedProvider)
    assert first is not second
    assert name == "any-model"


def test_register_can_replace_a_builtin() -> None:
    """A registration replaces a built-in of the same prefix, bare names included."""
    register_provider("openai", lambda: ScriptedProvider(["hi"]))
    assert isinstance(resolve_model("gpt-5-mini")[0], ScriptedProvider)


@pytest.mark.parametrize("prefix", ["", "1abc", "a b", "a:b", "a/b"])
def test_register_rejects_bad_prefix(prefix: str) -> None:
    """A prefix must be an identifier-like word."""
    with pytest.raises(ConfigurationError, match="provider prefix"):
        register_provider(prefix, lambda: ScriptedProvider([]))


def test_registries_are_independent() -> None:
    """A registry of one's own starts from the given table and does not touch the default."""
    registry = ProviderRegistry({"fake": lambda: ScriptedProvider(["x"])}, entry_point_group=None)
    assert isinstance(registry.resolve("fake:m")[0], ScriptedProvider)
    assert registry.known_prefixes() == ["fake"]
    with pytest.raises(ConfigurationError, match="unknown provider prefix 'fake'"):
        resolve_model("fake:m")


def test_plugin_loaded_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points are consulted only for an unknown prefix, then the factory is kept."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    lookups = fake_entry_points(
        monkeypatch, plugin("local", "rlm_sdk.providers:OpenAICompatibleProvider")
    )
    resolve_model("openai:m")
    assert lookups == []
    provider, name = resolve_model("local:m")
    assert isinstance(provider, OpenAICompatibleProvider)
    assert name == "m"
    resolve_model("local:m")
    assert lookups == [{"group": ENTRY_POINT_GROUP, "name": "local"}]


def test_plugin_that_fails_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin whose import fails raises ConfigurationError chained to the import error."""
    fake_entry_points(monkeypatch, plugin("broken", "rlm_sdk_no_such_module:factory"))
    with pytest.raises(
        ConfigurationError, match="plugin 'rlm_sdk_no_such_module:factory' for 'broken'"
    ) as caught:
        resolve_model("broken:m")
    assert isinstance(caught.value.__cause__, ImportError)


def test_factory_returning_non_provider() -> None:
    """A factory that returns something else than a Provider is refused."""
    register_provider("odd", lambda: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="not a Provider"):
        resolve_model("odd:m")


def test_public_names_sorted_and_complete() -> None:
    """rlm_sdk.providers exports a sorted __all__ of names that exist."""
    import rlm_sdk.providers

    names = rlm_sdk.providers.__all__
    assert names == sorted(names)
    assert all(hasattr(rlm_sdk.providers, name) for name in names)
