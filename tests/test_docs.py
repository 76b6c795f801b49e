"""The documentation stays true: its examples run, its references match the code, it builds.

How the examples run, offline:

* Every ```python block in ``docs/`` runs, page by page, in one namespace per page (so a
  later block may use names from an earlier one), in this process. Top-level ``test_*``
  functions a page defines are then called. A block preceded by
  ``<!-- docs-test: skip (reason) -->`` is only compiled; keep those few.
* Every file in ``examples/`` runs as a script in a child process.
* Both see ``OPENAI_BASE_URL`` pointing at a :class:`FakeChatServer` on 127.0.0.1 (and a
  dummy key, ``RLM_MODEL``, ``RLM_SUB_MODEL``, ``OLLAMA_BASE_URL``), so the model strings the
  docs use, such as ``openai:gpt-5-mini``, reach a stand-in. The stand-ins below are
  TEST/DEMO doubles, not models: each writes the code a capable model would write for the
  page's task and answers only from what the REPL printed, so an example's answer is found
  by the run and never written into the example.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

import rlm_sdk
from rlm_sdk import otel, testing
from rlm_sdk._recorder import SCHEMA, SCHEMA_VERSION
from rlm_sdk.testing import FakeChatServer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
F = "```"
MAX_SKIPPED_BLOCKS = 4

# --------------------------------------------------------------------------------------------
# Reading the docs
# --------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*$")
_SKIP = re.compile(r"^\s*<!-- docs-test: skip \((?P<reason>[^)]+)\) -->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int
    lang: str
    code: str
    skip: str | None


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with its language and skip marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(DOCS).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, indent = m.group("fence"), m.group("indent")
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = _SKIP.match(previous)
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : j])
        blocks.append(
            Block(
                page=page,
                line=i + 1,
                lang=m.group("lang").lower(),
                code=textwrap.dedent(body),
                skip=marker.group("reason") if marker else None,
            )
        )
        i = j + 1
    return blocks


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def python_blocks() -> list[Block]:
    return [b for p in doc_pages() for b in read_blocks(p) if b.lang in ("python", "py")]


PAGES_WITH_CODE = sorted({b.page for b in python_blocks() if b.skip is None})


def load_hooks() -> ModuleType:
    """The docs' MkDocs hooks module (docs/_hooks.py), imported by path."""
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# The stand-in models (TEST/DEMO doubles): FakeChatServer reply functions
# --------------------------------------------------------------------------------------------

_NEEDLE = re.compile(r"magic number is (\d+)", re.IGNORECASE)

_SEARCH = f"""Let me search the context for the phrase first.
{F}repl
text = context if isinstance(context, str) else "\\n".join(map(str, context))
hits = [line for line in text.splitlines() if "magic number" in line.lower()]
print(f"{{len(hits)}} matching lines")
for line in hits[:5]:
    print(line)
{F}"""

_SPLIT_TO_CHILDREN = f"""The context has parts; each child run searches one.
{F}repl
parts = context.split("\\n\\n")
answers = rlm_query_batched([f"Find the magic number in this text, if there is one.\\n\\n{{p}}" for p in parts])
for i, a in enumerate(answers):
    print(i, a)
{F}"""

_TIERS = f"""I will look up each order's customer with the tool and count the tiers.
{F}repl
import collections, re
ids = re.findall(r"customer (C-\\d+)", "\\n".join(context))
tiers = collections.Counter(customer_tier(i) for i in ids)
print(tiers.most_common())
{F}"""


def _role(message: dict[str, Any]) -> str:
    return str(message.get("role"))


def _repl_output(messages: list[dict[str, Any]]) -> str:
    """What the REPL printed so far: the user messages after the first one."""
    return "\n".join(str(m["content"]) for m in messages[2:] if _role(m) == "user")


def _plain_sub_call(prompt: str) -> str:
    """A sub-model asked one prompt: quote the needle's line if the prompt holds one."""
    m = _NEEDLE.search(prompt)
    return m.group(0) if m else "NONE"


def search_model(body: dict[str, Any]) -> str:
    """Search ``context`` for "magic number", then answer from what the REPL printed."""
    messages = body["messages"]
    if _role(messages[0]) != "system":
        return _plain_sub_call(str(messages[-1]["content"]))
    m = _NEEDLE.search(_repl_output(messages))
    if m:
        return f"The REPL printed the line.\nFINAL({m.group(1)})"
    if any(_role(x) == "assistant" for x in messages):
        return "The search found nothing.\nFINAL(no magic number found)"
    return _SEARCH


