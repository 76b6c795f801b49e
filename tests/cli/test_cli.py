"""The rlm-sdk command line, run as a real process on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_sdk.cli import main
from rlm_sdk.testing import FakeChatServer

pytestmark = pytest.mark.integration

F = "```"


def _cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm_sdk.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _count_policy(body: dict[str, object]) -> str:
    """A scripted model over HTTP: count the context's lines in the REPL, then answer."""
    messages = body["messages"]
    assert isinstance(messages, list)
    if len(messages) == 2:
        return f"{F}repl\nprint('lines', len(context.splitlines()) if isinstance(context, str) else len(context))\n{F}"
    last = str(messages[-1]["content"])
    return "FINAL(" + last.split("lines", 1)[1].strip().split()[0] + ")"


def test_run_on_a_real_file_against_a_loopback_server(tmp_path: Path) -> None:
    """`rlm-sdk run FILE -q ...` answers through an OpenAI-compatible server on 127.0.0.1."""
    doc = tmp_path / "doc.txt"
    doc.write_text("one\ntwo\nthree\n")
    with FakeChatServer(_count_policy) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-local"}
        done = _cli("run", str(doc), "-q", "How many lines?", "--model", "openai:fake", env=env)
        as_json = _cli(
            "run", str(doc), "-q", "How many lines?", "--model", "openai:fake", "--json", env=env
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    result = json.loads(as_json.stdout)
    assert result["answer"] == "3"
    assert result["trajectory"]["turns"][0]["cells"][0]["stdout"] == "lines 3\n"


def test_run_reads_stdin_and_several_files(tmp_path: Path) -> None:
    """Stdin is one context; several files become a list."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x")
    b.write_text("y")
    with FakeChatServer(_count_policy) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "RLM_MODEL": "openai:fake"}
        piped = _cli("run", "-q", "count", env=env, stdin="l1\nl2\n")
        listed = _cli("run", str(a), str(b), "-q", "count", env=env)
    assert piped.stdout.strip() == "2", piped.stderr
    assert listed.stdout.strip() == "2", listed.stderr


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    """A provider that refuses the key gives one actionable line and exit code 1."""
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    with FakeChatServer() as server:
        server.respond_next(401, body=b'{"error": {"message": "bad key"}}')
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-wrong"}
        done = _cli("run", str(doc), "-q", "q", "--model", "openai:fake", env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "AuthenticationError" in lines[0] and "OPENAI_API_KEY" in lines[0]
    missing = _cli(
        "run",
        str(tmp_path / "nope.txt"),
        "-q",
        "q",
        "--model",
        "openai:x",
        env={"OPENAI_API_KEY": "k"},
    )
    assert (
        missing.returncode != 0
        and "cannot read" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_demo_runs_offline_and_says_so() -> None:
    """With no provider configured, `demo` uses the scripted double, says so, and finds the needle."""
    done = _cli("demo", "--lines", "20000", "--seed", "5")
    assert done.returncode == 0, done.stderr
    assert "OFFLINE DEMO: no language model is called" in done.stdout
    assert "-> correct" in done.stdout


def test_demo_verbose_renders_steps() -> None:
    """`demo --verbose` shows the reply, the code and the final answer."""
    done = _cli("demo", "--lines", "2000", "--verbose", env={"COLUMNS": "100"})
    assert done.returncode == 0, done.stderr
    assert "repl cell 1" in done.stderr and "final answer" in done.stderr


def test_batch_writes_jsonl_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`batch` writes one line per item; a second run skips what is already done."""
    items = tmp_path / "items.jsonl"
    items.write_text(
        "\n".join(
            json.dumps({"id": f"d{i}", "context": "a\n" * i, "query": "count"}) for i in range(1, 5)
        )
    )
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "d1", "answer": "1", "error": None}) + "\n")
    trace = tmp_path / "trace.jsonl"
    with FakeChatServer(_count_policy) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(
            [
                "batch",
                str(items),
                "-o",
                str(out),
                "--model",
                "openai:fake",
                "-c",
                "2",
                "--record",
                str(trace),
            ]
        )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["d1", "d2", "d3", "d4"]
    assert {r["id"]: r["answer"] for r in rows} == {"d1": "1", "d2": "2", "d3": "3", "d4": "4"}
    assert "4 items; 1 already done; running 3" in capsys.readouterr().err
    assert main(["view", str(trace)]) == 0
    assert "final answer" in capsys.readouterr().out


def test_view_rejects_a_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`view` on a file that is not a trajectory fails with one line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    assert main(["view", str(bad)]) == 1
    assert "not an rlm_sdk trajectory" in capsys.readouterr().err


def test_demo_with_only_a_key_runs_for_real_against_the_configured_server() -> None:
    """With just OPENAI_API_KEY (and a base URL) set, `demo` calls the model instead of the stand-in."""
    from rlm_sdk import CompletionRequest
    from rlm_sdk.testing import niah_policy

    with FakeChatServer(lambda body: niah_policy(CompletionRequest.model_validate(body))) as server:
        done = _cli(
            "demo",
            "--lines",
            "5000",
            env={"OPENAI_API_KEY": "sk-local", "OPENAI_BASE_URL": server.base_url},
        )
        assert len(server.requests) == 2
    assert done.returncode == 0, done.stderr
    assert "Running for real with openai:gpt-5-mini" in done.stdout
    assert "OFFLINE" not in done.stdout
