"""The sub-call cache: keys, stores, one request per prompt in flight, accounting, damage.

The model behind every run here is ``ScriptedProvider``, a TEST/DEMO double answering from a
function of the request, never a model.
"""

from __future__ import annotations

import io
import logging
import pickle
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from rlm_sdk import (
    CacheStore,
    CompletionRequest,
    CompletionResponse,
    ConfigurationError,
    Event,
    JSONLRecorder,
    Limits,
    MemoryCache,
    ModelRequest,
    OpenAICompatibleProvider,
    RateLimitedProvider,
    RecursiveLM,
    SQLiteCache,
    SubCallFinished,
    ToolSpec,
    load_runs,
)
from rlm_sdk._cache import SubCallCache, cache_key, provider_identity
from rlm_sdk._console import ConsoleView
from rlm_sdk.providers import ChatMessage, TokenUsage
from rlm_sdk.testing import ScriptedProvider

from .test_orchestrator import code

PROMPTS = ["alpha", "beta", "alpha", "gamma"]
"""A fan-out with one prompt twice: three distinct sub-calls."""


def _request(**changes: object) -> CompletionRequest:
    fields: dict[str, object] = {
        "model": "sub",
        "messages": [ChatMessage(role="user", content="hello")],
        "temperature": 0.0,
        "max_tokens": 100,
    }
    fields.update(changes)
    return CompletionRequest.model_validate(fields)


def _reply(text: str, *, cost: float | None = None, finish: str = "stop") -> CompletionResponse:
    return CompletionResponse(
        text=text,
        finish_reason=finish,
        usage=TokenUsage(prompt_tokens=10, completion_tokens=5, cost=cost),
        model="sub",
    )


# --- the key --------------------------------------------------------------------------------


