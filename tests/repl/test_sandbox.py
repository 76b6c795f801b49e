"""The worker sandbox (``repl/_sandbox.py``) against real attacks, in real processes.

Each test starts a *parent* process (it inherits this test's environment, so a secret set
here sits in its ``/proc/<pid>/environ``) which starts the *harness* with a scrubbed
environment. The harness loads ``_sandbox.py`` by file path, as the worker does, applies a
policy and tries the attacks it is told to, reporting each as JSON: ``ok`` with a value, or
the errno that stopped it. A run in ``mode="none"`` is the control: there every attack works.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from repl_helpers import accepted

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only"),
]

SANDBOX_PY = Path(__file__).resolve().parents[2] / "src" / "rlm_sdk" / "repl" / "_sandbox.py"
SECRET_NAME = "SANDBOX_TEST_SECRET"
EVERY_LAYER = [
    "rlimits",
    "no_new_privs",
    "netns",
    "drop_caps",
    "landlock_fs:abi{abi}",
    "landlock_net",
    "landlock_scope_signal",
    "landlock_scope_abstract_unix",
    "seccomp",
]


def _load_sandbox() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_sandbox_under_test", SANDBOX_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sandbox = _load_sandbox()
HOST = sandbox.probe()
ABI = int(HOST["landlock_abi"])
FULL_SUPPORT = bool(HOST["seccomp"] and HOST["netns"] and ABI >= 6)
MODES = ["auto", "strict"] if FULL_SUPPORT else ["auto"]
needs_full = pytest.mark.skipif(not FULL_SUPPORT, reason="this host lacks a sandbox layer")

HARNESS = r"""
import ctypes, importlib.util, json, os, signal, socket, subprocess, sys, threading, time

def attack_environ(c):
    return [name for name in os.environ if c["secret_name"] in name]

def attack_parent_environ(c):
    with open(f"/proc/{os.getppid()}/environ", "rb") as file:
        return c["secret_name"].encode() in file.read()

def attack_proc_scan(c):
    found = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as file:
                    found += c["secret_name"].encode() in file.read()
            except OSError:
                pass
    return found

def attack_proc_listing(c):
    return len(os.listdir("/proc")) > 0

def attack_own_fds(c):
    return len(os.listdir("/proc/self/fd")) > 0

def attack_parent_cmdline(c):
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as file:
        return len(file.read())

def attack_tcp(c):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.settimeout(2)
        conn.connect(("127.0.0.1", c["port"]))
        conn.sendall(b"leak")
        return True

def attack_write_outside(c):
    with open(os.path.join(c["outside"], "pwned"), "w") as file:
        return file.write("pwned")

def attack_read_outside(c):
    with open(os.path.join(c["outside"], "secret.txt")) as file:
        return len(file.read())

def attack_read_shadow(c):
    with open("/etc/shadow") as file:
        return len(file.read())

def attack_write_inside(c):
    path = os.path.join(c["workdir"], "notes.txt")
    with open(path, "w") as file:
        file.write("kept")
    with open(path) as file:
        return [file.read(), os.stat(path).st_uid]

def attack_kill_parent(c):
    parent = os.getppid()
    os.kill(parent, signal.SIGKILL)
    time.sleep(0.3)
    return os.getppid() != parent

def attack_ptrace_parent(c):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, os.getppid(), 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
    libc.ptrace(17, os.getppid(), 0, 0)  # PTRACE_DETACH
    return True

def attack_fork_bomb(c):
    forked = 0
    for _ in range(20):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        forked += 1
    return forked

def attack_subprocess(c):
    return subprocess.run(["/bin/true"], check=False).returncode

def attack_threads(c):
    from concurrent.futures import ThreadPoolExecutor
    seen = []
    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(lambda x: x * x, range(100)))
    return [sorted(seen), total]

def attack_signal_self(c):
    os.kill(os.getpid(), 0)
    return True

def attack_segfault(c):
    ctypes.string_at(0)

