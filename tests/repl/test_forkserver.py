"""Workers forked by a ForkServer: same behaviour as direct ones, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from repl_helpers import (
    fds_settle_to,
    open_fds,
    open_many_sessions,
    process_state,
    running,
    wait_not_running,
    wait_reaped,
)
from structlog.testing import capture_logs

from rlm_sdk.repl import ForkServer, REPLOptions, REPLSession, _forkserver, _process, _wire

pytestmark = pytest.mark.integration


async def noticed_dead(*sessions: REPLSession) -> None:
    """Wait until each session has seen its worker exit (its pid is then None)."""
    with anyio.fail_after(5):
        for repl in sessions:
            while repl.pid is not None:
                await anyio.sleep(0.01)


@pytest.fixture
async def server() -> AsyncIterator[ForkServer]:
    async with ForkServer() as forkserver:
        yield forkserver


async def test_worker_is_forked_by_the_server_and_runs_cells(server: ForkServer) -> None:
    """A session with a fork server gets a forked worker: its parent is the server."""
    async with REPLSession(["a", "b"], forkserver=server) as repl:
        result = await repl.run_cell("import os\nprint(context, os.getppid(), os.getpid())")
        items, parent, pid = result.stdout.rsplit(" ", 2)
        assert items == "['a', 'b']"
        assert int(parent) == server.pid
        assert int(pid) == repl.pid
        assert os.getpgid(int(pid)) == int(pid)  # its own process group
        assert repl.isolation_layers[:2] == ["rlimits", "no_new_privs"]
    assert server.starts == 1


async def test_forked_workers_are_independent(server: ForkServer) -> None:
    """Two forked workers have their own namespace, directory and environment."""
    async with (
        REPLSession("one", forkserver=server, env={"WHO": "one"}) as first,
        REPLSession("two", forkserver=server, env={"WHO": "two"}) as second,
    ):
        code = "import os\nx = context\nprint(os.getcwd(), os.environ['WHO'], x)"
        a = (await first.run_cell(code)).stdout.split()
        b = (await second.run_cell(code)).stdout.split()
        assert a[1:] == ["one", "one"]
        assert b[1:] == ["two", "two"]
        assert a[0] != b[0]


async def test_provider_keys_reach_neither_the_server_nor_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server starts with the scrubbed environment; a worker sees only its own."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-forkserver")
    async with (
        ForkServer() as forkserver,
        REPLSession(forkserver=forkserver, env={"EXTRA": "1"}) as repl,
    ):
        result = await repl.run_cell("import os\nprint(sorted(os.environ))")
        assert "OPENAI_API_KEY" not in result.stdout
        assert "EXTRA" in result.stdout
        assert forkserver.pid is not None
        environ = Path(f"/proc/{forkserver.pid}/environ").read_bytes()
        assert b"sk-secret-forkserver" not in environ
        assert b"OPENAI_API_KEY" not in environ


async def test_exit_codes_and_signals_are_reported(server: ForkServer) -> None:
    """os._exit and a segfault in a forked worker are reported with the code or the signal."""
    async with REPLSession("ctx", forkserver=server) as repl:
        exited = await repl.run_cell("import os\nos._exit(3)")
        assert exited.error is not None
        assert "exited with code 3" in exited.error.message
        crashed = await repl.run_cell("import ctypes\nctypes.string_at(0)")
        assert crashed.restarted
        assert crashed.error is not None
        assert "SIGSEGV" in crashed.error.message
        assert "Segmentation fault" in crashed.error.traceback
        assert (await repl.run_cell("context")).stdout == "'ctx'\n"
        assert repl.restarts == 2


async def test_timeouts_interrupt_then_kill_and_restart(server: ForkServer) -> None:
    """A forked worker gets SIGINT at the deadline, and is replaced if it ignores it."""
    async with REPLSession(options=REPLOptions(cell_timeout=0.3), forkserver=server) as repl:
        await repl.run_cell("kept = 1")
        looping = await repl.run_cell("while True:\n    pass")
        assert looping.error is not None
        assert looping.error.type == "KeyboardInterrupt"
        assert (await repl.run_cell("kept")).stdout == "1\n"
        pid = repl.pid
        assert pid is not None
        stubborn = await repl.run_cell(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(5)"
        )
        assert stubborn.restarted
        assert wait_not_running(pid)


async def test_close_kills_the_group_and_the_server_reaps_the_worker(server: ForkServer) -> None:
    """After aclose the worker is killed; the fork server reaps it, and its grandchild dies."""
    async with REPLSession(options=REPLOptions(allow_subprocess=True), forkserver=server) as repl:
        result = await repl.run_cell(
            "import subprocess\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid)"
        )
        child = int(result.stdout)
        pid = repl.pid
        assert pid is not None
        assert running(child)
        await repl.aclose()
        assert wait_reaped(pid)
    assert wait_not_running(child)


async def test_cancellation_kills_a_forked_worker(server: ForkServer) -> None:
    """Cancelling run_cell kills the forked worker at once; the next cell gets a new one."""
    async with REPLSession(forkserver=server) as repl:
        await repl.wait_ready()
        pid = repl.pid
        assert pid is not None
        started = time.perf_counter()
        with anyio.move_on_after(0.3):
            await repl.run_cell("import time\ntime.sleep(30)")
        assert time.perf_counter() - started < 1.5
        assert wait_not_running(pid)
        after = await repl.run_cell("1")
        assert after.stdout == "1\n"
        assert after.restarted


async def test_a_dead_server_is_replaced_and_its_workers_are_restarted(server: ForkServer) -> None:
    """Killing the server kills its workers; the next cell restarts through a new server."""
    async with REPLSession("ctx", forkserver=server) as repl:
        await repl.run_cell("x = 1")
        old_server, old_worker = server.pid, repl.pid
        assert old_server is not None and old_worker is not None
        os.kill(old_server, signal.SIGKILL)
        await noticed_dead(repl)  # as a cell a while later would find it
        with anyio.fail_after(10):
            result = await repl.run_cell("print(context, 'x' in dir())")
        assert result.stdout == "ctx False\n"
        assert result.restarted
        assert result.notice is not None
        assert "the fork server exited" in result.notice
        assert server.starts == 2
        assert server.pid not in (None, old_server)
        assert process_state(old_server) is None  # reaped


async def test_sessions_noticing_a_dead_server_together_share_one_replacement(
    server: ForkServer,
) -> None:
    """Five sessions whose workers died with the server restart through one new server."""
    async with (
        REPLSession(forkserver=server) as a,
        REPLSession(forkserver=server) as b,
        REPLSession(forkserver=server) as c,
        REPLSession(forkserver=server) as d,
        REPLSession(forkserver=server) as e,
    ):
        sessions = [a, b, c, d, e]
        for repl in sessions:
            await repl.wait_ready()
        old_server = server.pid
        assert old_server is not None
        os.kill(old_server, signal.SIGKILL)
        await noticed_dead(*sessions)
        parents: list[int] = []

        async def run(repl: REPLSession) -> None:
            result = await repl.run_cell("import os\nprint(os.getppid())")
            parents.append(int(result.stdout))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for repl in sessions:
                    tg.start_soon(run, repl)
        assert server.starts == 2
        assert set(parents) == {server.pid}


async def test_a_closed_server_means_direct_spawns(server: ForkServer) -> None:
    """Once the server is closed, sessions still work: their workers start directly."""
    await server.aclose()
    assert server.pid is None
    with capture_logs() as logs:
        async with REPLSession(forkserver=server) as repl:
            result = await repl.run_cell("import os\nprint(os.getppid())")
            assert int(result.stdout) == os.getpid()
    assert any(entry["event"] == "rlm.forkserver_unavailable" for entry in logs)


async def test_a_server_that_cannot_start_falls_back_to_direct_spawns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server that dies at once is given up after a few tries; workers start directly."""
    broken = tmp_path / "broken_server.py"
    broken.write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(_process, "FORKSERVER_PATH", str(broken))
    async with ForkServer() as forkserver:
        for _ in range(4):
            with anyio.fail_after(10):
                async with REPLSession(forkserver=forkserver) as repl:
                    result = await repl.run_cell("import os\nprint(os.getppid())")
                    assert int(result.stdout) == os.getpid()
        assert forkserver.starts <= 3