def depth_model(body: dict[str, Any]) -> str:
    """The root hands each part to a child run; children search their part."""
    messages = body["messages"]
    if _role(messages[0]) != "system" or "No separate query" in str(messages[1]["content"]):
        return search_model(body)  # a plain sub-call, or a child run
    printed = re.search(r"^\d+ (\d+)$", _repl_output(messages), re.MULTILINE)
    if printed:
        return f"One child found it.\nFINAL({printed.group(1)})"
    if any(_role(x) == "assistant" for x in messages):
        return "FINAL(no magic number found)"
    return _SPLIT_TO_CHILDREN


def tools_model(body: dict[str, Any]) -> str:
    """Look each customer up with the ``customer_tier`` tool, then name the top tier."""
    messages = body["messages"]
    printed = re.search(r"\[\('(\w+)', \d+\)", _repl_output(messages))
    if printed:
        return f"FINAL({printed.group(1)})"
    return _TIERS


def session_model(body: dict[str, Any]) -> str:
    """A conversation: search the context the latest query brought (`context`, `context_N`),
    keeping every hit in the REPL list `found`; a query without a new context counts `found`."""
    messages = body["messages"]
    if _role(messages[0]) != "system":
        return _plain_sub_call(str(messages[-1]["content"]))
    asked = max(
        i
        for i, m in enumerate(messages)
        if _role(m) == "user" and str(m["content"]).startswith(("The query:", "A follow-up query"))
    )
    after = "\n".join(str(m["content"]) for m in messages[asked + 1 :] if _role(m) == "user")
    printed = _NEEDLE.search(after) or re.search(r"found so far: (\d+)", after)
    if printed:
        return f"FINAL({printed.group(1)})"
    if any(_role(m) == "assistant" for m in messages[asked:]):
        return "FINAL(nothing found)"
    query = str(messages[asked]["content"])
    named = re.search(r"new context, `(context_\d+)`", query)
    name = named.group(1) if named else "context" if query.startswith("The query:") else None
    if name is None:
        return f'{F}repl\nprint("found so far:", len(found))\n{F}'
    return (
        f"{F}repl\nhits = [l for l in {name}.splitlines() if 'magic number' in l.lower()]\n"
        f"found = [*globals().get('found', []), *hits]\nprint(hits[0] if hits else 'none')\n{F}"
    )


_LOCATE = f"""I will find the line that holds the magic number, and its line number.
{F}repl
hits = [(n, line) for n, line in enumerate(context.splitlines(), start=1) if "magic number" in line.lower()]
print(hits[:3])
{F}"""

_BUILD = f"""The output shows it; I build the value the schema asks for.
{F}repl
line_no, text = hits[0]
finding = {{"number": int(text.rsplit(" ", 1)[1]), "line": line_no}}
FINAL_VAR(finding)
{F}"""


def typed_model(body: dict[str, Any]) -> str:
    """A typed answer: locate the needle's line, then answer with a dict of the number and the
    line number (the schema the page's types share); untyped runs search as usual."""
    messages = body["messages"]
    if _role(messages[0]) != "system" or "JSON Schema" not in str(messages[1]["content"]):
        return search_model(body)
    return _BUILD if any(_role(m) == "assistant" for m in messages) else _LOCATE


ReplyFunction = Callable[[dict[str, Any]], str]


def eval_model(body: dict[str, Any]) -> str:
    """The eval's oracle double (rlm_sdk.eval.oracle_policy) behind the loopback server."""
    from rlm_sdk.eval import oracle_policy
    from rlm_sdk.providers import ChatMessage, CompletionRequest

    messages = [
        ChatMessage(role=m["role"], content=m.get("content") or "") for m in body["messages"]
    ]
    return oracle_policy()(CompletionRequest(model=body["model"], messages=messages))


PAGE_MODELS: dict[str, ReplyFunction] = {
    "concepts/depth.md": depth_model,
    "guides/tools.md": tools_model,
    "guides/eval.md": eval_model,
    "guides/typed-answers.md": typed_model,
    "guides/sessions.md": session_model,
}
EXAMPLE_MODELS: dict[str, ReplyFunction] = {"tools.py": tools_model}


