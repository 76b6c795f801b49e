"""The session (``repl/_client.py``): its lifecycle, NEW -> OPEN (-> BROKEN) -> CLOSED.

Starting, closing (before, during and after the start, twice, from another task),
cancellation, start failures and restarts, with real workers: each leaves nothing behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError
from repl_helpers import (
    fds_settle_to,
    open_fds,
    open_many_sessions,
    process_state,
    running,
    thread_children,
    wait_not_running,
)

from rlm_sdk import ConfigurationError, WorkerCrashedError, WorkerStartError
from rlm_sdk.repl import ForkServer, REPLOptions, REPLSession, _client, _context

pytestmark = pytest.mark.integration


async def test_aenter_returns_before_the_worker_is_ready() -> None:
    """__aenter__ only spawns; the context load finishes later and run_cell waits for it."""
    context = "z" * 100_000_000
    started = time.perf_counter()
    async with REPLSession(context) as repl:
        entered = time.perf_counter() - started
        await repl.wait_ready()
        ready = time.perf_counter() - started
        assert entered < ready / 2
        assert (await repl.run_cell("len(context)")).stdout == "100000000\n"


async def test_restart_reloads_the_context_and_drops_variables() -> None:
    """restart() gives a fresh worker with the same context; earlier variables are gone."""
    async with REPLSession(["one", "two"]) as repl:
        await repl.run_cell("x = 1\ncontext.append('three')")
        pid = repl.pid
        await repl.restart()
        assert repl.restarts == 1
        assert repl.pid != pid
        result = await repl.run_cell("print(context)\n'x' in dir()")
        assert result.stdout == "['one', 'two']\nFalse\n"


async def test_close_is_idempotent_and_removes_the_directory() -> None:
    """aclose kills the worker, removes its private directory, and can be called twice."""
    async with REPLSession() as repl:
        home = (await repl.run_cell("import os; print(os.getcwd(), os.environ['HOME'])")).stdout
        cwd, env_home = home.split()
        assert cwd == env_home
        assert os.path.isdir(cwd)
        pid = repl.pid
        await repl.aclose()
        await repl.aclose()
        assert not os.path.exists(cwd)
        assert pid is not None and repl.pid is None
        with pytest.raises(RuntimeError, match="not open"):
            await repl.run_cell("1")


def test_bad_arguments_are_configuration_errors() -> None:
    """Wrong context types, tool names and limits fail at construction, naming the argument."""
    with pytest.raises(ConfigurationError, match="context"):
        REPLSession(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="reserved"):
        REPLSession(tools={"context": len})
    with pytest.raises(ConfigurationError, match="identifier"):
        REPLSession(tools={"not a name": len})
    with pytest.raises(ValidationError, match="cell_timeout"):
        REPLOptions(cell_timeout=0)
    with pytest.raises(ValidationError, match="output_limit"):
        REPLOptions(output_limit=-1)
    with pytest.raises(ConfigurationError, match="options"):
        REPLSession(options={"cell_timeout": 1})  # type: ignore[arg-type]


async def test_provider_keys_do_not_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's environment is an allowlist plus explicit extras; keys never get there."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("SOME_TOKEN", "secret")
    async with REPLSession(env={"EXTRA_SETTING": "on"}) as repl:
        result = await repl.run_cell(
            "import os\nprint(sorted(os.environ))\nprint(os.environ['TMPDIR'])"
        )
        names, tmpdir = result.stdout.splitlines()
        assert "OPENAI_API_KEY" not in names
        assert "SOME_TOKEN" not in names
        assert "EXTRA_SETTING" in names
        assert "sk-secret" not in result.stdout
        assert tmpdir == (await repl.run_cell("print(os.getcwd())")).stdout.strip()


async def test_close_returns_with_the_worker_reaped() -> None:
    """When aclose returns, the worker (holding a 40 MB context) is killed and already reaped."""
    async with REPLSession("x" * 40_000_000) as repl:
        await repl.run_cell("y = context.upper()")
        pid = repl.pid
        assert pid is not None
        await repl.aclose()
        assert process_state(pid) is None


async def test_cancellation_mid_cell_returns_promptly_and_kills_the_worker() -> None:
    """Cancelling run_cell kills the worker at once; the next cell gets a fresh one."""
    async with REPLSession(options=REPLOptions(allow_subprocess=True)) as repl:
        result = await repl.run_cell(
            "import subprocess\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid)"
        )
        child = int(result.stdout)
        pid = repl.pid
        assert pid is not None
        started = time.perf_counter()
        with anyio.move_on_after(0.3):
            await repl.run_cell("import time\ntime.sleep(30)")
        assert time.perf_counter() - started < 1.5
        assert not running(pid)
        assert wait_not_running(child)
        after = await repl.run_cell("1")
        assert after.stdout == "1\n"
        assert after.restarted


async def test_fifty_sessions_at_once_leak_no_descriptors_or_processes() -> None:
    """50 workers opened and closed concurrently leave fds and children as they were."""
    async with REPLSession() as warmup:
        await warmup.run_cell("1")
    before = open_fds()
    await open_many_sessions(50)
    assert await fds_settle_to(before) == before


async def test_start_failure_is_a_worker_start_error_with_stderr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker that dies at startup raises WorkerStartError carrying the end of its stderr."""
    broken = tmp_path / "broken_worker.py"
    broken.write_text("import sys\nsys.stderr.write('cannot start: no luck\\n')\nsys.exit(7)\n")
    monkeypatch.setattr(_client, "WORKER_PATH", str(broken))
    async with REPLSession() as repl:
        with pytest.raises(WorkerStartError, match="no luck") as caught:
            await repl.wait_ready()
        assert "code 7" in str(caught.value)