def test_key_is_stable_and_changes_with_every_input() -> None:
    """Equal requests give one key; each of provider, model, messages and options changes it."""
    base = cache_key("p", _request())
    assert base == cache_key("p", _request(extra_body={}))
    assert len(base) == 64 and int(base, 16) >= 0
    variants = [
        cache_key("q", _request()),
        cache_key("p", _request(model="other")),
        cache_key("p", _request(messages=[ChatMessage(role="user", content="hello!")])),
        cache_key("p", _request(messages=[ChatMessage(role="system", content="hello")])),
        cache_key("p", _request(temperature=0.7)),
        cache_key("p", _request(temperature=None)),
        cache_key("p", _request(max_tokens=101)),
        cache_key("p", _request(stop=["\n"])),
        cache_key("p", _request(tools=[ToolSpec(name="f", description="d", parameters={})])),
        cache_key("p", _request(extra_body={"top_p": 0.9})),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_key_ignores_the_order_of_extra_options() -> None:
    """The canonical form sorts keys, so option order does not split the cache."""
    one = cache_key("p", _request(extra_body={"a": 1, "b": {"x": 1, "y": 2}}))
    two = cache_key("p", _request(extra_body={"b": {"y": 2, "x": 1}, "a": 1}))
    assert one == two


def test_the_provider_is_named_by_the_server_behind_the_model() -> None:
    """Routed and wrapped providers are keyed by the server they reach, not by the wrapper."""
    here = OpenAICompatibleProvider(base_url="http://127.0.0.1:8001/v1", api_key="k")
    there = OpenAICompatibleProvider(base_url="http://127.0.0.1:8002/v1", api_key="k")
    paced = provider_identity(RateLimitedProvider(here, requests_per_minute=60), "m")
    assert paced == provider_identity(here, "m")
    assert "127.0.0.1:8001" in paced
    assert provider_identity(RateLimitedProvider(there), "m") != paced
    assert provider_identity(ScriptedProvider(["x"]), "m") == "scripted"


# --- the memory store -----------------------------------------------------------------------


async def test_memory_cache_drops_the_least_recently_used() -> None:
    """Past max_entries the entry read least recently goes, not the one just read."""
    store = MemoryCache(max_entries=2)
    await store.set("a", "1")
    await store.set("b", "2")
    assert await store.get("a") == "1"  # "b" is now the oldest
    await store.set("c", "3")
    assert (await store.get("a"), await store.get("b"), await store.get("c")) == ("1", None, "3")
    assert len(store) == 2
    with pytest.raises(ConfigurationError):
        MemoryCache(max_entries=0)


def test_cache_option_accepts_true_a_store_or_nothing() -> None:
    """cache=True, a store or None are taken; anything else is a configuration error."""
    provider = ScriptedProvider(["x"])
    for value in (None, False, True, MemoryCache()):
        RecursiveLM("m", provider=provider, cache=value)
    with pytest.raises(ConfigurationError, match="cache must be"):
        RecursiveLM("m", provider=provider, cache="cache.db")  # type: ignore[arg-type]
    assert isinstance(MemoryCache(), CacheStore)
    assert isinstance(SQLiteCache("x.db"), CacheStore)


# --- one request per prompt in flight --------------------------------------------------------


async def test_identical_prompts_in_flight_make_one_request() -> None:
    """Ten concurrent lookups of one key make one request; nine share it as hits."""
    cache = SubCallCache(MemoryCache())
    asked = 0

    async def ask() -> CompletionResponse:
        nonlocal asked
        asked += 1
        await anyio.sleep(0.05)
        return _reply("shared")

    got: list[tuple[str, bool]] = []

    async def one() -> None:
        response, hit = await cache.complete("k", ask)
        got.append((response.text, hit))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert asked == 1
    assert sorted(got) == [("shared", False)] + [("shared", True)] * 9
    assert (await cache.complete("k", ask))[1] is True  # and it was stored
    assert asked == 1


async def test_a_failed_request_is_neither_shared_nor_stored() -> None:
    """When the leading request fails, a waiter makes its own: no waiter gets the error."""
    cache = SubCallCache(MemoryCache())
    calls = 0

    async def ask() -> CompletionResponse:
        nonlocal calls
        calls += 1
        mine = calls
        await anyio.sleep(0.05)
        if mine == 1:
            raise RuntimeError("the first request failed")
        return _reply(f"reply {mine}")

    outcomes: list[str] = []

    async def one() -> None:
        try:
            response, _ = await cache.complete("k", ask)
        except RuntimeError as err:
            outcomes.append(f"error: {err}")
        else:
            outcomes.append(response.text)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
            await anyio.sleep(0.005)  # the first one leads
    assert calls == 2
    assert sorted(outcomes) == ["error: the first request failed"] + ["reply 2"] * 3


async def test_a_cancelled_request_hands_over_to_a_waiter() -> None:
    """A leader cancelled mid-request leaves its waiters to make the request themselves."""
    cache = SubCallCache(MemoryCache())
    calls = 0

    async def ask() -> CompletionResponse:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.05)
        return _reply("done")

    got: list[tuple[str, bool]] = []

    async def waiter() -> None:
        got.append(((r := await cache.complete("k", ask))[0].text, r[1]))

    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(0.01):
            await cache.complete("k", ask)  # leads, then is cancelled
            pytest.fail("the leader should have been cancelled")
        tg.start_soon(waiter)
    assert calls == 2
    assert got == [("done", False)]


async def test_empty_replies_are_not_stored_but_cut_replies_are() -> None:
    """An empty reply is asked again next time; a reply cut at max_tokens is kept."""
    store = MemoryCache()
    cache = SubCallCache(store)

    async def empty() -> CompletionResponse:
        return _reply("  ")

    async def cut() -> CompletionResponse:
        return _reply("half a sent", finish="length")

    await cache.complete("e", empty)
    await cache.complete("c", cut)
    assert await store.get("e") is None
    assert await store.get("c") is not None


async def test_a_failing_or_garbled_store_is_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    """A store that raises, or holds text that is no reply, costs a request, not the run."""

    class Broken:
        async def get(self, key: str) -> str | None:
            raise OSError("the store is down")

        async def set(self, key: str, value: str) -> None:
            raise OSError("the store is down")

    async def ask() -> CompletionResponse:
        return _reply("fresh")

    caplog.set_level(logging.WARNING, logger="rlm_sdk")
    assert (await SubCallCache(Broken()).complete("k", ask))[0].text == "fresh"
    garbled = MemoryCache()
    await garbled.set("k", "{not json")
    response, hit = await SubCallCache(garbled).complete("k", ask)
    assert (response.text, hit) == ("fresh", False)
    assert "rlm.cache_failed" in caplog.text and "rlm.cache_unreadable" in caplog.text