def main():
    config = json.loads(sys.argv[1])
    spec = importlib.util.spec_from_file_location("_sandbox", config["sandbox"])
    sandbox = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sandbox)
    if config.get("thread_first"):
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
    if config.get("as_user"):
        os.setgroups([])
        os.setgid(config["as_user"])
        os.setuid(config["as_user"])
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, cleared by setuid
    started = time.perf_counter()
    try:
        layers = sandbox.apply_sandbox(config["policy"])
    except sandbox.SandboxUnavailable as err:
        print(json.dumps({"refused": err.layer, "message": str(err)}))
        return
    except sandbox.SandboxError as err:
        print(json.dumps({"error": str(err)}))
        return
    apply_ms = (time.perf_counter() - started) * 1000
    results = {}
    for name in config["attacks"]:
        try:
            results[name] = {"ok": True, "value": globals()["attack_" + name](config)}
        except OSError as err:
            results[name] = {"ok": False, "errno": err.errno, "error": repr(err)}
    print(json.dumps({"layers": layers, "apply_ms": apply_ms, "results": results}))

main()
"""

PARENT = r"""
import json, os, subprocess, sys
harness, config, workdir = sys.argv[1:4]
env = {"PATH": "/usr/bin:/bin", "TMPDIR": workdir}  # the allowlist a worker gets
proc = subprocess.run(
    [sys.executable, "-I", harness, config],
    env=env, cwd=workdir, capture_output=True, text=True, timeout=20,
)
with open("/proc/self/environ", "rb") as file:
    holds_secret = b"SANDBOX_TEST_SECRET=" in file.read()
print(json.dumps({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                  "parent_holds_secret": holds_secret}))
"""


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret in this process's environment, inherited by the parent, never by the harness."""
    monkeypatch.setenv(SECRET_NAME, "hunter2-" + uuid.uuid4().hex)


Run = Callable[..., dict[str, Any]]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """Start parent + harness with a policy and attacks; return the harness report."""
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    workdir = tmp_path / "work"
    outside = tmp_path / "outside"
    workdir.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    token = uuid.uuid4().hex

    def start(
        attacks: list[str],
        *,
        workdir: Path = workdir,
        port: int = 0,
        as_user: int | None = None,
        thread_first: bool = False,
        **policy: Any,
    ) -> dict[str, Any]:
        config = {
            "sandbox": str(SANDBOX_PY),
            "policy": {"workdir": str(workdir), "tmpdir": str(workdir), **policy},
            "attacks": attacks,
            "secret_name": SECRET_NAME,
            "workdir": str(workdir),
            "outside": str(outside),
            "port": port,
            "as_user": as_user,
            "thread_first": thread_first,
            "token": token,  # in argv, so strays are found by their command line
        }
        outer = subprocess.run(
            [sys.executable, "-I", "-c", PARENT, str(harness), json.dumps(config), str(workdir)],
            capture_output=True,
            text=True,
            timeout=30,
            start_new_session=True,  # a broken sandbox must not reach pytest's process group
        )
        assert outer.returncode == 0, outer.stderr
        report: dict[str, Any] = json.loads(outer.stdout)
        if report["returncode"] == 0:
            report.update(json.loads(report["stdout"]))
        return report

    yield start
    strays = _processes_with(token)
    for pid in strays:
        os.kill(pid, signal.SIGKILL)
    assert not strays, f"processes left running: {strays}"


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline:
                found.append(int(entry))
    return found


def _expected_layers(**policy: Any) -> list[str]:
    expected = ["rlimits", "no_new_privs"]
    if HOST["netns"] and not policy.get("allow_network"):
        expected.append("netns")
    expected.append("drop_caps")
    if ABI:
        expected.append(f"landlock_fs:abi{ABI}")
    if ABI >= 4 and not policy.get("allow_network"):
        expected.append("landlock_net")
    if ABI >= 6:
        expected += ["landlock_scope_signal", "landlock_scope_abstract_unix"]
    if HOST["seccomp"]:
        expected.append("seccomp")
    return expected


def _denied(report: dict[str, Any], attack: str) -> int:
    result = report["results"][attack]
    assert not result["ok"], f"{attack} was not stopped: {result}"
    errno_: int = result["errno"]
    return errno_


# ----------------------------------------------------------------------------------------------
# Policy and probe (in this process)
# ----------------------------------------------------------------------------------------------


def test_probe_describes_the_host() -> None:
    """probe() names every capability the sandbox checks, with bools and the Landlock ABI."""
    assert set(HOST) == {"rlimits", "no_new_privs", "netns", "drop_caps", "landlock_abi", "seccomp"}
    assert isinstance(HOST["landlock_abi"], int)
    assert all(isinstance(v, bool) for k, v in HOST.items() if k != "landlock_abi")