async def test_context_that_cannot_be_encoded_is_a_worker_start_error() -> None:
    """A dict context holding a non-JSON value fails readiness with the encoding error as cause."""
    async with REPLSession({"key": object()}) as repl:
        with pytest.raises(WorkerStartError, match="could not be prepared") as caught:
            await repl.run_cell("1")
        assert isinstance(caught.value.__cause__, TypeError)


async def test_start_timeout_is_a_worker_start_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker that never shakes hands fails wait_ready at start_timeout and is killed."""
    silent = tmp_path / "silent_worker.py"
    silent.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(_client, "WORKER_PATH", str(silent))
    async with REPLSession(options=REPLOptions(start_timeout=0.3)) as repl:
        pid = repl.pid
        assert pid is not None
        with pytest.raises(WorkerStartError, match=r"within 0\.3 s"):
            await repl.run_cell("1")
        assert wait_not_running(pid)


async def test_failed_restart_is_a_worker_crashed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the worker dies and a new one cannot start, run_cell raises WorkerCrashedError."""
    async with REPLSession() as repl:
        await repl.wait_ready()
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")
        with pytest.raises(WorkerCrashedError, match="could not be restarted"):
            await repl.run_cell("import os\nos._exit(1)")
        with pytest.raises(WorkerCrashedError):
            await repl.run_cell("1")


async def test_closing_while_starting_reaps_the_worker_and_its_directory(tmp_path: Path) -> None:
    """aclose right after __aenter__, before the handshake, still kills and reaps the worker
    and removes its directory."""
    repl = REPLSession("x" * 10_000_000)
    await repl.__aenter__()
    pid, workdir = repl.pid, repl._workdir
    assert pid is not None and workdir is not None
    await repl.__aexit__(None, None, None)
    assert process_state(pid) is None
    assert not os.path.exists(workdir)


async def test_close_before_enter_and_twice_is_harmless() -> None:
    """A session closed before it was entered cannot be entered (nor reopened); closing again
    does nothing."""
    repl = REPLSession()
    await repl.aclose()
    await repl.aclose()
    with pytest.raises(RuntimeError, match="only once"):
        await repl.__aenter__()
    with pytest.raises(RuntimeError, match="not open"):
        await repl.run_cell("1")
    with pytest.raises(AssertionError, match="CLOSED to OPEN"):
        repl._enter(_client._State.OPEN)


async def test_closing_from_another_task_ends_a_running_cell() -> None:
    """A cell waiting in one task ends promptly when another task closes the session, and
    the worker is reaped."""
    async with REPLSession() as repl:
        await repl.wait_ready()
        pid = repl.pid
        assert pid is not None
        outcome: list[BaseException] = []

        async def cell() -> None:
            try:
                await repl.run_cell("import time\ntime.sleep(30)")
            except RuntimeError as exc:
                outcome.append(exc)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(cell)
            await anyio.sleep(0.2)
            await repl.aclose()
        assert time.perf_counter() - started < 2
        assert [str(exc) for exc in outcome] == [
            "the REPL session is not open (use `async with REPLSession(...)`)"
        ]
        assert process_state(pid) is None


