"""Running evals offline: the oracle doubles score 100 %, known failures score exactly what the
rules say, and results resume, respect the cost cap and the provider's bound."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest

from rlm_sdk import (
    BadRequestError,
    CompletionRequest,
    CompletionResponse,
    ConfigurationError,
    load_runs,
)
from rlm_sdk import eval as rlm_eval
from rlm_sdk.eval import DirectMethod, EvalRow, RLMMethod, Sample, load_rows, oracle_policy
from rlm_sdk.eval._runner import resolve_methods
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration

FAMILIES = ["niah", "aggregate", "pairs", "chains", "docs_multihop", "code_lookup"]


async def evaluate(
    tmp_path: Path, tasks: list[str], methods: list[object], **kwargs: object
) -> rlm_eval.EvalResults:
    kwargs.setdefault("provider", ScriptedProvider(oracle_policy()))
    kwargs.setdefault("n", 2)
    kwargs.setdefault("seed", 0)  # the same samples on every run of the suite
    return await rlm_eval.arun(
        tasks,
        kwargs.pop("lengths", ["8k"]),
        methods,
        model="scripted",
        out=tmp_path / "out",
        report=False,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_the_oracle_scores_every_family_perfectly_through_the_repl(tmp_path: Path) -> None:
    """A scripted model that solves each task with REPL code, reading only what it printed,
    scores 100 % on every family, and so does its direct call."""
    results = await evaluate(tmp_path, FAMILIES, ["rlm", "direct"], lengths=["8k", "12k"])
    assert len(results.rows) == len(FAMILIES) * 2 * 2 * 2
    bad = [(r.sample_id, r.method, r.answer, r.gold) for r in results.rows if r.score != 1.0]
    assert bad == []
    rlm_rows = [r for r in results.rows if r.method == "rlm"]
    assert all(r.status == "answered" and r.turns == 2 and r.trajectory for r in rlm_rows)
    # aggregate and pairs classify the records with sub-calls; the others need none
    assert {r.family for r in rlm_rows if r.sub_calls > 0} == {"aggregate", "pairs"}


@pytest.mark.parametrize(
    ("task", "failure"),
    [
        ("niah:values=3", "first_only"),
        ("chains:hops=4", "first_only"),
        ("aggregate:question=count", "off_by_2"),
        ("pairs", "drop_one"),
        ("docs_multihop", "decoy"),
        ("code_lookup", "wrong_letter"),
    ],
)
async def test_known_failures_score_exactly_what_the_rule_says(
    tmp_path: Path, task: str, failure: str
) -> None:
    """A double that fails one known way gets exactly the partial score the family's rule gives."""
    results = await evaluate(
        tmp_path, [task], ["rlm"], provider=ScriptedProvider(oracle_policy(failure)), n=3
    )
    for row in results.rows:
        if failure == "first_only":
            expected = 1 / len(row.gold)
        elif failure == "off_by_2":
            expected = 0.5625
        elif failure == "drop_one":
            k = len(row.gold)
            expected = 2 * (k - 1) / (2 * k - 1)
        else:
            expected = 0.0
        assert row.score == pytest.approx(expected), (row.answer, row.gold)


def test_the_oracle_answers_only_from_the_repl_output(tmp_path: Path) -> None:
    """No request the root model gets holds the gold answer before the REPL printed it."""
    provider = ScriptedProvider(oracle_policy())
    results = rlm_eval.run(
        ["niah", "docs_multihop"],
        ["8k"],
        ["rlm"],
        model="scripted",
        n=2,
        out=tmp_path,
        provider=provider,
        report=False,
    )
    gold = {g for r in results.rows for g in r.gold}
    for request in provider.requests:
        if request.messages[0].role != "system":
            continue
        before_output = "\n".join(m.content for m in request.messages[:2])
        assert not any(g in before_output for g in gold)
        if len(request.messages) > 2:  # the answering turn: the gold came from the REPL's output
            assert any(g in request.messages[-1].content for g in gold)