def test_policy_round_trips_and_rejects_malformed_input(tmp_path: Path) -> None:
    """A policy survives to_dict/from_dict; unknown keys, wrong types and relative paths raise."""
    policy = sandbox.SandboxPolicy(
        workdir=str(tmp_path), readable_paths=["/opt"], memory_bytes=1 << 30, mode="strict"
    )
    assert sandbox.SandboxPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))).to_dict() == (
        policy.to_dict()
    )
    assert policy.readable_paths == ("/opt",)
    with pytest.raises(AttributeError):
        policy.mode = "none"
    for bad in (
        {"workdir": str(tmp_path), "surprise": 1},
        {"workdir": "relative"},
        {"workdir": str(tmp_path), "mode": "lenient"},
        {"workdir": str(tmp_path), "allow_network": "yes"},
        {"workdir": str(tmp_path), "memory_bytes": True},
        {"workdir": str(tmp_path), "readable_paths": "/etc"},
        {"workdir": str(tmp_path), "disable_layers": ["rlimits"]},
        {},
    ):
        with pytest.raises(ValueError, match="sandbox policy"):
            sandbox.SandboxPolicy.from_dict(bad)


# ----------------------------------------------------------------------------------------------
# The control, the report, strict and degraded hosts
# ----------------------------------------------------------------------------------------------


def test_none_mode_applies_rlimits_only_and_every_attack_works(
    run: Run, listener: socket.socket
) -> None:
    """Control: without the sandbox the secret, the listener and outside files are all reachable."""
    report = run(
        ["parent_environ", "proc_scan", "tcp", "write_outside", "read_outside"],
        mode="none",
        port=listener.getsockname()[1],
    )
    assert report["parent_holds_secret"]
    assert report["layers"] == ["rlimits"]
    assert all(result["ok"] for result in report["results"].values()), report["results"]
    assert report["results"]["parent_environ"]["value"] is True
    assert report["results"]["proc_scan"]["value"] >= 1
    assert accepted(listener)


def test_auto_reports_every_layer_the_host_supports_in_a_few_ms(run: Run) -> None:
    """Auto mode applies every supported layer, in order, and takes a few milliseconds."""
    report = run(["signal_self"])
    assert report["layers"] == _expected_layers()
    assert report["results"]["signal_self"]["ok"]
    print(f"apply_sandbox: {report['apply_ms']:.2f} ms, layers {report['layers']}")
    assert report["apply_ms"] < 50


@needs_full
def test_this_host_supports_every_layer(run: Run) -> None:
    """On our hosts (and CI) strict mode applies the full list of layers."""
    report = run([], mode="strict")
    assert report["layers"] == [layer.format(abi=ABI) for layer in EVERY_LAYER]


@needs_full
@pytest.mark.parametrize(
    "missing", ["seccomp", "netns", "landlock", "landlock_net", "landlock_scope_signal"]
)
def test_strict_refuses_a_host_without_a_layer(run: Run, missing: str) -> None:
    """Strict mode raises SandboxUnavailable naming the layer a (simulated) host lacks."""
    report = run(["write_outside"], mode="strict", disable_layers=[missing])
    assert report["refused"].startswith(missing)
    assert missing in report["message"]
    assert "results" not in report  # no code ran


@needs_full
def test_strict_with_network_allowed_does_not_need_netns(run: Run) -> None:
    """A layer the policy does not want is not required: allow_network skips netns."""
    report = run([], mode="strict", allow_network=True, disable_layers=["netns"])
    assert report["layers"] == _expected_layers(allow_network=True)


def test_auto_degrades_and_reports_a_missing_layer(run: Run) -> None:
    """Auto mode on a host without seccomp applies the rest and leaves seccomp out of the report."""
    report = run(["write_outside"], disable_layers=["seccomp"])
    assert report["layers"] == [layer for layer in _expected_layers() if layer != "seccomp"]
    _denied(report, "write_outside")


def test_apply_refuses_a_multithreaded_process(run: Run) -> None:
    """Landlock, seccomp and netns bind one thread: applying with two threads is an error."""
    report = run([], thread_first=True)
    assert "single-threaded" in report["error"]


