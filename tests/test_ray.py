"""rlm_sdk.ray on a real two-node Ray cluster on this machine, against FakeChatServer.

FakeChatServer is a TEST DOUBLE: an OpenAI-compatible HTTP server on 127.0.0.1 whose replies
come from ``niah_policy``, a scripted stand-in for a model (no language model is called).
Every item's query carries its id, so the double knows which item a request belongs to, can
fail or hold one item, and counts the requests in flight.

One cluster (a head and a second node, two logical CPUs each) serves the whole session.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")

import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from rlm_sdk import CompletionRequest, ConfigurationError, Limits
from rlm_sdk.cli import main
from rlm_sdk.ray import RLMConfig, arun_batch, read_results, run_batch
from rlm_sdk.testing import NIAH_QUERY, FakeChatServer, make_haystack, niah_policy

pytestmark = [
    pytest.mark.integration,
    # Ray's own modules warn about their internals (deprecations in its dependencies).
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

_WORKER_TITLE = b"MapWorker(FlatMap(RowRunner))"
_TAG = re.compile(r"\[item ([\w-]+)\]")
_HERMETIC = ("OPENAI_", "ANTHROPIC_", "RLM_", "OLLAMA_", "OTEL_")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head node and a worker node with two logical CPUs each, on 127.0.0.1, for the session.

    Two per node rather than one: a second driver's workers then start without waiting for
    the first driver's idle ones to go."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(_HERMETIC) or name.lower().endswith("_proxy"):
                mp.delenv(name)  # the raylets pass their environment on to every worker
        mp.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers use this interpreter as is
        # Ray turns a loopback address into the machine's own; this keeps every part on 127.0.0.1.
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # for the drivers the tests start
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # read at import: already done
        mp.chdir(tmp_path_factory.mktemp("ray-cwd"))
        # The REPL workers' directories go under the session's pytest directory: an actor the
        # tests SIGKILL takes its fork server with it (Ray kills a dying worker's children),
        # and nothing is left to remove them. Ray's own files stay where they were.
        mp.setenv("RAY_TMPDIR", tempfile.gettempdir())
        mp.setenv("TMPDIR", str(tmp_path_factory.mktemp("ray-tmp")))
        head = {"num_cpus": 2, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
        nodes = Cluster(initialize_head=True, head_node_args=head)
        nodes.add_node(num_cpus=2, node_ip_address="127.0.0.1")
        ray.init(address=nodes.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        try:
            yield nodes
        finally:
            ray.shutdown()
            nodes.shutdown()


class StandIn:
    """Replies for FakeChatServer (a TEST DOUBLE): ``niah_policy`` after ``latency`` seconds.

    Items whose id is in ``fail`` get a 500 on every request; ids for which ``hold`` returns
    True wait until ``release`` is set. ``spans`` keeps (id, start, end) of every request.
    """

    def __init__(
        self,
        latency: float = 0.2,
        *,
        fail: frozenset[str] = frozenset(),
        hold: Callable[[str], bool] = lambda _id: False,
    ) -> None:
        self.latency = latency
        self.fail = fail
        self.hold = hold
        self.release = threading.Event()
        self.now = self.peak = 0
        self.requests: Counter[str] = Counter()
        self.spans: list[tuple[str, float, float]] = []

    async def __call__(self, body: dict[str, Any]) -> str:
        found = _TAG.search(json.dumps(body["messages"][:2]))
        item = found.group(1) if found else "?"
        self.requests[item] += 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        start = time.monotonic()
        try:
            await anyio.sleep(self.latency)
            while self.hold(item) and not self.release.is_set():
                await anyio.sleep(0.05)
            if item in self.fail:
                raise RuntimeError(f"the stand-in always fails for {item}")
            return niah_policy(CompletionRequest.model_validate(body))
        finally:
            self.now -= 1
            self.spans.append((item, start, time.monotonic()))


def _items(ids: list[str], **extra: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Small haystacks, each with its id in the query; and the expected answer by id."""
    items, expected = [], {}
    for n, item_id in enumerate(ids):
        text, number = make_haystack(60, seed=n)
        items.append({"id": item_id, "context": text, "query": f"[item {item_id}] {NIAH_QUERY}"})
        expected[item_id] = str(number)
    return items, expected