async def test_closing_the_server_kills_its_workers(server: ForkServer) -> None:
    """aclose on the server kills the workers it forked and reaps the server."""
    async with REPLSession(forkserver=server) as repl:
        await repl.wait_ready()
        pid, server_pid = repl.pid, server.pid
        assert pid is not None and server_pid is not None
        await server.aclose()
        assert process_state(server_pid) is None
        await noticed_dead(repl)
        assert not running(pid)
        after = await repl.run_cell("import os\nprint(os.getppid())")
        assert after.restarted
        assert int(after.stdout) == os.getpid()


async def test_twenty_sessions_at_once_leak_nothing(server: ForkServer) -> None:
    """20 forked workers at once all work; fds and processes are as they were after."""
    async with REPLSession(forkserver=server) as warmup:
        await warmup.run_cell("1")
    before = open_fds()
    await open_many_sessions(20, forkserver=server)
    assert await fds_settle_to(before) == before


async def test_a_malformed_request_is_refused_and_the_server_lives_on(server: ForkServer) -> None:
    """A request the server cannot read gets an error reply; the next one is served."""
    server._ensure_running()
    control = server._control
    assert control is not None
    status, status_child = _process.socket.socketpair(
        _process.socket.AF_UNIX, _process.socket.SOCK_SEQPACKET
    )
    with status, status_child:
        _process.socket.send_fds(control, [b"not json"], [status_child.fileno(), 0, 1, 2])
        status.settimeout(5)
        assert b"error" in status.recv(4096)
    async with REPLSession(forkserver=server) as repl:
        assert (await repl.run_cell("1 + 1")).stdout == "2\n"
    assert server.starts == 1


