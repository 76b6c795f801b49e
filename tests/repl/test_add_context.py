"""Contexts added to a live session (``REPLSession.add_context``), with real workers."""

from __future__ import annotations

import anyio
import pytest

from rlm_sdk import ConfigurationError, REPLError
from rlm_sdk.repl import Corpus, ForkServer, REPLOptions, REPLSession

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("forked", [False, True])
async def test_added_contexts_load_in_every_layout_and_keep_variables(forked: bool) -> None:
    """Text, a list of text, a JSON object and bytes load as the names given, next to the
    variables already bound, whether the worker was forked or started directly."""
    forkserver = ForkServer() if forked else None
    try:
        async with REPLSession("first", forkserver=forkserver) as repl:
            await repl.run_cell("kept = 7")
            await repl.add_context("context_1", "second\ntext")
            await repl.add_context("context_2", ["a", "b\x00c"])
            await repl.add_context("context_3", {"k": [1, None]})
            await repl.add_context("context_4", b"\x00\xff")
            cell = await repl.run_cell(
                "print(kept, context, repr(context_1), context_2, context_3, context_4)"
            )
    finally:
        if forkserver is not None:
            await forkserver.aclose()
    assert cell.error is None
    assert cell.stdout.strip() == (
        "7 first 'second\\ntext' ['a', 'b\\x00c'] {'k': [1, None]} b'\\x00\\xff'"
    )


async def test_added_contexts_are_reserved_and_survive_a_restart() -> None:
    """Like `context`, an added context is restored after a cell rebinds it, is not listed as a
    user variable, and a restarted worker loads it again."""
    async with REPLSession(None) as repl:
        await repl.add_context("context_1", "kept")
        await repl.run_cell("context_1 = 'clobbered'")
        assert (await repl.run_cell("print(context_1)")).stdout.strip() == "kept"
        assert "context_1" not in await repl.list_variables()
        await repl.restart()
        assert (await repl.run_cell("print(context_1)")).stdout.strip() == "kept"


async def test_bad_names_and_values_are_refused() -> None:
    """Taken or private names, and files on disk, are configuration errors; nothing is sent."""
    async with REPLSession("c", tools={"lookup": lambda: 1}) as repl:
        await repl.add_context("extra", "x")
        for name in ("context", "llm_query", "lookup", "answer", "_hidden", "extra", "not a name"):
            with pytest.raises(ConfigurationError, match="cannot name"):
                await repl.add_context(name, "x")
        with pytest.raises(ConfigurationError, match="str, bytes, list or dict"):
            await repl.add_context("files", Corpus([__file__]))
        assert (await repl.run_cell("print(extra)")).stdout.strip() == "x"


async def test_a_context_the_worker_cannot_hold_is_a_repl_error() -> None:
    """A context past the worker's memory limit fails with REPLError; the session goes on."""
    options = REPLOptions(memory_limit=600 * 1024 * 1024)
    async with REPLSession("c", options=options) as repl:
        await repl.run_cell("x = 1")
        with pytest.raises(REPLError, match="could not load context_1"):
            await repl.add_context("context_1", "y" * (400 * 1024 * 1024))
        cell = await repl.run_cell("print(x, 'context_1' in globals())")
    assert cell.stdout.strip() == "1 False"


async def test_cancelling_an_add_leaves_no_name_behind() -> None:
    """An add cancelled mid-way is not recorded: a later add can use the name."""
    async with REPLSession("c") as repl:
        await repl.wait_ready()
        with anyio.move_on_after(0.001):
            await repl.add_context("context_1", "z" * 50_000_000)
        await repl.add_context("context_1", "small")
        assert (await repl.run_cell("print(context_1)")).stdout.strip() == "small"