@contextlib.contextmanager
def stand_in(reply: ReplyFunction, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A FakeChatServer playing ``reply``, and the environment that points the SDK at it."""
    with FakeChatServer(reply) as server:
        env = {
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-docs-test-not-a-real-key",
            "OLLAMA_BASE_URL": server.base_url,
            "RLM_MODEL": "openai:gpt-5-mini",
            "RLM_SUB_MODEL": "openai:gpt-5-nano",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield env


SERVE_MODELS = "openai:gpt-5-mini,openai:gpt-5-nano"


@contextlib.contextmanager
def rlm_server(env: dict[str, str]) -> Iterator[str]:
    """``rlm-sdk serve`` in a child process on a free loopback port; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_sdk.cli", "serve", "--port", "0", "--models", SERVE_MODELS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", first)
        assert m, (
            f"rlm-sdk serve did not start: {first!r} {proc.stderr.read() if proc.stderr else ''}"
        )
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# --------------------------------------------------------------------------------------------
# Running the examples
# --------------------------------------------------------------------------------------------


def _run_page(page: str, substitutions: dict[str, str]) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    for block in python_blocks():
        if block.page != page or block.skip is not None:
            continue
        code = block.code
        for old, new in substitutions.items():
            code = code.replace(old, new)
        exec(compile(code, f"docs/{page}:{block.line}", "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(value):
            if inspect.iscoroutinefunction(value):
                anyio.run(value)
            else:
                value()


PAGE_OUTPUT: dict[str, str] = {
    # Something each page's examples print when the run really found the answer.
    "index.md": "4821",
    "quickstart.md": "answer: 4821",
    "concepts/depth.md": "rlm_query -> '6174'",
    "concepts/isolation.md": "['rlimits'",
    "concepts/repl.md": "3 final_var",
    "guides/batch.md": "1 globex 22",
    "guides/budgets.md": "stopped: model_calls",
    "guides/cache.md": "second run: answer 4, model calls 2, cache hits 4",
    "guides/local-models.md": "answer: 4242 | stop reason: final_answer",
    "guides/corpora.md": "answer: 4821",
    "guides/eval.md": "aggregate rlm: 100% (n=6)",
    "guides/providers.md": "64 64 cache hits: 2",
    "guides/server.md": "2718",
    "guides/sessions.md": "2023: 1618 | 2024: 2718 | found: 2",
    "guides/testing.md": "",  # its examples are tests with their own asserts
    "guides/tools.md": "gold",
    "guides/tracing.md": "  turn\n    chat gpt-5-mini",
    "guides/typed-answers.md": "number=4821 line=31338 | line 31338 | 4821 at 31338",
    "guides/watching.md": "answer: 12",
    "reference/trajectory-format.md": "8 finished",
}


@pytest.mark.integration
@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_docs_page_examples_run(
    page: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every Python block of a docs page runs offline against a stand-in model."""
    from rlm_sdk.providers import _registry

    registry = _registry.DEFAULT_REGISTRY  # a page's registrations end with the page
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    with (
        stand_in(PAGE_MODELS.get(page, search_model), monkeypatch) as env,
        contextlib.ExitStack() as stack,
    ):
        substitutions: dict[str, str] = {}
        if page == "guides/server.md":  # the page's client talks to a real `rlm-sdk serve`
            substitutions["http://127.0.0.1:8000"] = stack.enter_context(rlm_server(env))
        _run_page(page, substitutions)
    out = capsys.readouterr().out
    assert PAGE_OUTPUT[page] in out, out


EXAMPLE_ARGS: dict[str, list[list[str]]] = {
    # niah.py runs twice: on its offline scripted double, and on RLM_MODEL over HTTP.
    "niah.py": [["--lines", "20000", "--offline"], ["--lines", "20000"]],
}


def _example_runs() -> list[Any]:
    names = sorted(p.name for p in EXAMPLES.glob("*.py"))
    return [
        pytest.param(name, args, id=" ".join([name, *args]))
        for name in names
        for args in EXAMPLE_ARGS.get(name, [[]])
    ]


EXAMPLE_INPUTS: dict[str, Callable[[Path], list[str]]] = {}


def _input(name: str) -> Callable[[Callable[[Path], list[str]]], Callable[[Path], list[str]]]:
    def register(make: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        EXAMPLE_INPUTS[name] = make
        return make

    return register


def _haystack(path: Path, number: int, lines: int = 5_000) -> Path:
    body = [f"{i:05d} an ordinary line" for i in range(lines)]
    body[lines // 2] = f"The magic number is {number}"
    path.write_text("\n".join(body), encoding="utf-8")
    return path


@_input("batch_folder.py")
def _batch_folder_args(tmp: Path) -> list[str]:
    folder = tmp / "docs"
    folder.mkdir()
    for n in (3, 5, 8):
        _haystack(folder / f"doc{n}.txt", n * 111)
    return [str(folder), "-q", "What is the magic number?", "-o", str(tmp / "answers.jsonl")]


@_input("stream_events.py")
def _stream_args(tmp: Path) -> list[str]:
    return [str(_haystack(tmp / "log.txt", 4242)), "-q", "What is the magic number?"]


@_input("budgets.py")
def _budget_args(tmp: Path) -> list[str]:
    return [str(_haystack(tmp / "log.txt", 99)), "-q", "What is the magic number?"]


EXPECTED_OUTPUT: dict[str, str] = {
    "niah.py": "correct=True",
    "batch_folder.py": "doc5.txt: 555",
    "stream_events.py": "answer: 4242",
    "budgets.py": "stop_reason=limit",
    "tools.py": "gold",
}


@pytest.mark.integration
@pytest.mark.parametrize(("name", "args"), _example_runs())
def test_example_script_runs(
    name: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file in examples/ runs as a script, offline, and prints a right answer."""
    with stand_in(EXAMPLE_MODELS.get(name, search_model), monkeypatch) as env:
        make = EXAMPLE_INPUTS.get(name)
        argv = [*(make(tmp_path) if make else []), *args]
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / name), *argv],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            cwd=tmp_path,
            timeout=50,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert EXPECTED_OUTPUT[name] in done.stdout, done.stdout


def test_every_example_has_an_expected_output() -> None:
    """Each example file and docs page with code has an output check, so none goes unchecked."""
    assert {p.name for p in EXAMPLES.glob("*.py")} <= set(EXPECTED_OUTPUT)
    assert set(PAGES_WITH_CODE) <= set(PAGE_OUTPUT)


def test_skipped_blocks_compile_and_are_few() -> None:
    """Blocks marked not to run still compile, give a reason, and stay few."""
    skipped = [b for b in python_blocks() if b.skip is not None]
    for block in skipped:
        compile(block.code, f"docs/{block.page}:{block.line}", "exec")
    assert len(skipped) <= MAX_SKIPPED_BLOCKS, [(b.page, b.line, b.skip) for b in skipped]
    assert PAGES_WITH_CODE, "no runnable Python blocks were found in docs/"


def test_docs_name_no_machine_paths() -> None:
    """The docs and examples name no absolute path of this machine or a registry host."""
    banned = re.compile(r"/work/|/home/\w|/root/|/tmp/|pypi\.org|files\.pythonhosted")
    for path in [*doc_pages(), *EXAMPLES.glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert not banned.search(text), f"{path.name}: {banned.search(text)}"


# --------------------------------------------------------------------------------------------
# References match the code
# --------------------------------------------------------------------------------------------


def _documented_objects() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))