# ----------------------------------------------------------------------------------------------
# Attacks, under every mode the host supports
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_secrets_of_the_parent_are_unreadable(run: Run, mode: str) -> None:
    """The parent's environment is out of reach: not inherited, not via /proc/<pid>/environ."""
    report = run(["environ", "parent_environ", "proc_scan"], mode=mode)
    assert report["parent_holds_secret"]
    assert report["results"]["environ"] == {"ok": True, "value": []}
    if ABI:
        assert _denied(report, "parent_environ") == 13
        assert _denied(report, "proc_scan") == 13  # /proc itself is not granted


@pytest.mark.skipif(ABI == 0, reason="needs Landlock")
def test_landlock_ptrace_rule_guards_environ_even_when_proc_is_readable(run: Run) -> None:
    """With /proc granted, Landlock's ptrace rule still hides other processes' environ."""
    report = run(["proc_listing", "parent_environ", "proc_scan"], readable_paths=["/proc"])
    assert report["results"]["proc_listing"]["ok"]
    assert _denied(report, "parent_environ") == 13
    assert report["results"]["proc_scan"] == {"ok": True, "value": 0}


@pytest.mark.skipif(ABI == 0, reason="needs Landlock")
def test_granting_proc_self_opens_only_the_workers_own_entry(run: Run) -> None:
    """readable_paths=["/proc/self"] resolves to the worker's pid: its fds, not the parent's."""
    report = run(["own_fds", "parent_cmdline", "proc_scan"], readable_paths=["/proc/self"])
    assert report["results"]["own_fds"] == {"ok": True, "value": True}
    assert _denied(report, "parent_cmdline") == 13
    assert _denied(report, "proc_scan") == 13


@pytest.mark.parametrize(
    ("disabled", "needed", "errno_"),
    [
        pytest.param([], "seccomp", 13, id="seccomp-refuses-socket"),
        pytest.param(["seccomp"], "landlock_net", 13, id="landlock-refuses-connect"),
        pytest.param(["seccomp", "landlock"], "netns", 101, id="netns-has-no-route"),
    ],
)
def test_tcp_to_loopback_is_refused(
    run: Run, listener: socket.socket, disabled: list[str], needed: str, errno_: int
) -> None:
    """A TCP connection to a listener on 127.0.0.1 fails, by each layer on its own."""
    report = run(["tcp"], port=listener.getsockname()[1], disable_layers=disabled)
    if needed not in report["layers"]:
        pytest.skip(f"this host lacks {needed}")
    assert _denied(report, "tcp") == errno_  # EACCES, or ENETUNREACH with only `lo`, down
    assert not accepted(listener)


def test_allow_network_keeps_loopback_reachable(run: Run, listener: socket.socket) -> None:
    """allow_network leaves the network alone while every other layer still applies."""
    report = run(["tcp", "write_outside"], port=listener.getsockname()[1], allow_network=True)
    assert report["results"]["tcp"]["ok"]
    assert accepted(listener)
    if ABI:
        _denied(report, "write_outside")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.skipif(ABI == 0, reason="needs Landlock")
def test_files_outside_the_workdir_are_off_limits(run: Run, mode: str, tmp_path: Path) -> None:
    """Writes land in the workdir only; other files, /etc/shadow included, stay unreadable."""
    attacks = ["write_inside", "write_outside", "read_outside"]
    if os.path.exists("/etc/shadow"):
        attacks.append("read_shadow")
    report = run(attacks, mode=mode)
    assert report["results"]["write_inside"]["value"][0] == "kept"
    for attack in attacks[1:]:
        assert _denied(report, attack) == 13
    assert not (tmp_path / "outside" / "pwned").exists()


@pytest.mark.parametrize(
    "disabled",
    [pytest.param([], id="all-layers"), pytest.param(["seccomp"], id="landlock-scope-alone")],
)
def test_the_parent_cannot_be_signalled_or_traced(run: Run, disabled: list[str]) -> None:
    """os.kill(parent, SIGKILL) and ptrace(ATTACH, parent) fail; the parent lives on."""
    report = run(["kill_parent", "ptrace_parent", "signal_self"], disable_layers=disabled)
    if disabled and "landlock_scope_signal" not in report["layers"]:
        pytest.skip("needs Landlock ABI 6")
    assert _denied(report, "kill_parent") == 1
    assert _denied(report, "ptrace_parent") == 1
    assert report["results"]["signal_self"]["ok"]


