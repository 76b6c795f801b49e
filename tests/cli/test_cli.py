"""The rlm-sdk command line, run as a real process on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def _never_answers(body: dict[str, object]) -> dict[str, object]:
    """A scripted model that only ever writes a cell, and reports a cost of $0.01 per call."""
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"{F}repl\nprint(1)\n{F}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.01},
    }


def test_run_passes_max_tokens_isolation_and_records_the_trajectory(tmp_path: Path) -> None:
    """`--max-tokens` reaches every request, `--isolation none` the worker, and `--record`
    writes a JSONL file that loads back into the printed result."""
    from rlm_sdk import load_runs

    doc = tmp_path / "doc.txt"
    doc.write_text("one\ntwo\n")
    trace = tmp_path / "trace.jsonl"
    with FakeChatServer(_count_policy) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-local"}
        done = _cli(
            *("run", str(doc), "-q", "How many lines?", "--model", "openai:fake", "--json"),
            *("--max-tokens", "7", "--isolation", "none", "--record", str(trace)),
            env=env,
        )
        bodies = [r.json for r in server.requests]
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "2"
    assert [b["max_tokens"] for b in bodies] == [7, 7]
    assert result["isolation"] == ["rlimits"]
    (saved,) = load_runs(trace)
    assert saved.result is not None and saved.result.model_dump(mode="json") == result


def test_run_stops_at_the_timeout_and_says_why(tmp_path: Path) -> None:
    """`--timeout` bounds the run's wall time: it ends with stop reason `limit`, exit status 1,
    and one line on stderr naming the limit."""
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    sleeper = f"{F}repl\nimport time\ntime.sleep(60)\n{F}"
    with FakeChatServer(lambda body: sleeper) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-local"}
        started = time.monotonic()
        done = _cli(
            *("run", str(doc), "-q", "q", "--model", "openai:fake", "--json", "--timeout", "2"),
            env=env,
        )
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert json.loads(done.stdout)["stop_reason"] == "limit"
    assert done.stderr.strip().splitlines() == ["rlm-sdk: stopped: wall time of 2.0 s exceeded"]


def test_batch_items_stop_at_max_cost(tmp_path: Path) -> None:
    """`--max-cost` bounds each batch item's spend: an item that would go on for ever fails
    with the cost limit, and the batch exits 1."""
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "a", "context": "x", "query": "q"}) + "\n")
    out = tmp_path / "out.jsonl"
    with FakeChatServer(_never_answers) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-local"}
        done = _cli(
            *("batch", str(items), "-o", str(out), "--model", "openai:fake"),
            *("--max-cost", "0.015", "--max-iterations", "10"),
            env=env,
        )
        calls = len(server.requests)
    assert done.returncode == 1, done.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["error_type"] == "LimitExceededError" and "cost" in row["error"]
    assert calls == 2


def test_budget_options_refuse_values_that_are_not_positive() -> None:
    """`--max-tokens 0`, `--timeout -1` and `--max-cost nan` are usage errors, not tracebacks."""
    for option, value in (("--max-tokens", "0"), ("--timeout", "-1"), ("--max-cost", "nan")):
        done = _cli("run", "-q", "q", option, value)
        assert done.returncode == 2
        assert f"argument {option}: must be" in done.stderr and "Traceback" not in done.stderr


def _kind_policy(body: dict[str, object]) -> str:
    """A scripted model over HTTP (test double): print the context's type and length, then
    answer with what the REPL printed."""
    messages = body["messages"]
    assert isinstance(messages, list)
    if len(messages) == 2:
        return f"{F}repl\nprint('seen', type(context).__name__, len(context))\n{F}"
    last = str(messages[-1]["content"])
    return "FINAL(" + " ".join(last.split("seen", 1)[1].split()[:2]) + ")"


def test_run_on_a_folder_reads_its_files_from_disk(tmp_path: Path) -> None:
    """A folder argument becomes a corpus: the worker sees a collection of its files' documents,
    not a list of texts read by the CLI; a folder beside a file is a usage error."""
    folder = tmp_path / "dump"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (folder / name).write_text(f"{name}\n")
    with FakeChatServer(_kind_policy) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "RLM_MODEL": "openai:fake"}
        done = _cli("run", str(folder), "-q", "What is here?", env=env)
        mixed = _cli("run", str(folder), str(folder / "a.txt"), "-q", "x", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Documents 3"
    assert mixed.returncode != 0
    assert "one folder, or files" in mixed.stderr


def test_run_with_protocol_tools_offers_the_repl_as_a_tool(tmp_path: Path) -> None:
    """`--protocol tools` sends the REPL as a tool on every root request; the default does not."""
    doc = tmp_path / "doc.txt"
    doc.write_text("one\ntwo\n")
    with FakeChatServer(_count_policy) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "RLM_MODEL": "openai:fake"}
        tools = _cli("run", str(doc), "-q", "count", "--protocol", "tools", env=env)
        with_tools = [r.json for r in server.requests]
        server.requests.clear()
        fenced = _cli("run", str(doc), "-q", "count", env=env)
        without = [r.json for r in server.requests]
    assert tools.stdout.strip() == "2", tools.stderr
    assert fenced.stdout.strip() == "2", fenced.stderr
    assert with_tools and without
    assert all("repl" in [t["function"]["name"] for t in b["tools"]] for b in with_tools)
    assert all("tools" not in b for b in without)