async def test_direct_records_overflow_and_truncation(tmp_path: Path) -> None:
    """Past the window the direct call records an overflow without calling the model; the
    truncating variant sends the head and tail, and scores 1 exactly when the needle survived."""
    provider = ScriptedProvider(oracle_policy())
    methods = [
        DirectMethod(window=1500, reply_tokens=200),
        DirectMethod(window=1500, reply_tokens=200, truncate=True),
    ]
    results = await evaluate(tmp_path, ["niah"], methods, provider=provider, n=8)
    plain = [r for r in results.rows if r.method == "direct"]
    cut = [r for r in results.rows if r.method == "direct-truncate"]
    assert all(r.status == "overflow" and r.score == 0 and r.calls == 0 for r in plain)
    assert all(r.detail["estimated_tokens"] > 1500 for r in plain)
    assert len(provider.requests) == len(cut) == 8  # only the truncating variant called
    sent = {
        r.messages[1].content.rsplit("----------", 1)[1].strip(): r.messages[1].content
        for r in provider.requests
    }
    for row in cut:
        assert row.status == "answered" and row.detail["cut_chars"] > 0
        assert row.detail["sent_tokens"] + 200 <= 1500
    survived = [
        any(row.gold[0] in text for text in sent.values() if "characters cut" in text)
        for row in cut
    ]
    assert {row.score for row in cut} == {0.0, 1.0}  # some needles were cut away, some kept
    whole_needle = r"^The hidden number that belongs to [a-z]+-[a-z]+ is \d{7}\.$"
    kept = sum(1 for text in sent.values() if re.search(whole_needle, text, re.M))
    assert sum(row.score for row in cut) == kept
    assert any(survived)


async def test_a_provider_refusing_the_length_is_an_overflow(tmp_path: Path) -> None:
    """With no known window, the provider's own context-length refusal is recorded as an overflow."""
    refusal = BadRequestError(
        "This model's maximum context length is 8192 tokens", provider="x", status_code=400
    )
    other = BadRequestError("invalid temperature", provider="x", status_code=400)
    results = await evaluate(
        tmp_path, ["niah"], ["direct"], provider=ScriptedProvider([refusal, other])
    )
    assert sorted(r.status for r in results.rows) == ["overflow", "provider_error"]


async def test_rows_and_the_summary_follow_the_order_asked_for(tmp_path: Path) -> None:
    """Rows come sample by sample in the methods' given order, whichever finished first, so
    the summary and the report list methods as they were asked for."""
    slow = ScriptedProvider(oracle_policy(), latency=0.01)

    async def instant(sample: Sample) -> str:
        return sample.gold[0]

    results = await evaluate(
        tmp_path, ["niah", "chains"], ["rlm", instant], provider=slow, n=2, concurrency=4
    )
    assert [(r.family, r.index, r.method) for r in results.rows] == [
        (family, i, method)
        for family in ("niah", "chains")
        for i in range(2)
        for method in ("rlm", "instant")
    ]
    assert rlm_eval.summarise(results.rows)["methods"] == ["rlm", "instant"]


async def test_user_methods_and_rlm_configurations_run_side_by_side(tmp_path: Path) -> None:
    """Any async callable is a method; several RLM configurations run under their own names."""

    async def grep(sample: Sample) -> str:
        found = re.findall(r"belongs to [a-z-]+ is (\d+)\.", sample.context)
        return ", ".join(found)

    methods: list[object] = [
        grep,
        RLMMethod(name="rlm-a", max_iterations=3),
        RLMMethod(name="rlm-b", max_depth=2),
    ]
    results = await evaluate(tmp_path, ["niah"], methods)
    by = {m: [r for r in results.rows if r.method == m] for m in ("grep", "rlm-a", "rlm-b")}
    assert all(r.score == 1.0 for rows in by.values() for r in rows)
    assert by["rlm-b"][0].method_config["max_depth"] == 2
    assert by["grep"][0].method_config == {
        "kind": "function",
        "function": "test_user_methods_and_rlm_configurations_run_side_by_side.<locals>.grep",
    }


async def test_rows_hold_everything_and_link_their_trajectory(tmp_path: Path) -> None:
    """Each line has ids, length, answer, score, status, latency, turns, sub-calls, usage per
    model, and a trajectory file whose run is the row's run."""
    results = await evaluate(
        tmp_path,
        ["aggregate"],
        ["rlm"],
        provider=ScriptedProvider(oracle_policy(), cost_per_call=0.001),
        n=1,
    )
    (row,) = results.rows
    line = json.loads(results.results.read_text().splitlines()[0])
    assert (
        line["sample_id"] == row.sample_id
        and line["length"] == 8192
        and line["length_label"] == "8k"
    )
    assert row.sub_calls >= 1 and row.turns == 2 and row.latency_s > 0
    assert row.calls == row.models["scripted"].calls == 2 + row.sub_calls
    assert row.cost == pytest.approx(0.001 * row.calls)
    (saved,) = load_runs(results.out_dir / str(row.trajectory))
    assert saved.trajectory.run_id == row.run_id and saved.result is not None
    assert saved.result.answer == row.answer