def _config(server: FakeChatServer, **kw: Any) -> RLMConfig:
    return RLMConfig(model="fake-model", base_url=server.base_url, **kw)


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every live process: pid -> (parent pid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # a zombie has exited
            found[int(entry.name)] = (int(fields[1]), cmdline)
    return found


def _actor_pids() -> set[int]:
    return {pid for pid, (_, cmd) in _processes().items() if _WORKER_TITLE in cmd}


def _descendants(roots: set[int]) -> set[int]:
    procs = _processes()
    out: set[int] = set()
    for pid in procs:
        p = pid
        while p in procs and p not in roots and p > 1:
            p = procs[p][0]
        if p in roots and pid not in roots:
            out.add(pid)
    return out


def _wait_for_idle_cluster(timeout: float = 30.0) -> None:
    """Wait until the cluster's CPUs are free again (a restarted actor lets go late)."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)


def _wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while (alive := pids & set(_processes())) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


# --- without running a job ---------------------------------------------------------------


def test_config_refuses_credentials() -> None:
    """RLMConfig carries no secrets: keys in provider options or the URL are refused."""
    with pytest.raises(ValueError, match="credentials"):
        RLMConfig(model="m", provider_options={"api_key": 1})
    with pytest.raises(ValueError, match="credentials"):
        RLMConfig(model="m", base_url="http://user:pw@127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="name of an environment variable"):
        RLMConfig(model="m", api_key_env="sk-live-123")
    config = RLMConfig(model="m", api_key_env="MY_KEY", limits=Limits(max_iterations=3))
    assert RLMConfig.model_validate(config.model_dump(mode="json")) == config


def test_invalid_items_fail_before_anything_runs(cluster: Cluster, tmp_path: Path) -> None:
    """No id, a repeated id or an unknown option is a ConfigurationError up front."""
    config = RLMConfig(model="m", base_url="http://127.0.0.1:9/v1")
    cases = [
        ([{"context": "x"}], "needs an 'id'"),
        ([{"id": "a", "context": "x"}, {"id": "a", "context": "y"}], "unique"),
        ([{"id": "a", "context": "x", "options": {"colour": 1}}], "unknown item option"),
    ]
    for items, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            run_batch(items, config, tmp_path / "out")
    assert not (tmp_path / "out" / "results.jsonl").exists()


# --- jobs on the cluster --------------------------------------------------------------------


def test_configured_runs_in_flight_a_failing_row_and_item_options(
    cluster: Cluster, tmp_path: Path
) -> None:
    """One actor keeps exactly runs_per_actor (20, above Ray Data's default of 16) requests in
    flight; a row whose provider always fails becomes an error record and the rest finish;
    an item's options apply to its run only."""
    ids = [f"d{n}" for n in range(24)]
    items, expected = _items(ids)
    items[3]["options"] = {"max_iterations": 1}
    stand_in = StandIn(0.25, fail=frozenset({"d7"}))
    seen: list[int] = []
    with FakeChatServer(stand_in) as server:
        summary = run_batch(
            items,
            _config(server, provider_options={"max_retries": 1}),
            tmp_path / "out",
            actors=1,
            runs_per_actor=20,
            num_cpus_per_actor=0.5,
            on_progress=lambda p: seen.append(p.done),
        )
    from ray.data._internal.planner import plan_udf_map_op

    assert stand_in.peak == 20
    assert plan_udf_map_op.DEFAULT_ASYNC_ROW_UDF_MAX_CONCURRENCY == 16  # restored after the job
    assert (summary.done, summary.failed, summary.cancelled) == (24, 1, False)
    assert seen == list(range(1, 25))
    records = {r["id"]: r for r in read_results(tmp_path / "out")}
    assert set(records) == set(ids)
    poisoned = records.pop("d7")
    assert poisoned["error_type"] is not None and poisoned["answer"] is None
    assert stand_in.requests["d7"] == 2  # the first request and its one retry
    limited = records.pop("d3")
    assert limited["stop_reason"] == "max_iterations"  # the others end with FINAL(...)
    assert all(r["answer"] == expected[i] and r["error"] is None for i, r in records.items())
    assert {r["stop_reason"] for r in records.values()} == {"final_answer"}
    assert all(r["attempt"] == 1 and not r["retried"] for r in records.values())
    parquet = list((tmp_path / "out" / "parquet").glob("part-*.parquet"))
    assert parquet, "the records are in Parquet too"


_DRIVER = """
import json, sys
import ray
from rlm_sdk.ray import RLMConfig, run_batch
ray.init(address=sys.argv[4], _node_ip_address="127.0.0.1", log_to_driver=False)
items = json.load(open(sys.argv[1]))
config = RLMConfig(model="fake-model", base_url=sys.argv[2])
run_batch(items, config, sys.argv[3], actors=1, runs_per_actor=3, num_cpus_per_actor=0.5)
"""


@pytest.mark.timeout(120)  # two jobs, each starting its actors, and a second driver process
def test_a_killed_job_resumes_from_the_cli(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver SIGKILLed mid-job leaves its finished records; `rlm-sdk batch --engine ray`
    then runs only the rest (a torn last line does not spoil the next record)."""
    # Two blocks of six rows: the first all fast, the second all held until the kill. The one
    # actor is handed the second block only once the first is done; with both queued on it,
    # Ray sometimes ran the held block first and the fast one waited behind it until the end.
    ids = [f"fast-{n}" for n in range(6)] + [f"slow-{n}" for n in range(6)]
    items, expected = _items(ids)
    source = tmp_path / "items.json"
    source.write_text(json.dumps(items))
    out = tmp_path / "out"
    log = tmp_path / "driver.log"
    _wait_for_idle_cluster()
    stand_in = StandIn(0.1, hold=lambda item: item.startswith("slow"))
    with FakeChatServer(stand_in) as server:
        env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
        driver = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DRIVER,
                str(source),
                server.base_url,
                str(out),
                cluster.address,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = {r["id"] for r in read_results(out)} if out.exists() else set()
                if done >= {i for i in ids if i.startswith("fast")}:
                    break
                assert driver.poll() is None, "the first driver ended on its own"
                time.sleep(0.1)
            else:
                tail = log.read_text()[-3000:]
                pytest.fail(
                    f"the first job wrote only {sorted(done)}; the model saw requests for "
                    f"{dict(stand_in.requests)}; its log ends:\n{tail}"
                )
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        with (out / "results.jsonl").open("a") as f:
            f.write('{"id": "slow-0", "answer": "torn')  # a write cut off by the kill
        before = Counter(stand_in.requests)
        stand_in.release.set()
        lines = (tmp_path / "items.jsonl").open("w")
        with lines:
            lines.writelines(json.dumps(item) + "\n" for item in items)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(
            [
                *("batch", str(tmp_path / "items.jsonl"), "-o", str(out), "--engine", "ray"),
                *("--actors", "1", "-c", "4", "--model", "fake-model"),
            ]
        )
        after = stand_in.requests - before
    assert code == 0
    assert not any(item.startswith("fast") for item in after), after
    records = read_results(out)
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert all(r["answer"] == expected[r["id"]] and r["error"] is None for r in records)


def test_a_killed_actor_is_restarted_and_its_rows_marked_retried(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Two actors, one per node; one is SIGKILLed mid-job. Ray restarts it and reruns its
    rows: every id is written once, and the rerun rows carry attempt 2 and retried."""
    ids = [f"k{n}" for n in range(24)]
    items, expected = _items(ids)
    killed: list[int] = []
    # The last row of each of the first two blocks is held until the kill, so the actor that
    # wrote the first records is surely still in its block when it is killed.
    stand_in = StandIn(0.4, hold=lambda item: item in ("k3", "k7"))

    def kill_one(progress: Any) -> None:
        if progress.done == 2 and not killed:
            done = read_results(tmp_path / "out")
            pid = int(done[-1]["worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            stand_in.release.set()

    with FakeChatServer(stand_in) as server:
        summary = run_batch(
            items,
            _config(server),
            tmp_path / "out",
            actors=2,
            runs_per_actor=4,
            rows_per_block=4,
            num_cpus_per_actor=2,  # one per node: each node has two CPUs
            on_progress=kill_one,
        )
    lines = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(ids)  # each id once, no duplicate
    assert all(r["answer"] == expected[r["id"]] for r in lines)
    retried = [r for r in lines if r["retried"]]
    assert killed and retried and all(r["attempt"] == 2 for r in retried)
    assert summary.retried == len(retried)
    nodes = {r["worker"].split(":")[0] for r in lines}
    assert len(nodes) == 2, "the actors ran on both nodes"
    assert killed[0] not in {int(r["worker"].rsplit(":", 1)[1]) for r in retried}
    _wait_for_idle_cluster()


def test_cancel_stops_the_actors_and_every_repl_worker(cluster: Cluster, tmp_path: Path) -> None:
    """Cancelling arun_batch while runs wait on the model leaves no actor, fork server or
    REPL worker behind, and keeps the records written before the cancel."""
    ids = [f"c{n}" for n in range(12)]
    items, _ = _items(ids)
    stand_in = StandIn(0.1, hold=lambda item: item not in ("c0", "c1"))
    seen: dict[str, set[int]] = {}

    async def scenario(url: str) -> Any:
        async with anyio.create_task_group() as tg:

            async def job() -> None:
                await arun_batch(
                    items,
                    RLMConfig(model="fake-model", base_url=url),
                    tmp_path / "out",
                    actors=1,
                    runs_per_actor=6,
                    num_cpus_per_actor=0.5,
                    grace=5.0,
                )

            tg.start_soon(job)
            with anyio.fail_after(40):
                while stand_in.now < 4:  # held runs: each has a REPL worker
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            seen["actors"] = _actor_pids()
            seen["repl"] = _descendants(seen["actors"])
            started = time.monotonic()
            tg.cancel_scope.cancel()
        return time.monotonic() - started

    with FakeChatServer(stand_in) as server:
        took = anyio.run(scenario, server.base_url)
    assert seen["actors"] and seen["repl"], "the runs had an actor and REPL workers"
    assert took < 10
    assert not _wait_gone(seen["actors"] | seen["repl"])
    assert not _actor_pids()
    records = read_results(tmp_path / "out")
    assert {r["id"] for r in records} <= {"c0", "c1"}
    assert all(r["error_type"] is None for r in records)
