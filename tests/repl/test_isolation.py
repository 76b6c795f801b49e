"""The sandbox as a session applies it: real workers in the default ``auto`` mode, real attacks.

``test_sandbox.py`` tests the layers one by one in a harness; these tests check that a
``REPLSession`` asks for them, reports them, and that model code run through ``run_cell``
meets them: secrets, the network, files, signals and processes are out of reach.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from repl_helpers import accepted
from structlog.testing import capture_logs

from rlm_sdk import ConfigurationError, IsolationError, WorkerStartError
from rlm_sdk.repl import ForkServer, REPLOptions, REPLSession, _sandbox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux"),
]

HOST = _sandbox.probe()
ABI = int(HOST["landlock_abi"])
needs_landlock = pytest.mark.skipif(ABI == 0, reason="needs Landlock")


def expected_layers(*, allow_network: bool = False) -> list[str]:
    """What ``auto`` applies on this host (the same rule as ``test_sandbox.py``)."""
    layers = ["rlimits", "no_new_privs"]
    if HOST["netns"] and not allow_network:
        layers.append("netns")
    layers.append("drop_caps")
    if ABI:
        layers.append(f"landlock_fs:abi{ABI}")
    if ABI >= 4 and not allow_network:
        layers.append("landlock_net")
    if ABI >= 6:
        layers += ["landlock_scope_signal", "landlock_scope_abstract_unix"]
    if HOST["seccomp"]:
        layers.append("seccomp")
    return layers


class MissingLayer(REPLSession):
    """A session whose worker pretends the host lacks a layer (the sandbox's simulation)."""

    def __init__(self, missing: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.missing = missing

    def _sandbox_policy(self, memory_bytes: int) -> dict[str, Any]:
        return {**super()._sandbox_policy(memory_bytes), "disable_layers": [self.missing]}


@pytest.fixture(params=["direct", "forkserver"])
async def spawn(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Session arguments for a directly started worker, then for a forked one."""
    if request.param == "direct":
        yield {}
    else:
        async with ForkServer() as server:
            yield {"forkserver": server}


async def _report(repl: REPLSession, code: str) -> Any:
    """Run ``code``, which prints one JSON value, and return that value."""
    result = await repl.run_cell(code)
    assert result.error is None, result.error
    return json.loads(result.stdout)


ATTEMPT = """
import json, os
def attempt(action):
    try:
        return {"ok": True, "value": action()}
    except OSError as err:
        return {"ok": False, "errno": err.errno, "type": type(err).__name__}
"""


async def test_layers_are_reported_once_ready(spawn: dict[str, Any]) -> None:
    """isolation_layers lists every layer the host supports, and is logged at DEBUG."""
    with capture_logs() as logs:
        async with REPLSession(**spawn) as repl:
            assert repl.isolation_layers == []
            await repl.wait_ready()
            assert repl.isolation_layers == expected_layers()
    isolated = [entry for entry in logs if entry["event"] == "rlm.worker_isolated"]
    assert [entry["layers"] for entry in isolated] == [expected_layers()]
    assert isolated[0]["log_level"] == "debug"


async def test_parent_secrets_are_out_of_reach(
    spawn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key in the parent's environment is not inherited, nor readable through /proc."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-isolation-test")
    async with REPLSession(**spawn) as repl:
        report = await _report(
            repl,
            ATTEMPT + f"parent = {os.getpid()}\n"
            "def scan():\n"
            "    found = 0\n"
            "    for entry in os.listdir('/proc'):\n"
            "        try:\n"
            "            with open(f'/proc/{entry}/environ', 'rb') as file:\n"
            "                found += b'OPENAI_API_KEY' in file.read()\n"
            "        except OSError:\n"
            "            pass\n"
            "    return found\n"
            "print(json.dumps({\n"
            "    'environ': [name for name in os.environ if 'OPENAI' in name],\n"
            "    'parent': attempt(lambda: open(f'/proc/{parent}/environ', 'rb').read().decode()),\n"
            "    'scan': attempt(scan),\n"
            "}))",
        )
    assert report["environ"] == []
    assert "sk-isolation-test" not in json.dumps(report)
    if ABI:
        assert report["parent"] == {"ok": False, "errno": 13, "type": "PermissionError"}
        assert report["scan"]["ok"] is False or report["scan"]["value"] == 0


async def test_tcp_to_a_loopback_listener_fails(
    spawn: dict[str, Any], listener: socket.socket
) -> None:
    """A connection to a listener this test started on 127.0.0.1 is refused."""
    port = listener.getsockname()[1]
    async with REPLSession(**spawn) as repl:
        report = await _report(
            repl,
            ATTEMPT + "import socket\n"
            f"print(json.dumps(attempt(lambda: socket.create_connection(('127.0.0.1', {port}), "
            "timeout=2).close())))",
        )
    assert report["ok"] is False
    assert not accepted(listener)


async def test_allow_network_reaches_the_listener(listener: socket.socket) -> None:
    """allow_network=True keeps the network: the same connection goes through."""
    port = listener.getsockname()[1]
    async with REPLSession(options=REPLOptions(allow_network=True)) as repl:
        result = await repl.run_cell(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()"
        )
        assert result.error is None, result.error
        assert "landlock_net" not in repl.isolation_layers
    assert accepted(listener)


@needs_landlock
async def test_files_outside_the_workdir_are_off_limits(
    spawn: dict[str, Any], tmp_path: Path
) -> None:
    """Writing outside the private directory fails; inside it works; readable_paths opens one."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("readable")
    granted = tmp_path / "granted.txt"
    granted.write_text("granted")
    async with REPLSession(options=REPLOptions(readable_paths=(str(granted),)), **spawn) as repl:
        report = await _report(
            repl,
            ATTEMPT + "def write(path):\n"
            "    with open(path, 'w') as file:\n"
            "        return file.write('x')\n"
            "print(json.dumps({\n"
            f"    'outside': attempt(lambda: write({str(outside / 'pwned')!r})),\n"
            f"    'read_outside': attempt(lambda: open({str(outside / 'notes.txt')!r}).read()),\n"
            "    'inside': attempt(lambda: write('kept.txt')),\n"
            f"    'granted': attempt(lambda: open({str(granted)!r}).read()),\n"
            f"    'write_granted': attempt(lambda: write({str(granted)!r})),\n"
            "}))",
        )
    assert report["outside"] == {"ok": False, "errno": 13, "type": "PermissionError"}
    assert report["read_outside"]["ok"] is False
    assert report["inside"] == {"ok": True, "value": 1}
    assert report["granted"] == {"ok": True, "value": "granted"}
    assert report["write_granted"]["ok"] is False
    assert not (outside / "pwned").exists()
    assert granted.read_text() == "granted"


async def test_the_parent_cannot_be_signalled(spawn: dict[str, Any]) -> None:
    """os.kill(parent, SIGTERM) from a cell fails; this process never receives it."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        async with REPLSession(**spawn) as repl:
            layers = await repl.run_cell("1")
            assert layers.error is None
            if not {"seccomp", "landlock_scope_signal"} & set(repl.isolation_layers):
                pytest.skip("needs seccomp or Landlock ABI 6")
            report = await _report(
                repl,
                ATTEMPT + f"print(json.dumps(attempt(lambda: os.kill({os.getpid()}, 15))))",
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert report == {"ok": False, "errno": 1, "type": "PermissionError"}
    assert received == []


async def test_a_bounded_fork_bomb_is_stopped(spawn: dict[str, Any]) -> None:
    """fork fails at once (EPERM); nothing is left running in the worker's process group."""
    async with REPLSession(**spawn) as repl:
        await repl.wait_ready()
        if "seccomp" not in repl.isolation_layers:
            pytest.skip("needs seccomp")
        report = await _report(
            repl,
            ATTEMPT + "import time\n"
            "def bomb():\n"
            "    forked = 0\n"
            "    for _ in range(20):\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(30)\n"
            "            os._exit(0)\n"
            "        forked += 1\n"
            "    return forked\n"
            "print(json.dumps(attempt(bomb)))",
        )
        assert report == {"ok": False, "errno": 1, "type": "PermissionError"}
        assert repl.pid is not None
        assert _group_members(repl.pid) == [repl.pid]


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(entry))
    return members


@pytest.mark.parametrize("missing", ["seccomp", "landlock", "netns"])
async def test_strict_refuses_a_missing_layer_without_restarting(
    spawn: dict[str, Any], missing: str
) -> None:
    """Strict mode on a host lacking a layer raises IsolationError; no restart, no code run."""
    async with MissingLayer(missing, options=REPLOptions(isolation="strict"), **spawn) as repl:
        pid = repl.pid
        with pytest.raises(IsolationError, match=missing) as caught:
            await repl.wait_ready()
        assert isinstance(caught.value.__cause__, WorkerStartError)
        with pytest.raises(IsolationError):
            await repl.run_cell("1")
        assert repl.restarts == 0
        assert repl.pid is None
        assert pid is not None


async def test_auto_degrades_and_reports_the_missing_layer() -> None:
    """Auto mode on a host lacking seccomp runs anyway and leaves seccomp out of the report."""
    async with MissingLayer("seccomp") as repl:
        assert (await repl.run_cell("1 + 1")).stdout == "2\n"
        assert repl.isolation_layers == [layer for layer in expected_layers() if layer != "seccomp"]


async def test_none_mode_warns_loudly_and_keeps_only_rlimits() -> None:
    """isolation="none" logs rlm.isolation_disabled at WARNING and applies rlimits only."""
    with capture_logs() as logs:
        async with REPLSession(options=REPLOptions(isolation="none")) as repl:
            await repl.wait_ready()
            assert repl.isolation_layers == ["rlimits"]
    warnings = [entry for entry in logs if entry["event"] == "rlm.isolation_disabled"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


def test_isolation_arguments_are_validated() -> None:
    """An unknown mode or a relative readable path fails at construction."""
    with pytest.raises(ValidationError, match="isolation"):
        REPLOptions(isolation="lenient")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="readable_paths"):
        REPLOptions(readable_paths=("relative/path",))
    with pytest.raises(ValidationError, match="readable_paths"):
        REPLOptions(readable_paths="/etc")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="forkserver"):
        REPLSession(forkserver=object())  # type: ignore[arg-type]
