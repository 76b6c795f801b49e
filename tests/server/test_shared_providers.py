"""Without a configured provider, every run of an app shares one provider per model prefix
(the app's one :class:`~rlm_sdk.ModelRouter`)."""

from __future__ import annotations

import anyio
import openai
import pytest

from rlm_sdk.providers import _registry
from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import LiveServer, serve_in_thread, two_turn_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedProvider]:
    """A ``shared:`` model prefix whose factory records every provider it makes."""
    providers: list[ScriptedProvider] = []

    def factory() -> ScriptedProvider:
        providers.append(ScriptedProvider(two_turn_policy))
        return providers[-1]

    factories = dict(_registry.DEFAULT_REGISTRY._factories, shared=factory)
    monkeypatch.setattr(_registry.DEFAULT_REGISTRY, "_factories", factories)
    return providers


def test_concurrent_runs_of_an_app_share_the_provider(made: list[ScriptedProvider]) -> None:
    """Three chat completions at once: one provider made, serving all of their calls."""

    async def three(server: LiveServer) -> list[str | None]:
        answers: list[str | None] = []
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="unused", max_retries=0
        ) as client:

            async def one(i: int) -> None:
                completion = await client.chat.completions.create(
                    model="rlm:shared:root",
                    messages=[
                        {"role": "user", "content": f"context {i}"},
                        {"role": "user", "content": "q"},
                    ],
                    extra_body={"rlm": {"sub_model": "shared:sub"}},
                )
                answers.append(completion.choices[0].message.content)

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(one, i)
        return answers

    with serve_in_thread(None, models=["shared:root", "shared:sub"]) as server:  # type: ignore[arg-type]
        answers = anyio.run(three, server)
    assert answers == ["the answer is 42"] * 3
    assert len(made) == 1
    assert sorted(r.model for r in made[0].requests) == ["root"] * 6 + ["sub"] * 3
