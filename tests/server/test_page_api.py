"""The page's API (runs, SSE, stop, trajectories), the host checks and the ``serve`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from rlm_sdk import RecursiveLM
from rlm_sdk._recorder import JSONLRecorder
from rlm_sdk.server import ServerConfig, add_serve_parser, loopback_hosts, serve
from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import (
    ROOT,
    ROOT_MARK,
    SUB,
    LiveServer,
    nested_policy,
    repl_workers,
    sleeping_policy,
    two_turn_policy,
)

StartServer = Callable[..., LiveServer]


async def read_sse(
    http: httpx.AsyncClient, url: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every event of a run's stream, and the ``end`` summary."""
    events: list[dict[str, Any]] = []
    kind = "message"
    async with http.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                if kind == "end":
                    return events, data
                events.append(data)
                kind = "message"
    raise AssertionError("the stream ended without an end event")


def parse_serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


@pytest.mark.integration
async def test_run_streams_events_and_replays_them_to_late_subscribers(
    live_server: StartServer,
) -> None:
    """A run started with a raw-body context streams its events; a late subscriber gets the backlog."""
    server = live_server(ScriptedProvider(nested_policy))
    params = {
        "query": f"{ROOT_MARK} what colour?",
        "model": ROOT,
        "sub_model": SUB,
        "max_depth": "2",
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        started = await http.post("/api/runs", params=params, content=b"some context")
        assert started.status_code == 201
        run_id = started.json()["id"]
        live, end = await read_sse(http, f"/api/runs/{run_id}/events")
        replay, _ = await read_sse(http, f"/api/runs/{run_id}/events")
        status = (await http.get(f"/api/runs/{run_id}")).json()
    assert end["status"] == "finished" and status["answer"] == "blue"
    assert live == replay
    types = [e["type"] for e in live]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert "child_run_started" in types
    assert {e["depth"] for e in live} == {0, 1}
    assert [e["seq"] for e in live] == sorted(e["seq"] for e in live)


@pytest.mark.integration
async def test_stop_cancels_the_run_on_the_server(live_server: StartServer) -> None:
    """Stop cancels a run stuck in a sleeping cell: the stream ends cancelled and its REPL worker is gone."""
    server = live_server(ScriptedProvider(sleeping_policy))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        run_id = (await http.post("/api/runs", content=b"ctx")).json()["id"]
        with anyio.fail_after(15):
            while True:
                backlog = (await http.get(f"/api/runs/{run_id}")).json()
                if backlog["events"] >= 5:  # the cell has started
                    break
                await anyio.sleep(0.05)
        workers = repl_workers()
        stopped = await http.post(f"/api/runs/{run_id}/stop")
        assert stopped.status_code == 200
        with anyio.fail_after(10):
            _events, end = await read_sse(http, f"/api/runs/{run_id}/events")
            while repl_workers() & workers:
                await anyio.sleep(0.05)
    assert end["status"] == "cancelled"
    assert workers or not Path("/proc/self/task").exists()  # the sleeping cell's worker existed
    assert len(server.provider.requests) == 1


@pytest.mark.integration
async def test_saved_trajectory_opens_as_a_finished_run(
    live_server: StartServer, tmp_path: Path
) -> None:
    """A JSONL trajectory uploads, validates, and replays with the same events; garbage is a 400."""
    path = tmp_path / "run.jsonl"
    with JSONLRecorder(path) as recorder:
        async with RecursiveLM(ROOT, provider=ScriptedProvider(two_turn_policy)) as rlm:
            await rlm.acomplete("context", "q", on_event=recorder)
    server = live_server(ScriptedProvider(two_turn_policy))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        opened = await http.post(
            "/api/trajectories", params={"name": "run.jsonl"}, content=path.read_bytes()
        )
        assert opened.status_code == 201, opened.text
        events, end = await read_sse(http, opened.json()["events_url"])
        bad = await http.post("/api/trajectories", params={"name": "notes.txt"}, content=b"hello\n")
    lines = path.read_text().splitlines()[1:]
    assert end["status"] == "saved"
    assert [e["seq"] for e in events] == [json.loads(line)["seq"] for line in lines]
    assert bad.status_code == 400
    assert "notes.txt is not an rlm_sdk trajectory file" in bad.json()["error"]["message"]


@pytest.mark.integration
async def test_config_and_page_are_served(live_server: StartServer) -> None:
    """The page, its assets and its config come from the server; no model name is in the page."""
    server = live_server(ScriptedProvider(two_turn_policy), default_max_iterations=7)
    async with httpx.AsyncClient(base_url=server.url) as http:
        page = await http.get("/")
        script = await http.get("/static/app.js")
        config = (await http.get("/api/config")).json()
        missing = await http.get("/api/runs/nope")
    assert page.status_code == 200 and "<title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200 and ROOT not in page.text + script.text
    assert config["models"] == [ROOT, SUB] and config["default_max_iterations"] == 7
    assert config["offline"] is False
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"


@pytest.mark.integration
async def test_foreign_host_and_origin_are_refused(live_server: StartServer) -> None:
    """Host headers other than loopback with the port get 400; a cross-site POST gets 403."""
    server = live_server(ScriptedProvider(two_turn_policy))
    async with httpx.AsyncClient(base_url=server.url) as http:
        rebound = await http.get("/api/config", headers={"host": f"evil.example:{server.port}"})
        wrong_port = await http.get("/api/config", headers={"host": "127.0.0.1:1"})
        localhost = await http.get("/api/config", headers={"host": f"localhost:{server.port}"})
        ipv6 = await http.get("/api/config", headers={"host": f"[::1]:{server.port}"})
        cross = await http.post(
            "/api/runs", content=b"x", headers={"origin": "http://evil.example"}
        )
        same = await http.get("/api/config", headers={"origin": "http://evil.example"})
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "invalid_host"
    assert wrong_port.status_code == 400
    assert localhost.status_code == 200 and ipv6.status_code == 200
    assert cross.status_code == 403
    assert same.status_code == 200  # reads are harmless: no CORS headers, the browser hides them
    assert server.provider.requests == []


def test_serve_arguments_have_the_documented_defaults() -> None:
    """``serve`` binds to 127.0.0.1:8000 by default and takes the listed options."""
    args = parse_serve()
    assert (args.host, args.port, args.models, args.offline) == ("127.0.0.1", 8000, None, False)
    args = parse_serve("--models", "a:b,c:d", "--max-body-mb", "5", "--offline", "--port", "0")
    assert (args.models, args.max_body_mb, args.offline, args.port) == ("a:b,c:d", 5.0, True, 0)


def test_serve_without_the_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without starlette/uvicorn, ``serve`` fails with one line naming ``pip install 'rlm-sdk[server]'``."""
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert serve(parse_serve("--offline")) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "pip install 'rlm-sdk[server]'" in err


def test_serve_without_models_says_how_to_name_them() -> None:
    """Not offline and no models given: a one-line error naming --models, the env var and --offline."""
    with pytest.raises(SystemExit, match=r"--models .*RLM_SERVE_MODELS.*--offline"):
        serve(parse_serve("--port", "0"))


def test_config_bounds_and_loopback_hosts() -> None:
    """Loopback hosts carry the port; the config refuses defaults above its caps."""
    assert loopback_hosts(8123) == ["localhost:8123", "127.0.0.1:8123", "[::1]:8123"]
    assert "localhost" in loopback_hosts(80)
    with pytest.raises(ValueError, match="above max_iterations_cap"):
        ServerConfig(models=["m"], default_max_iterations=10, max_iterations_cap=5)
    with pytest.raises(ValueError, match="at least one model"):
        ServerConfig(models=[" "])


@pytest.mark.integration
async def test_default_config_accepts_only_loopback_names(live_server: StartServer) -> None:
    """Without ``allowed_hosts`` the app answers loopback names on any port; ``["*"]`` answers all."""
    strict = live_server(ScriptedProvider(two_turn_policy), allowed_hosts=None)
    open_ = live_server(ScriptedProvider(two_turn_policy), allowed_hosts=["*"])
    async with httpx.AsyncClient() as http:
        loopback = await http.get(f"{strict.url}/api/config", headers={"host": "localhost:1234"})
        rebound = await http.get(f"{strict.url}/api/config", headers={"host": "evil.example"})
        anyhost = await http.get(f"{open_.url}/api/config", headers={"host": "evil.example"})
        cross = await http.post(
            f"{open_.url}/api/runs", content=b"x", headers={"origin": "http://other.example"}
        )
    assert (loopback.status_code, rebound.status_code) == (200, 400)
    assert anyhost.status_code == 200
    assert cross.status_code == 403