async def test_server_and_workers_die_with_the_sdk_process(tmp_path: Path) -> None:
    """When the SDK process is SIGKILLed, its fork server and the forked worker die too."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import anyio
            from rlm_sdk.repl import ForkServer, REPLSession

            async def main():
                async with ForkServer() as server, REPLSession(forkserver=server) as repl:
                    await repl.wait_ready()
                    print(server.pid, repl.pid, flush=True)
                    await anyio.sleep(60)

            anyio.run(main)
            """
        )
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert parent.stdout is not None
        server, worker = map(int, parent.stdout.readline().split())
        assert running(server) and running(worker)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout:
            parent.stdout.close()
    assert wait_not_running(server)
    assert wait_not_running(worker)


def test_one_server_serves_successive_event_loops() -> None:
    """A ForkServer started lazily in one anyio.run keeps serving the next ones."""
    server = ForkServer()

    async def session() -> int | None:
        async with REPLSession(forkserver=server) as repl:
            assert (await repl.run_cell("1 + 1")).stdout == "2\n"
        return server.pid

    first = anyio.run(session)
    second = anyio.run(session)
    assert first is not None
    assert first == second
    assert server.starts == 1
    anyio.run(server.aclose)
    assert server.pid is None
    assert process_state(first) is None


async def test_a_forked_worker_holds_none_of_the_servers_descriptors(server: ForkServer) -> None:
    """A forked worker holds no socket at all: no control or status socket of the server."""
    code = (
        "import os, stat\n"
        "sockets = 0\n"
        "for fd in range(1024):\n"
        "    try:\n"
        "        sockets += stat.S_ISSOCK(os.fstat(fd).st_mode)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(sockets)"
    )
    async with (
        REPLSession("first", forkserver=server) as first,
        REPLSession("second", forkserver=server) as second,
    ):
        await first.wait_ready()
        assert (await second.run_cell(code)).stdout == "0\n"
        assert (await first.run_cell(code)).stdout == "0\n"


async def test_forked_workers_do_not_share_random_state(server: ForkServer) -> None:
    """Each forked worker draws its own random numbers (the generator is reseeded per fork)."""
    code = "import random, os\nprint(random.random(), os.urandom(8).hex())"
    async with (
        REPLSession(forkserver=server) as first,
        REPLSession(forkserver=server) as second,
    ):
        assert (await first.run_cell(code)).stdout != (await second.run_cell(code)).stdout


