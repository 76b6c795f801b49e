"""Methods: user callables, the RLM's statuses, and the direct call's cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_sdk import ConfigurationError, InternalServerError, Limits, Usage
from rlm_sdk.eval import FunctionMethod, Outcome, RLMMethod, Trial, generate
from rlm_sdk.eval._methods import cut_middle
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration


async def test_function_methods_take_strings_outcomes_or_none(tmp_path: Path) -> None:
    """A callable may return the answer, an Outcome, or None (no answer); anything else is an error."""
    sample = generate("niah", "8k", seed=1)
    trial = Trial(ScriptedProvider([]), tmp_path)

    async def text(s: object) -> str:
        return "42"

    def sync_none(s: object) -> None:
        return None

    async def outcome(s: object) -> Outcome:
        return Outcome(answer="x", status="limit")

    async def wrong(s: object) -> int:
        return 42

    assert (await FunctionMethod(text).run(sample, trial)).answer == "42"
    assert (await FunctionMethod(sync_none).run(sample, trial)).status == "no_answer"  # type: ignore[arg-type]
    assert (await FunctionMethod(outcome).run(sample, trial)).status == "limit"
    with pytest.raises(ConfigurationError, match="returned int"):
        await FunctionMethod(wrong).run(sample, trial)  # type: ignore[arg-type]
    assert FunctionMethod(text, name="mine").name == "mine"


async def test_rlm_statuses_for_limits_and_provider_failures(tmp_path: Path) -> None:
    """A budget that runs out is a limit; a provider that fails is a provider error, with usage kept."""
    sample = generate("niah", "8k", seed=1)
    looping = ScriptedProvider(lambda r: "```repl\nprint(1)\n```")
    limited = RLMMethod("m", limits=Limits(max_model_calls=2))
    await limited.open(looping, {})
    got = await limited.run(sample, Trial(looping, tmp_path))
    await limited.aclose()
    assert (got.status, got.answer, got.usage.calls) == ("limit", None, 2)
    failing = ScriptedProvider(
        ["```repl\nprint(1)\n```", InternalServerError("down", status_code=500)]
    )
    broken = RLMMethod("m")
    await broken.open(failing, {})
    got = await broken.run(sample, Trial(failing, tmp_path))
    await broken.aclose()
    assert got.status == "provider_error" and "down" in (got.error or "")
    assert got.usage.calls == 1 and got.trajectory is not None


def test_trial_prices_calls_without_a_reported_cost(tmp_path: Path) -> None:
    """A call without a reported cost is priced from the table; a reported cost wins."""
    trial = Trial(ScriptedProvider([]), tmp_path, prices={"m": (1.0, 2.0)})
    assert trial.price("m", 1_000_000, 500_000, None) == 2.0
    assert trial.price("m", 10, 10, 0.5) == 0.5
    assert trial.price("other", 10, 10, None) is None
    assert Usage().cost is None


def test_cut_middle_keeps_head_and_tail() -> None:
    """The cut keeps as many characters as asked, half from each end, and says how many went."""
    text = "".join(str(i % 10) for i in range(1000))
    cut = cut_middle(text, 100)
    assert cut.startswith(text[:50]) and cut.endswith(text[-50:])
    assert "[... 900 characters cut ...]" in cut
    assert cut_middle("short", 100) == "short"