async def test_resuming_runs_only_what_is_missing_or_failed(tmp_path: Path) -> None:
    """A second run over the same folder skips finished pairs, adds new samples, and retries errors."""
    first = await evaluate(tmp_path, ["niah"], ["rlm", "direct"], n=2)
    assert len(first.rows) == 4
    rows = load_rows(first.results)
    broken = rows[0].model_copy(update={"status": "provider_error", "score": 0.0})
    with first.results.open("a") as f:
        f.write(broken.model_dump_json() + "\n")
        f.write('{"sample_id": "cut off')  # an interrupted line
    seen: list[EvalRow] = []
    second = await evaluate(tmp_path, ["niah"], ["rlm", "direct"], n=3, on_row=seen.append)
    assert sorted((r.sample_id, r.method) for r in seen) == sorted(
        [(broken.sample_id, broken.method)]
        + [(r.sample_id, r.method) for r in second.rows if r.index == 2]
    )
    assert len(second.rows) == 6 and all(r.score == 1.0 for r in second.rows)


async def test_a_changed_method_configuration_is_refused(tmp_path: Path) -> None:
    """The same method name with another configuration cannot share a results folder."""
    await evaluate(tmp_path, ["niah"], [DirectMethod(window=100_000)], n=1)
    with pytest.raises(ConfigurationError, match="another configuration"):
        await evaluate(tmp_path, ["niah"], [DirectMethod(window=200_000)], n=1)


async def test_the_cost_cap_stops_the_whole_eval_and_resumes(tmp_path: Path) -> None:
    """Once the eval's spend reaches the cap no new sample starts; a higher cap finishes it."""
    provider = ScriptedProvider(oracle_policy(), cost_per_call=0.01)
    capped = await evaluate(
        tmp_path, ["niah"], ["rlm"], provider=provider, n=6, max_cost=0.03, concurrency=1
    )
    assert capped.stopped_by_cost_cap
    assert 0.03 <= capped.spent <= 0.04
    assert capped.not_run >= 3
    summary = json.loads(capped.summary.read_text())
    assert summary["cost_cap"]["reached"] is True
    done = await evaluate(
        tmp_path, ["niah"], ["rlm"], provider=provider, n=6, max_cost=1.0, concurrency=1
    )
    assert not done.stopped_by_cost_cap and len(done.rows) == 6
    every_attempt = [json.loads(line) for line in done.results.read_text().splitlines()]
    assert len(every_attempt) > 6  # the run cut by the cap was tried again
    assert done.spent == pytest.approx(0.01 * sum(r["calls"] for r in every_attempt))


async def test_a_run_in_flight_is_cancelled_at_the_cap(tmp_path: Path) -> None:
    """A run still going when the cap is reached stops and is marked cost_cap (not scored)."""
    results = await evaluate(
        tmp_path,
        ["niah"],
        ["rlm"],
        provider=ScriptedProvider(oracle_policy(), cost_per_call=0.5, latency=0.05),
        n=2,
        max_cost=0.4,
        concurrency=2,
    )
    assert [r.status for r in results.rows] == ["cost_cap", "cost_cap"]
    summary = json.loads(results.summary.read_text())
    assert summary["headline"][0]["n"] == 0


class Bounded:
    """A provider with a bound on requests in flight (like the HTTP providers), counting the peak."""

    name = "bounded"
    max_in_flight = 2

    def __init__(self) -> None:
        self.inner = ScriptedProvider(oracle_policy(), latency=0.02)
        self.now = self.peak = 0

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.inner.acomplete(request)
        finally:
            self.now -= 1

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_samples_in_flight_follow_the_providers_bound(tmp_path: Path) -> None:
    """Without a concurrency, samples run at the provider's bound on requests in flight."""
    provider = Bounded()
    with anyio.fail_after(30):
        results = await evaluate(tmp_path, ["niah"], ["direct"], provider=provider, n=6)
    assert len(results.rows) == 6
    assert provider.peak == 2