async def test_a_broken_session_recovers_with_an_explicit_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a failed restart every call raises WorkerCrashedError, until restart() succeeds."""
    async with REPLSession("ctx") as repl:
        await repl.wait_ready()
        with monkeypatch.context() as patched:
            patched.setattr(sys, "executable", "/nonexistent/python")
            with pytest.raises(WorkerCrashedError):
                await repl.run_cell("import os\nos._exit(1)")
        assert repl._state is _client._State.BROKEN
        with pytest.raises(WorkerCrashedError):
            await repl.get_variable("x")
        with monkeypatch.context() as patched:  # a restart that fails again: still BROKEN
            patched.setattr(sys, "executable", "/nonexistent/python")
            with pytest.raises(WorkerCrashedError):
                await repl.restart()
        assert repl._state is _client._State.BROKEN
        await repl.restart()
        assert repl._state is _client._State.OPEN
        assert (await repl.run_cell("context")).stdout == "'ctx'\n"


@pytest.mark.parametrize("forked", [False, True], ids=["direct", "forkserver"])
async def test_cancelling_at_any_point_of_the_start_leaks_nothing(
    forked: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session cancelled anywhere between __aenter__ and its first answer leaves no
    process, no descriptor and no directory behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where session directories go
    # Children this test did not start (a session-wide server of another test) are not its own.
    others = set(thread_children(os.getpid()))

    def ours() -> list[int]:
        return [pid for pid in thread_children(os.getpid()) if pid not in others]

    async with ForkServer() as server:
        spawn = {"forkserver": server} if forked else {}
        async with REPLSession(**spawn) as warm:
            await warm.run_cell("1")
        await anyio.sleep(0.1)
        before = open_fds()
        for delay in (0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05):
            with anyio.move_on_after(delay):
                async with REPLSession("ctx", **spawn) as repl:
                    await repl.run_cell("1")
        assert server.pid is not None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            ours() != [server.pid] or thread_children(server.pid) or any(tmp_path.iterdir())
        ):
            await anyio.sleep(0.01)
        assert ours() == [server.pid]
        assert thread_children(server.pid) == []
        assert not any(tmp_path.iterdir())
        assert open_fds() == before


async def test_a_short_text_context_is_written_without_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A text up to _INLINE_WRITE_CHARS goes into the memfd at once; a longer one on a thread."""
    written_on_threads: list[object] = []
    run_sync = anyio.to_thread.run_sync

    async def spy(func: object, *args: object, **kwargs: object) -> object:
        written_on_threads.append(func)
        return await run_sync(func, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(anyio.to_thread, "run_sync", spy)
    limit = _context._INLINE_WRITE_CHARS
    async with REPLSession("s" * limit) as repl:
        assert (await repl.run_cell("print(len(context))")).stdout == f"{limit}\n"
    assert _context._write_sealed not in written_on_threads
    async with REPLSession("l" * (limit + 1)) as repl:
        assert (await repl.run_cell("print(len(context))")).stdout == f"{limit + 1}\n"
    assert _context._write_sealed in written_on_threads


async def test_a_session_opened_in_a_callers_task_group_runs_and_closes_there() -> None:
    """_open_in (the orchestrator's way): the session's tasks live in the caller's task group,
    which ends once the session is closed; the worker is gone and nothing is left running."""
    repl = REPLSession("in the caller's group")
    async with anyio.create_task_group() as tg:
        await repl._open_in(tg)
        assert (await repl.run_cell("print(context)")).stdout == "in the caller's group\n"
        pid = repl.pid
        assert pid is not None and running(pid)
        await repl.aclose()
    assert wait_not_running(pid)
    with pytest.raises(RuntimeError, match="only once"):
        await repl._open_in(tg)


async def test_entering_a_live_session_again_raises_and_leaves_it_running() -> None:
    """A second ``__aenter__`` is refused before it touches anything: the session still runs."""
    async with REPLSession("still here") as repl:
        with pytest.raises(RuntimeError, match="only once"):
            await repl.__aenter__()
        assert (await repl.run_cell("print(context)")).stdout == "still here\n"
