"""A worker's lifecycle (``repl/_supervisor.py``): STARTING -> READY -> STOPPING -> GONE.

Whatever ends a worker, it is reaped (or handed to the fork server) before the call that
ended it returns, cancellation included.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio
import pytest
from repl_helpers import forge_on_channel, process_state, thread_children

from rlm_sdk import WorkerProtocolError
from rlm_sdk.repl import REPLSession, _client, _supervisor

pytestmark = pytest.mark.integration


async def test_the_worker_phases_follow_the_state_machine() -> None:
    """STARTING on enter, READY once ready, STOPPING or GONE once closed; no other step."""
    async with REPLSession() as repl:
        worker = repl._worker
        assert worker is not None
        assert worker.phase is _supervisor.Phase.STARTING
        await repl.wait_ready()
        assert worker.phase is _supervisor.Phase.READY
        with pytest.raises(AssertionError, match="READY to STARTING"):
            worker.enter(_supervisor.Phase.STARTING)
        assert repl._state is _client._State.OPEN
    assert worker.phase is _supervisor.Phase.GONE
    assert repl._state is _client._State.CLOSED
    with pytest.raises(AssertionError, match="GONE to READY"):
        worker.enter(_supervisor.Phase.READY)


async def _restart(repl: REPLSession) -> None:
    await repl.restart()


async def _crash(repl: REPLSession) -> None:
    assert (await repl.run_cell("import os\nos._exit(3)")).restarted


async def _deadline(repl: REPLSession) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)"
    result = await repl.run_cell(code, timeout=0.2)
    assert result.timed_out and result.restarted


async def _garbage(repl: REPLSession) -> None:
    with pytest.raises(WorkerProtocolError):
        await repl.run_cell(forge_on_channel(b"\x00\x00\x00\x05hello"))


async def _cancel(repl: REPLSession) -> None:
    with anyio.move_on_after(0.2):
        await repl.run_cell("import time\ntime.sleep(30)")


async def _close(repl: REPLSession) -> None:
    await repl.aclose()


@pytest.mark.parametrize(
    "end", [_restart, _crash, _deadline, _garbage, _cancel, _close], ids=lambda f: f.__name__[1:]
)
async def test_every_way_a_worker_ends_reaps_it_before_returning(
    end: Callable[[REPLSession], Awaitable[None]],
) -> None:
    """Restart, crash, deadline, garbage, cancellation and close: when the call returns, the
    old worker is not only dead but reaped (no zombie), and nothing else was left behind."""
    async with REPLSession() as repl:
        await repl.wait_ready()
        pid = repl.pid
        assert pid is not None
        await end(repl)
        assert process_state(pid) is None
        assert pid not in thread_children(os.getpid())
