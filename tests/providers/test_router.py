"""ModelRouter: one parser of model strings, one provider per prefix, shared by every call."""

from __future__ import annotations

import pytest

from rlm_sdk import CompletionRequest, ConfigurationError, ModelRouter, OpenAICompatibleProvider
from rlm_sdk.providers import ProviderRegistry, split_model
from rlm_sdk.testing import ScriptedProvider


def _request(model: str) -> CompletionRequest:
    return CompletionRequest(model=model, messages=[{"role": "user", "content": "x"}])


def _recording_registry(made: list[ScriptedProvider]) -> ProviderRegistry:
    def factory() -> ScriptedProvider:
        made.append(ScriptedProvider(lambda request: request.model))
        return made[-1]

    return ProviderRegistry({"openai": factory, "shared": factory}, entry_point_group=None)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai:gpt-5-mini", ("openai", "gpt-5-mini")),
        ("anthropic:claude-sonnet-4-5", ("anthropic", "claude-sonnet-4-5")),
        ("gpt-5-mini", ("openai", "gpt-5-mini")),
        (
            "meta-llama/llama-3.3-70b-instruct:free",
            ("openai", "meta-llama/llama-3.3-70b-instruct:free"),
        ),
        (
            "openai:meta-llama/llama-3.3-70b-instruct:free",
            ("openai", "meta-llama/llama-3.3-70b-instruct:free"),
        ),
    ],
)
def test_split_model(model: str, expected: tuple[str, str]) -> None:
    """A prefix is split off only when it can be one; anything else is a bare name, sent whole."""
    assert split_model(model) == expected


@pytest.mark.parametrize("model", ["", "openai:"])
def test_split_model_refuses_an_empty_name(model: str) -> None:
    """No model name is a configuration error that shows how to write one."""
    with pytest.raises(ConfigurationError, match="no model name"):
        split_model(model)


async def test_names_with_colons_route_the_same_on_every_call() -> None:
    """An OpenRouter-style name with ':' reaches the provider whole, call after call."""
    made: list[ScriptedProvider] = []
    router = ModelRouter(_recording_registry(made))
    name = "meta-llama/llama-3.3-70b-instruct:free"
    answers = [(await router.acomplete(_request(name))).text for _ in range(50)]
    assert answers == [name] * 50
    assert len(made) == 1
    assert [r.model for r in made[0].requests] == [name] * 50


async def test_one_provider_per_prefix_with_names_unprefixed() -> None:
    """Models of one prefix share its provider, which receives the names without the prefix."""
    made: list[ScriptedProvider] = []
    router = ModelRouter(_recording_registry(made))
    for model in ("shared:a", "shared:b", "shared:a", "plain"):
        await router.acomplete(_request(model))
    assert [[r.model for r in p.requests] for p in made] == [["a", "b", "a"], ["plain"]]
    assert sorted(router.providers) == ["openai", "shared"]
    await router.aclose()
    assert router.providers == {}


async def test_close_closes_what_it_made_and_a_later_call_makes_anew() -> None:
    """aclose closes every provider made; the router stays usable."""
    made: list[ScriptedProvider] = []
    router = ModelRouter(_recording_registry(made))
    await router.acomplete(_request("shared:a"))
    await router.aclose()
    await router.aclose()  # idempotent
    await router.acomplete(_request("shared:a"))
    assert len(made) == 2


def test_unknown_prefix_is_a_configuration_error() -> None:
    """A prefix nobody registered names the known ones and the way to send a ':' name."""
    router = ModelRouter(ProviderRegistry({}, entry_point_group=None))
    with pytest.raises(ConfigurationError, match="unknown provider prefix 'nope'"):
        router.route("nope:model")


def test_default_registry_routes_bare_names_to_the_openai_compatible_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OPENAI_BASE_URL set, a bare name goes to one OpenAI-compatible provider there."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    router = ModelRouter()
    first, name = router.route("meta-llama/llama-3.3-70b-instruct:free")
    again, _ = router.route("gpt-5-mini")
    assert isinstance(first, OpenAICompatibleProvider)
    assert first is again
    assert name == "meta-llama/llama-3.3-70b-instruct:free"