@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_stops_at_the_first_fork(run: Run, mode: str) -> None:
    """fork and subprocess fail at once with EPERM, and no process is left behind."""
    report = run(["fork_bomb", "subprocess"], mode=mode)
    if "seccomp" not in report["layers"]:
        pytest.skip("needs seccomp")
    assert _denied(report, "fork_bomb") == 1
    assert _denied(report, "subprocess") in {1, 13}
    # the `run` fixture then checks that no process carrying this test's token is alive


def test_allow_subprocess_runs_programs_but_keeps_the_other_walls(run: Run) -> None:
    """allow_subprocess lets /bin/true run; the parent stays out of reach and files stay shut."""
    report = run(["subprocess", "kill_parent", "write_outside"], allow_subprocess=True)
    assert report["results"]["subprocess"] == {"ok": True, "value": 0}
    if ABI >= 6:
        assert _denied(report, "kill_parent") == 1
    if ABI:
        assert _denied(report, "write_outside") == 13


@pytest.mark.parametrize("mode", MODES)
def test_threads_still_work(run: Run, mode: str) -> None:
    """Threads and thread pools run normally inside the sandbox (clone3 falls back to clone)."""
    report = run(["threads"], mode=mode)
    assert report["results"]["threads"] == {"ok": True, "value": [list(range(8)), 328350]}


@pytest.mark.parametrize("mode", MODES)
def test_a_segfault_kills_only_the_sandboxed_process(run: Run, mode: str, tmp_path: Path) -> None:
    """ctypes.string_at(0) ends the harness with SIGSEGV and no core file; this process is fine."""
    report = run(["segfault"], mode=mode)
    assert report["returncode"] == -signal.SIGSEGV
    assert not any(name.startswith("core") for name in os.listdir(tmp_path / "work"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become an unprivileged user")
@pytest.mark.skipif(not HOST["netns"], reason="user namespaces are not available")
def test_an_unprivileged_worker_gets_its_netns_through_a_user_namespace(
    run: Run, listener: socket.socket
) -> None:
    """Without root the network namespace comes from a user namespace mapping only our ids."""
    nobody = 65534
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        os.chown(workdir, nobody, nobody)
        report = run(
            ["write_inside", "tcp"],
            workdir=workdir,
            port=listener.getsockname()[1],
            mode="strict" if FULL_SUPPORT else "auto",
            as_user=nobody,
        )
        assert "netns" in report.get("layers", ()), report
        assert report["results"]["write_inside"]["value"] == ["kept", nobody]
        _denied(report, "tcp")
        assert not accepted(listener)


@pytest.mark.skipif(not HOST["seccomp"], reason="needs libseccomp")
@pytest.mark.parametrize("allow_network", [False, True])
@pytest.mark.parametrize("allow_subprocess", [False, True])
def test_a_ready_made_filter_with_the_pid_written_in_is_the_filter_compiled_for_that_pid(
    allow_network: bool, allow_subprocess: bool
) -> None:
    """A worker writes its pid into a filter compiled before it was forked: the program it
    installs is exactly the one libseccomp would have compiled for it."""
    lib = sandbox._libseccomp()
    template = sandbox._filter_template(lib, allow_network, allow_subprocess)
    assert template is not None
    words, pid_at = template
    assert bool(pid_at) == (not allow_subprocess)  # only "signals to itself" names the pid
    program = array("I", words)
    for index in pid_at:
        program[index] = 4242
    direct = sandbox._compile_filter(lib, allow_network, allow_subprocess, 4242)
    assert program.tobytes() == direct


def test_prepare_loads_the_libraries_and_compiles_every_filter_once() -> None:
    """What the fork server does before forking: afterwards nothing is compiled or loaded."""
    sandbox.prepare()
    assert "c" in sandbox._LIBS
    assert len(sandbox._HOST_GRANTS) == 4
    if HOST["seccomp"]:
        assert len(sandbox._FILTERS) == 4 and None not in sandbox._FILTERS.values()
        compiled = sandbox._compile_filter
        try:
            sandbox._compile_filter = None  # type: ignore[assignment]
            sandbox._filter_template(sandbox._libseccomp(), False, False)
        finally:
            sandbox._compile_filter = compiled