async def test_closing_right_after_the_fork_kills_the_worker(server: ForkServer) -> None:
    """A session closed before its worker is even set up still kills it, promptly."""
    for _ in range(30):
        started = time.perf_counter()
        async with REPLSession(forkserver=server) as repl:
            pid = repl.pid
        assert time.perf_counter() - started < 2
        assert pid is not None
        assert wait_reaped(pid)
    assert server.pid is not None
    assert _children(server.pid) == []


async def test_close_leaves_reaping_and_the_directory_to_the_server(server: ForkServer) -> None:
    """Closing does not wait for the worker's exit; the server reaps it, then removes the
    session's directory, however full (a big one through a short-lived child of its own)."""
    directories = []
    for files in (0, 3, 200):
        async with REPLSession(forkserver=server) as repl:
            code = textwrap.dedent(f"""
                import os
                os.makedirs("sub/deeper")
                for i in range({files}):
                    open(f"sub/f{{i}}", "w").write("x")
                print(os.getcwd())
            """)
            result = await repl.run_cell(code)
            assert result.error is None, result.error
            directories.append(Path(result.stdout.strip()))
            pid = repl.pid
            assert pid is not None
        assert wait_reaped(pid)
    deadline = time.monotonic() + 3
    while any(d.exists() for d in directories) and time.monotonic() < deadline:
        await anyio.sleep(0.01)
    assert not any(d.exists() for d in directories)
    server_pid = server.pid
    assert server_pid is not None
    while _children(server_pid) and time.monotonic() < deadline:  # the remover is reaped too
        await anyio.sleep(0.01)
    assert _children(server_pid) == []


async def test_the_server_removes_no_other_directory(tmp_path: Path) -> None:
    """The server acts on a removal request only for a session directory (by its prefix)."""
    import select

    poller = select.poll()
    children = _forkserver._Children(poller)
    child = _forkserver._Child(pid=0, status=None)  # type: ignore[arg-type]
    child.alive = False
    other = tmp_path / "precious"
    other.mkdir()
    session = tmp_path / (_wire.WORKDIR_PREFIX + "x")
    session.mkdir()
    for path in (other, "relative/" + _wire.WORKDIR_PREFIX + "y", session):
        children._on_message(child, json.dumps({"remove": str(path)}).encode())
    children._on_message(child, b"not json")
    assert other.exists()
    assert not session.exists()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_no_trace_of_a_session_stays_in_the_server(server: ForkServer) -> None:
    """A session's environment goes to its worker directly: the server's memory never holds it."""
    token = f"token-{uuid.uuid4().hex}"
    async with REPLSession(forkserver=server, env={"SESSION_SECRET": token}) as repl:
        result = await repl.run_cell("import os\nprint(os.environ['SESSION_SECRET'])")
        assert result.stdout == f"{token}\n"
    assert server.pid is not None
    try:
        memory = _readable_memory(server.pid)
    except PermissionError:
        pytest.skip("cannot read the server's memory here")
    assert memory
    assert token.encode() not in memory


def _readable_memory(pid: int) -> bytes:
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addresses, perms = line.split()[:2]
            if not perms.startswith("r") or "[vvar" in line or "[vsyscall" in line:
                continue
            start, end = (int(a, 16) for a in addresses.split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except OSError:
                continue
    return b"".join(chunks)


async def test_an_abandoned_request_has_its_directory_removed(tmp_path: Path) -> None:
    """A session that gave up on its request says so; the server removes the directory it
    made for that worker even when the worker already exited on its own."""
    import select

    children = _forkserver._Children(select.poll())
    made = tmp_path / (_wire.WORKDIR_PREFIX + "made")
    made.mkdir()
    child = _forkserver._Child(pid=0, status=None, made=str(made))  # type: ignore[arg-type]
    child.alive = False
    children._on_message(child, b'{"abandon": true}')
    assert not made.exists()