def test_every_public_name_is_in_the_reference() -> None:
    """Each public name of rlm_sdk, rlm_sdk.testing and rlm_sdk.otel is in the API reference."""
    reference = _documented_objects()
    hooks = load_hooks()
    events = {cls.__name__ for cls in hooks.event_classes()} | {"Event"}
    missing = [
        name
        for name in rlm_sdk.__all__
        if name != "__version__"
        and f"::: rlm_sdk.{name}" not in reference
        and not (name in events and "<!-- events-table -->" in reference)
    ]
    assert not missing
    assert [n for n in testing.__all__ if f"::: rlm_sdk.testing.{n}" not in reference] == []
    assert [n for n in otel.__all__ if f"::: rlm_sdk.otel.{n}" not in reference] == []


def test_cli_reference_is_generated_for_every_command() -> None:
    """The CLI page holds the marker, and the hook renders the help of every subcommand."""
    assert "<!-- cli-help -->" in (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    text = load_hooks().cli_reference()
    for command in ("run", "demo", "batch", "view", "serve", "eval"):
        assert f"$ rlm-sdk {command} --help\nusage: rlm-sdk {command}" in text


def test_every_event_field_has_a_meaning() -> None:
    """The generated events tables describe every field of every event type."""
    hooks = load_hooks()
    from rlm_sdk._events import EventBase

    undocumented = [
        f"{cls.__name__}.{field}"
        for cls in hooks.event_classes()
        for field in cls.model_fields
        if field not in EventBase.model_fields
        and field != "type"
        and not hooks.field_doc(cls.__name__, field)
    ]
    assert not undocumented, "add them to FIELD_DOCS in docs/_hooks.py"
    events_page = (DOCS / "reference" / "events.md").read_text(encoding="utf-8")
    for field in EventBase.model_fields:
        assert f"| `{field}` |" in events_page


def test_error_tree_names_every_exception() -> None:
    """The drawn error tree (rendered on the exceptions page) holds every exception class."""
    tree = load_hooks().error_tree()
    exceptions = [
        name
        for name in rlm_sdk.__all__
        if isinstance(getattr(rlm_sdk, name), type)
        and issubclass(getattr(rlm_sdk, name), BaseException)
    ]
    assert exceptions
    assert [name for name in exceptions if not re.search(rf"\b{name}\b", tree)] == []


def _row_names(page: str, heading: str) -> set[str]:
    """The first-column names of the table under ``heading`` on a reference page."""
    text = (DOCS / "reference" / page).read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE))