# --- in a run -------------------------------------------------------------------------------


def _policy(prefix: str) -> object:
    """Root: fan PROMPTS out, then answer with what came back; sub-calls: ``prefix:prompt``."""

    def reply(request: CompletionRequest) -> str:
        messages = request.messages
        if messages[0].role != "system":
            return f"{prefix}:{messages[-1].content}"
        if len(messages) == 2:
            return code(f"answer = '|'.join(llm_query_batched({PROMPTS!r}))\nprint(answer)")
        return "FINAL_VAR(answer)"

    return reply


def _sub_requests(provider: ScriptedProvider) -> list[str]:
    return [r.messages[-1].content for r in provider.requests if r.messages[0].role != "system"]


@pytest.mark.integration
async def test_a_cached_rerun_makes_no_sub_call_requests(tmp_path: Path) -> None:
    """The second run's sub-calls are all hits: no request, no charge, marked in the events."""
    # with latency, the two "alpha" sub-calls of the first run are in flight together
    provider = ScriptedProvider(_policy("sub"), cost_per_call=0.01, latency=0.02)  # type: ignore[arg-type]
    events: list[Event] = []
    recorder = JSONLRecorder(tmp_path / "runs.jsonl")
    async with RecursiveLM("root", sub_model="sub", provider=provider, cache=True) as rlm:
        first = await rlm.acomplete("ctx", "q")
        assert sorted(_sub_requests(provider)) == ["alpha", "beta", "gamma"]  # one "alpha"
        second = await rlm.acomplete("ctx", "q", on_event=lambda e: (events.append(e), recorder(e)))
    recorder.close()
    assert first.answer == second.answer == "sub:alpha|sub:beta|sub:alpha|sub:gamma"
    assert len(_sub_requests(provider)) == 3  # none more
    # the first run: the second "alpha" shared the first one's request, a hit
    assert (first.usage.calls, first.usage.cache_hits) == (2 + 3, 1)
    assert (second.usage.calls, second.usage.cache_hits) == (2, 4)
    assert second.usage.cost == pytest.approx(0.02)
    assert second.usage.cost_saved == pytest.approx(0.04)
    assert second.usage.models["sub"].tokens_saved > 0
    finished = [e for e in events if isinstance(e, SubCallFinished)]
    assert [e.cached for e in finished] == [True] * 4
    assert all(e.cost == 0.0 and e.prompt_tokens == 0 for e in finished)
    assert [e for e in events if isinstance(e, ModelRequest) and e.purpose == "sub_call"] == []
    calls = [c for t in second.trajectory.turns for cell in t.cells for c in cell.sub_calls]
    assert [c.cached for c in calls] == [True] * 4
    (saved,) = load_runs(tmp_path / "runs.jsonl")
    assert saved.trajectory == second.trajectory
    assert saved.result is not None and saved.result.usage == second.usage


@pytest.mark.integration
async def test_hits_are_not_charged_to_the_budget() -> None:
    """A run whose budget covers only its root turns completes on a warm shared cache."""
    store = MemoryCache()
    warm = ScriptedProvider(_policy("sub"))  # type: ignore[arg-type]
    async with RecursiveLM("root", sub_model="sub", provider=warm, cache=store) as rlm:
        await rlm.acomplete("ctx", "q")
    cold = ScriptedProvider(_policy("fresh"))  # type: ignore[arg-type]
    tight = Limits(max_model_calls=2)
    async with RecursiveLM(
        "root", sub_model="sub", provider=cold, cache=store, limits=tight
    ) as rlm:
        result = await rlm.acomplete("ctx", "q")
    assert result.answer == "sub:alpha|sub:beta|sub:alpha|sub:gamma"
    assert result.stop_reason == "final_var"
    assert _sub_requests(cold) == []
    assert len(cold.requests) == 2  # root turns are never cached