def test_methods_by_name_with_their_own_settings() -> None:
    """'rlm:key=value,...' and 'direct:key=value,...' make configured methods named by their text
    (or name=); the eval's options are the base they change; bad keys and values are refused."""
    made = resolve_methods(
        ["rlm", "rlm:max_depth=2,protocol=auto,sub_model=openai:gpt-5-nano",
         "direct:window=4096,name=direct-4k", "direct-truncate:reply_tokens=64"],
        model="m", rlm_options={"max_iterations": 5}, direct_options={"max_tokens": 99},
    )  # fmt: skip
    plain, deep, direct, cut = made
    assert isinstance(plain, RLMMethod) and plain.name == "rlm"
    assert plain.options == {"max_iterations": 5}
    assert isinstance(deep, RLMMethod)
    assert deep.name == "rlm:max_depth=2,protocol=auto,sub_model=openai:gpt-5-nano"
    assert deep.options == {
        "max_iterations": 5,
        "max_depth": 2,
        "protocol": "auto",
        "sub_model": "openai:gpt-5-nano",
    }
    assert isinstance(direct, DirectMethod) and isinstance(cut, DirectMethod)
    assert (direct.name, direct.window, direct.truncate, direct.max_tokens) == (
        "direct-4k",
        4096,
        False,
        99,
    )
    assert (cut.name, cut.truncate, cut.reply_tokens, cut.model) == (
        "direct-truncate:reply_tokens=64",
        True,
        64,
        "m",
    )
    with pytest.raises(ConfigurationError, match="has no setting 'depth'"):
        resolve_methods(["rlm:depth=2"], model="m")
    with pytest.raises(ConfigurationError, match="window must be a int"):
        resolve_methods(["direct:window=big"], model="m")
    with pytest.raises(ConfigurationError, match="unknown method 'summarise'"):
        resolve_methods(["summarise"], model="m")
    with pytest.raises(ConfigurationError, match="share a name"):
        resolve_methods(["rlm", "rlm:name=rlm"], model="m")


async def test_two_rlm_configurations_by_name_run_side_by_side(tmp_path: Path) -> None:
    """Configured methods named in strings run under their own names with their own settings."""
    results = await evaluate(
        tmp_path, ["niah"], ["rlm", "rlm:max_depth=2,name=rlm-deep", "direct"], n=1
    )
    by = {r.method: r for r in results.rows}
    assert set(by) == {"rlm", "rlm-deep", "direct"}
    assert by["rlm-deep"].method_config["max_depth"] == 2
    assert "max_depth" not in by["rlm"].method_config
    assert all(r.score == 1.0 for r in results.rows)


async def test_the_model_defaults_to_rlm_model_for_every_built_in_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without model=, RLM_MODEL names the model of the RLM and of the direct call alike; with
    neither, the direct method is refused before anything runs."""
    monkeypatch.setenv("RLM_MODEL", "env-model")
    results = await rlm_eval.arun(
        ["niah"], ["8k"], ["rlm", "direct"], n=1, out=tmp_path / "env", report=False,
        provider=ScriptedProvider(oracle_policy()),
    )  # fmt: skip
    assert {r.method: r.method_config["model"] for r in results.rows} == {
        "rlm": "env-model",
        "direct": "env-model",
    }
    assert all(r.status == "answered" and set(r.models) == {"env-model"} for r in results.rows)
    monkeypatch.delenv("RLM_MODEL")
    with pytest.raises(ConfigurationError, match="direct needs a model"):
        await rlm_eval.arun(
            ["niah"], ["8k"], ["direct"], n=1, out=tmp_path / "none", report=False,
            provider=ScriptedProvider(oracle_policy()),
        )  # fmt: skip


async def test_without_a_seed_each_folder_draws_one_and_keeps_it(tmp_path: Path) -> None:
    """No seed: each folder gets its own random samples, kept in eval.json for a resume; an
    explicit seed gives the same samples in any folder."""

    async def ids(folder: str, **kwargs: object) -> set[str]:
        results = await rlm_eval.arun(
            ["niah"], ["8k"], ["direct"], model="scripted", n=2, out=tmp_path / folder,
            report=False, provider=ScriptedProvider(oracle_policy()), **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        assert json.loads(results.summary.read_text())["seed"] == results.seed
        return {r.sample_id for r in results.rows}

    first, again, other = await ids("a"), await ids("a"), await ids("b")
    assert first == again and first.isdisjoint(other)
    kept = json.loads((tmp_path / "a" / "eval.json").read_text())["seed"]
    assert isinstance(kept, int) and kept != 0
    assert await ids("c", seed=kept) == first
    assert await ids("d", seed=7) == await ids("e", seed=7)
    assert not (tmp_path / "d" / "eval.json").exists()
