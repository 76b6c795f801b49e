"""Faults, with real processes: each one is reported, contained, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest
from repl_helpers import running, wait_not_running

from rlm_sdk import WorkerProtocolError
from rlm_sdk.repl import REPLOptions, REPLSession, _client

pytestmark = pytest.mark.integration

SWALLOW_INTERRUPTS = """
while True:
    try:
        while True:
            pass
    except KeyboardInterrupt:
        pass
"""


async def test_infinite_loop_is_interrupted_and_state_kept() -> None:
    """A cell looping forever gets KeyboardInterrupt at its deadline; variables survive."""
    async with REPLSession(options=REPLOptions(cell_timeout=0.5)) as repl:
        await repl.run_cell("kept = 41")
        pid = repl.pid
        started = time.perf_counter()
        result = await repl.run_cell("while True:\n    pass")
        assert 0.4 < time.perf_counter() - started < 1.4
        assert result.timed_out
        assert not result.restarted
        assert result.error is not None
        assert result.error.type == "KeyboardInterrupt"
        assert "time limit of 0.5 s" in result.error.message
        assert "variables are kept" in result.error.message
        assert repl.pid == pid
        assert (await repl.run_cell("kept + 1")).stdout == "42\n"


async def test_loop_swallowing_interrupts_is_killed_and_restarted() -> None:
    """A cell that ignores KeyboardInterrupt is killed after the grace; the result says so."""
    async with REPLSession("ctx", options=REPLOptions(cell_timeout=0.3)) as repl:
        await repl.run_cell("lost = 1")
        pid = repl.pid
        assert pid is not None
        result = await repl.run_cell(SWALLOW_INTERRUPTS)
        assert result.timed_out
        assert result.restarted
        assert result.error is not None
        assert result.error.type == "TimeoutError"
        assert "variables were lost" in result.error.message
        assert repl.restarts == 1
        assert repl.pid != pid
        assert wait_not_running(pid)
        after = await repl.run_cell("print(context)\n'lost' in dir()")
        assert after.stdout == "ctx\nFalse\n"
        assert not after.restarted


async def test_os_exit_is_reported_and_the_session_continues() -> None:
    """os._exit(3) in a cell is a WorkerDied error with the exit code; the next cell works."""
    async with REPLSession("ctx") as repl:
        result = await repl.run_cell("import os\nos._exit(3)")
        assert result.restarted
        assert result.error is not None
        assert result.error.type == "WorkerDied"
        assert "exited with code 3" in result.error.message
        assert (await repl.run_cell("context")).stdout == "'ctx'\n"


async def test_segfault_is_reported_with_the_faulthandler_trace() -> None:
    """A ctypes segfault kills the worker: reported with the signal and the Python stack."""
    async with REPLSession() as repl:
        result = await repl.run_cell("import ctypes\nctypes.string_at(0)")
        assert result.restarted
        assert result.error is not None
        assert result.error.type == "WorkerDied"
        assert "SIGSEGV" in result.error.message
        assert "Segmentation fault" in result.error.traceback
        assert (await repl.run_cell("1 + 1")).stdout == "2\n"


async def test_worker_dying_between_cells_is_noticed() -> None:
    """A worker that died while idle is restarted before the next cell, with a notice."""
    async with REPLSession() as repl:
        await repl.run_cell(
            "import os, threading\nthreading.Timer(0.1, lambda: os._exit(5)).start()\nx = 1"
        )
        await anyio.sleep(0.5)
        result = await repl.run_cell("'x' in dir()")
        assert result.stdout == "False\n"
        assert result.restarted
        assert result.notice is not None
        assert "exited with code 5" in result.notice


async def test_memory_bomb_gets_memory_error_and_worker_survives() -> None:
    """Allocating past the memory limit raises MemoryError in the cell; the worker lives on."""
    async with REPLSession(options=REPLOptions(memory_limit=512 * 1024**2)) as repl:
        pid = repl.pid
        huge = await repl.run_cell("x = bytearray(4 * 1024**3)")
        assert huge.error is not None
        assert huge.error.type == "MemoryError"
        gradual = await repl.run_cell(
            "def bomb():\n    hoard = []\n    while True:\n        hoard.append(bytearray(10**7))\nbomb()"
        )
        assert gradual.error is not None
        assert gradual.error.type == "MemoryError" or gradual.restarted
        assert (await repl.run_cell("len(bytearray(10**7))")).stdout == "10000000\n"
        assert gradual.restarted or repl.pid == pid


async def test_grandchild_process_is_killed_on_close() -> None:
    """A process the cell started and left sleeping dies with the session."""
    async with REPLSession(options=REPLOptions(allow_subprocess=True)) as repl:
        result = await repl.run_cell(
            "import subprocess\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid)"
        )
        child = int(result.stdout)
        worker = repl.pid
        assert running(child)
    assert worker is not None
    assert wait_not_running(child)
    assert wait_not_running(worker)


async def test_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """When the parent process is SIGKILLed, its worker dies too (no orphan)."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import anyio, sys
            from rlm_sdk.repl import REPLSession

            async def main():
                async with REPLSession() as repl:
                    await repl.wait_ready()
                    print(repl.pid, flush=True)
                    await anyio.sleep(60)

            anyio.run(main)
            """
        )
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # a killed parent cannot remove its directory
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert running(worker)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close() if parent.stdout else None
    assert wait_not_running(worker)


@pytest.mark.parametrize(
    ("junk", "message"),
    [(b"\xff\xff\xff\xffgarbage", "byte frame"), (b"\x00\x00\x00\x05hello", "invalid frame")],
)
async def test_garbage_on_the_channel_is_a_protocol_error(junk: bytes, message: str) -> None:
    """Junk written to the protocol pipe (oversized or not JSON) raises WorkerProtocolError."""
    code = (  # probed with fstat: /proc is out of the sandbox's reach
        "import fcntl, os, stat\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
        "        if pipe and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:\n"
        f"            os.write(fd, {junk!r})\n"
        "    except OSError:\n"
        "        pass\n"
        "import time; time.sleep(5)"
    )
    async with REPLSession() as repl:
        pid = repl.pid
        assert pid is not None
        with pytest.raises(WorkerProtocolError, match=message):
            await repl.run_cell(code)
        assert wait_not_running(pid)
        after = await repl.run_cell("1 + 1")
        assert after.stdout == "2\n"
        assert after.restarted


async def test_a_segmented_frame_that_does_not_add_up_is_a_protocol_error() -> None:
    """A segmented frame whose segment table lies about the sizes raises WorkerProtocolError."""
    code = (
        "import fcntl, json, os, stat, struct\n"
        "head = json.dumps({'type': 'call', 'id': 1, 'kind': 'llm', 'model': None,\n"
        "                   'batched': False, '$segments': {'prompts': [10**6]}}).encode()\n"
        "payload = struct.pack('>I', len(head)) + head + b'short'\n"
        "frame = struct.pack('>I', len(payload) | 0x80000000) + payload\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
        "        if pipe and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:\n"
        "            os.write(fd, frame)\n"
        "    except OSError:\n"
        "        pass\n"
        "import time; time.sleep(5)"
    )
    async with REPLSession() as repl:
        pid = repl.pid
        assert pid is not None
        with pytest.raises(WorkerProtocolError, match="invalid frame"):
            await repl.run_cell(code)
        assert wait_not_running(pid)
        assert (await repl.run_cell("1 + 1")).restarted


async def test_resource_limits_are_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker runs under RLIMIT_AS, RLIMIT_FSIZE (EFBIG, not death) and RLIMIT_CORE=0."""
    monkeypatch.setattr(_client, "DEFAULT_WORKER_FILE_SIZE_LIMIT", 1_000_000)
    async with REPLSession(options=REPLOptions(memory_limit=768 * 1024**2)) as repl:
        limits = await repl.run_cell(
            "import resource as r\n"
            "print(r.getrlimit(r.RLIMIT_AS), r.getrlimit(r.RLIMIT_FSIZE), r.getrlimit(r.RLIMIT_CORE))"
        )
        assert limits.stdout == f"{(768 * 1024**2,) * 2} (1000000, 1000000) (0, 0)\n"
        big_file = await repl.run_cell("open('big', 'wb').write(b'x' * 2_000_000)")
        assert big_file.error is not None
        assert "File too large" in big_file.error.message
        assert not big_file.restarted


async def test_a_cell_replacing_the_sigint_handler_still_times_out_cleanly() -> None:
    """A cell that ignores SIGINT is killed at the deadline; the next cell has the handler back."""
    async with REPLSession(options=REPLOptions(cell_timeout=0.3)) as repl:
        ignored = await repl.run_cell(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(5)"
        )
        assert ignored.restarted
        await repl.run_cell("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)")
        looping = await repl.run_cell("while True:\n    pass")
        assert looping.error is not None
        assert looping.error.type == "KeyboardInterrupt"
        assert not looping.restarted


async def test_sigint_outside_a_cell_is_ignored() -> None:
    """An interrupt that arrives while no cell runs does not disturb the worker."""
    async with REPLSession() as repl:
        await repl.run_cell("x = 1")
        assert repl.pid is not None
        os.kill(repl.pid, signal.SIGINT)
        await anyio.sleep(0.1)
        result = await repl.run_cell("x")
        assert result.stdout == "1\n"
        assert not result.restarted