@pytest.mark.integration
async def test_failed_sub_calls_are_asked_again() -> None:
    """A sub-call that failed is not cached: the next run asks the model again."""
    failures = {"beta": 1}

    def reply(request: CompletionRequest) -> str:
        prompt = request.messages[-1].content
        if request.messages[0].role != "system" and failures.get(prompt):
            failures[prompt] -= 1
            raise RuntimeError("the sub-model is down")
        return _policy("sub")(request)  # type: ignore[operator,no-any-return]

    provider = ScriptedProvider(reply)
    async with RecursiveLM("root", sub_model="sub", provider=provider, cache=True) as rlm:
        first = await rlm.acomplete("ctx", "q")
        second = await rlm.acomplete("ctx", "q")
    assert first.answer is not None and "Error: RuntimeError" in first.answer
    assert second.answer == "sub:alpha|sub:beta|sub:alpha|sub:gamma"
    assert _sub_requests(provider).count("beta") == 2
    assert second.usage.cache_hits == 3


@pytest.mark.integration
async def test_without_a_cache_every_sub_call_is_asked() -> None:
    """The cache is opt-in: by default a repeated prompt is a repeated request."""
    provider = ScriptedProvider(_policy("sub"))  # type: ignore[arg-type]
    async with RecursiveLM("root", sub_model="sub", provider=provider) as rlm:
        result = await rlm.acomplete("ctx", "q")
    assert len(_sub_requests(provider)) == 4
    assert result.usage.cache_hits == 0 and result.usage.cost_saved is None


@pytest.mark.integration
async def test_the_console_and_the_traces_mark_hits() -> None:
    """The console shows "cached" for a hit, and its sub-call span has rlm.cached = true."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    exporting = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    from rlm_sdk.otel import OTelTracer

    exporter = memory.InMemorySpanExporter()
    tracer_provider = sdk.TracerProvider()
    tracer_provider.add_span_processor(exporting.SimpleSpanProcessor(exporter))
    provider = ScriptedProvider(_policy("sub"))  # type: ignore[arg-type]
    out = io.StringIO()
    view = ConsoleView(out, width=120, threaded=False)
    async with RecursiveLM("root", sub_model="sub", provider=provider, cache=True) as rlm:
        await rlm.acomplete("ctx", "q")
        exporter.clear()
        tracer = OTelTracer(tracer_provider=tracer_provider)
        await rlm.acomplete("ctx", "q", on_event=lambda e: (tracer(e), view.handle(e)))
    assert out.getvalue().count("✓ cached") == 4
    sub_calls = [s for s in exporter.get_finished_spans() if s.name == "llm_query"]
    assert len(sub_calls) == 4
    assert [dict(s.attributes or {}).get("rlm.cached") for s in sub_calls] == [True] * 4
    assert [s for s in exporter.get_finished_spans() if s.name == "chat sub"] == []


# --- the SQLite store -----------------------------------------------------------------------


async def test_sqlite_cache_keeps_entries_across_instances(tmp_path: Path) -> None:
    """What one SQLiteCache stores, another on the same file reads; WAL mode is on."""
    path = tmp_path / "deep" / "cache.db"
    one = SQLiteCache(path)
    await one.set("k", "v")
    await one.set("k", "v2")
    two = SQLiteCache(path)
    assert await two.get("k") == "v2"
    assert await two.get("missing") is None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    one.close()
    two.close()


async def test_a_sqlite_cache_pickles_to_a_copy_on_the_same_file(tmp_path: Path) -> None:
    """A pickled store (sent to another process, say) opens the same file afresh."""
    store = SQLiteCache(tmp_path / "cache.db", timeout=2.5)
    await store.set("k", "v")
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.path, copy.timeout) == (store.path, 2.5)
    assert await copy.get("k") == "v"
    copy.close()
    store.close()


async def test_a_garbage_file_is_moved_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is no database is kept as .corrupt and a fresh store takes its place."""
    caplog.set_level(logging.WARNING, logger="rlm_sdk")
    path = tmp_path / "cache.db"
    path.write_bytes(b"this is not a database\n" * 200)
    store = SQLiteCache(path)
    assert await store.get("k") is None
    await store.set("k", "v")
    assert await store.get("k") == "v"
    assert (tmp_path / "cache.db.corrupt").read_bytes().startswith(b"this is not")
    assert "rlm.cache_rebuilt" in caplog.text
    store.close()