def test_configuration_tables_match_the_code() -> None:
    """The configuration page lists every RecursiveLM argument, Limits and REPLOptions field, and variable."""
    params = set(inspect.signature(rlm_sdk.RecursiveLM.__init__).parameters) - {"self"}
    assert params == _row_names("configuration.md", "`RecursiveLM`")
    assert set(rlm_sdk.Limits.model_fields) == _row_names("configuration.md", "`Limits`")
    assert set(rlm_sdk.REPLOptions.model_fields) == _row_names("configuration.md", "`REPLOptions`")
    from rlm_sdk._settings import Settings

    variables = {
        alias if isinstance(alias, str) else str(alias.choices[0])
        for alias in (f.validation_alias for f in Settings.model_fields.values())
        if alias is not None
    }
    assert variables <= _row_names("configuration.md", "Environment variables")
    provider_args = set(inspect.signature(rlm_sdk.OpenAICompatibleProvider.__init__).parameters)
    assert provider_args - {"self"} == _row_names("configuration.md", "Providers")


def test_trajectory_examples_are_valid_lines() -> None:
    """The JSON lines shown on the trajectory-format page are a valid header and events."""
    from rlm_sdk._events import event_adapter

    blocks = [
        b for b in read_blocks(DOCS / "reference" / "trajectory-format.md") if b.lang == "json"
    ]
    header, events = blocks[0].code, blocks[1].code.splitlines()
    assert f'"schema": "{SCHEMA}", "version": {SCHEMA_VERSION}' in header
    for line in events:
        event_adapter.validate_json(line)


def test_readme_keeps_the_two_commands() -> None:
    """The README's two set-up commands appear verbatim in the quickstart."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    for command in ("uv sync && uv run rlm-sdk demo", "uv sync --all-extras && uv run pytest -n 2"):
        assert command in readme
        assert command in quickstart


def test_ci_installs_the_groups_the_readme_names() -> None:
    """Every dependency group the README names for the tests is synced by .ci/run, and exists."""
    import tomllib

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "dependency-groups"
    ]
    named = set(re.findall(r"--group (\w+)", readme))
    assert named, "the README names no test group for CI"
    syncs = [line for line in ci.splitlines() if line.startswith("uv sync")]
    assert named <= {g for line in syncs for g in re.findall(r"--group (\w+)", line)}
    assert named <= set(groups)


def test_hooks_import_only_the_standard_library() -> None:
    """The hook module imports nothing but the standard library at load time."""
    tree = ast.parse((DOCS / "_hooks.py").read_text(encoding="utf-8"))
    top = {
        alias.name.split(".")[0]
        for n in tree.body
        if isinstance(n, ast.Import)
        for alias in n.names
    }
    top |= {str(n.module).split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert top <= set(sys.stdlib_module_names), top


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_docs_build_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds: no broken link, reference or docstring warning."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=55,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    site = tmp_path / "site"
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "usage: rlm-sdk serve" in cli
    assert ":class:" not in (site / "reference" / "recursive-lm" / "index.html").read_text(
        encoding="utf-8"
    )
    assert time.perf_counter() - started < 20