async def test_a_truncated_database_never_fails_a_lookup(tmp_path: Path) -> None:
    """A database cut in half gives misses (or intact entries) and takes new ones after."""
    path = tmp_path / "cache.db"
    store = SQLiteCache(path)
    for i in range(400):
        await store.set(f"k{i}", "x" * 500)
    store.close()
    with sqlite3.connect(path) as db:  # fold the WAL into the file before cutting it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    damaged = SQLiteCache(path)
    values = [await damaged.get(f"k{i}") for i in range(400)]
    assert all(v is None or v == "x" * 500 for v in values)
    await damaged.set("new", "value")
    assert await damaged.get("new") == "value"  # the damaged file was moved aside and rebuilt
    damaged.close()


async def test_a_table_of_another_shape_is_rebuilt_and_others_kept(tmp_path: Path) -> None:
    """The store's own table with the wrong columns is remade; other tables are left alone."""
    path = tmp_path / "shared.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rlm_sdk_sub_calls (k TEXT, v BLOB)")
        db.execute("CREATE TABLE mine (x INTEGER)")
        db.execute("INSERT INTO mine VALUES (7)")
    store = SQLiteCache(path)
    await store.set("k", "v")
    assert await store.get("k") == "v"
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT x FROM mine").fetchall() == [(7,)]


_WRITER = textwrap.dedent(
    """
    import sys
    import anyio
    from rlm_sdk import SQLiteCache

    async def main() -> None:
        store = SQLiteCache(sys.argv[1])
        for i in range(int(sys.argv[3])):
            await store.set(f"{sys.argv[2]}{i}", f"from {sys.argv[2]} {i}")
        print(await store.get("parent0"))

    anyio.run(main)
    """
)


@pytest.mark.integration
async def test_two_processes_share_one_store(tmp_path: Path) -> None:
    """A second process writes while this one does; each then reads the other's entries."""
    path = tmp_path / "shared.db"
    store = SQLiteCache(path)
    await store.set("parent0", "from parent 0")
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), "child", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for i in range(1, 200):
        await store.set(f"parent{i}", f"from parent {i}")
    out, err = await anyio.to_thread.run_sync(child.communicate, None, 30)
    assert child.returncode == 0, err
    assert out.strip() == "from parent 0"
    assert [await store.get(f"child{i}") for i in (0, 199)] == ["from child 0", "from child 199"]
    assert await store.get("parent199") == "from parent 199"
    store.close()


_WARM_RUN = textwrap.dedent(
    """
    import sys
    from rlm_sdk import RecursiveLM, SQLiteCache
    from rlm_sdk.testing import ScriptedProvider
    from tests.test_cache import _policy

    rlm = RecursiveLM(
        "root", sub_model="sub", provider=ScriptedProvider(_policy("child")),
        cache=SQLiteCache(sys.argv[1]),
    )
    print(rlm.complete("ctx", "q").answer)
    """
)


@pytest.mark.integration
async def test_a_run_in_another_process_warms_the_store(tmp_path: Path) -> None:
    """Sub-call replies a run in a second process stored answer this process's run."""
    path = tmp_path / "runs.db"
    root = Path(__file__).resolve().parents[1]
    child = await anyio.run_process(
        [sys.executable, "-c", _WARM_RUN, str(path)], cwd=root, check=False
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout.decode().strip() == "child:alpha|child:beta|child:alpha|child:gamma"
    provider = ScriptedProvider(_policy("parent"))  # type: ignore[arg-type]
    store = SQLiteCache(path)
    async with RecursiveLM("root", sub_model="sub", provider=provider, cache=store) as rlm:
        result = await rlm.acomplete("ctx", "q")
    store.close()
    assert result.answer == "child:alpha|child:beta|child:alpha|child:gamma"
    assert result.usage.cache_hits == 4 and _sub_requests(provider) == []
