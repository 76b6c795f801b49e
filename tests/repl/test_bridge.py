"""Sub-calls and tools: the model's code calls into the parent and gets answers back."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from rlm_sdk.repl import REPLOptions, REPLSession, SubCallRequest

pytestmark = pytest.mark.integration


class Recorder:
    """A handler that records requests and answers each prompt with ``kind:model:prompt``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[SubCallRequest] = []
        self.delay = delay

    async def __call__(self, request: SubCallRequest) -> list[str]:
        self.requests.append(request)
        if self.delay:
            await anyio.sleep(self.delay)
        return [f"{request.kind}:{request.model}:{prompt}" for prompt in request.prompts]


async def test_single_sub_calls_reach_the_handler() -> None:
    """llm_query and rlm_query send one prompt each, with the model, and return the answer."""
    handler = Recorder()
    async with REPLSession(handler=handler) as repl:
        result = await repl.run_cell(
            "a = llm_query('hi')\nb = rlm_query('deep', model='m2')\n(a, b)"
        )
        assert result.stdout == "('llm:None:hi', 'rlm:m2:deep')\n"
    assert handler.requests == [
        SubCallRequest(kind="llm", prompts=["hi"], model=None, batched=False),
        SubCallRequest(kind="rlm", prompts=["deep"], model="m2", batched=False),
    ]


async def test_batched_sub_calls_keep_order() -> None:
    """The *_batched forms send all prompts in one request and keep their order."""
    handler = Recorder()
    async with REPLSession(handler=handler) as repl:
        result = await repl.run_cell(
            "prompts = [f'p{i}' for i in range(20)]\n"
            "out = llm_query_batched(prompts)\n"
            "deep = rlm_query_batched(('x', 'y'))\n"
            "print(out == [f'llm:None:p{i}' for i in range(20)], deep, llm_query_batched([]))"
        )
        assert result.stdout == "True ['rlm:None:x', 'rlm:None:y'] []\n"
    assert [(r.kind, len(r.prompts), r.batched) for r in handler.requests] == [
        ("llm", 20, True),
        ("rlm", 2, True),
    ]


async def test_handler_errors_become_error_strings() -> None:
    """A handler that raises answers every prompt with "Error: Type: message" and is logged."""

    async def failing(request: SubCallRequest) -> list[str]:
        raise ValueError("provider down")

    async with REPLSession(handler=failing) as repl:
        with capture_logs() as logs:
            result = await repl.run_cell("llm_query_batched(['a', 'b'])")
        assert (
            result.stdout
            == "['Error: ValueError: provider down', 'Error: ValueError: provider down']\n"
        )
    failures = [entry for entry in logs if entry["event"] == "rlm.subcall_failed"]
    assert [entry["error"] for entry in failures] == ["ValueError: provider down"]


async def test_handler_with_wrong_result_count_becomes_error_strings() -> None:
    """A handler returning the wrong number of answers gives "Error:" strings, not a crash."""

    async def short(request: SubCallRequest) -> list[str]:
        return ["only one"]

    async with REPLSession(handler=short) as repl:
        result = await repl.run_cell(
            "all(a.startswith('Error:') for a in llm_query_batched(['a', 'b']))"
        )
        assert result.stdout == "True\n"


async def test_no_handler_answers_with_an_error() -> None:
    """Without a handler every sub-call answers "Error: no sub-call handler configured"."""
    async with REPLSession() as repl:
        result = await repl.run_cell("llm_query('q')")
        assert result.stdout == "'Error: no sub-call handler configured'\n"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("llm_query(123)", "takes a str prompt, not int"),
        ("llm_query(['a'])", "use llm_query_batched()"),
        ("llm_query_batched('abc')", "takes a list of str prompts"),
        ("rlm_query_batched(['a', 2])", "prompt 1 is a int"),
        ("llm_query('a', model=5)", "model must be a str"),
    ],
)
async def test_wrong_argument_types_raise_type_error_in_the_cell(code: str, message: str) -> None:
    """Non-str prompts are refused with a TypeError the model can read (never str()-converted)."""
    handler = Recorder()
    async with REPLSession(handler=handler) as repl:
        result = await repl.run_cell(code)
        assert result.error is not None
        assert result.error.type == "TypeError"
        assert message in result.error.message
    assert handler.requests == []


async def test_sub_calls_from_threads_run_concurrently() -> None:
    """Cells may call llm_query from a thread pool; calls overlap and answers stay matched."""
    handler = Recorder(delay=0.2)
    async with REPLSession(handler=handler) as repl:
        started = time.perf_counter()
        result = await repl.run_cell(
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(8) as pool:\n"
            "    out = list(pool.map(llm_query, [str(i) for i in range(8)]))\n"
            "out == [f'llm:None:{i}' for i in range(8)]"
        )
        assert result.stdout == "True\n"
        assert time.perf_counter() - started < 1.0


async def test_time_waiting_for_sub_calls_counts_toward_the_deadline() -> None:
    """A cell stuck on a slow sub-call is interrupted at its deadline and the call is cancelled."""
    cancelled = anyio.Event()

    async def slow(request: SubCallRequest) -> list[str]:
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()
        return ["late"]

    async with REPLSession(options=REPLOptions(cell_timeout=0.5), handler=slow) as repl:
        await repl.run_cell("kept = 1")
        started = time.perf_counter()
        result = await repl.run_cell("llm_query('slow')")
        assert time.perf_counter() - started < 1.4
        assert result.timed_out
        assert not result.restarted
        assert result.error is not None
        assert result.error.type == "KeyboardInterrupt"
        with anyio.fail_after(1):
            await cancelled.wait()
        assert (await repl.run_cell("kept")).stdout == "1\n"


async def test_tools_sync_and_async_with_json_arguments() -> None:
    """Sync and async tools run in the parent with JSON args and kwargs and return JSON."""
    secrets = {"alpha": 1}

    def lookup(key: str, default: Any = None) -> Any:
        """Find a key in the parent's store."""
        return secrets.get(key, default)

    async def search(query: str, *, limit: int = 2) -> list[str]:
        await anyio.sleep(0)
        return [f"{query}-{i}" for i in range(limit)]

    async with REPLSession(tools={"lookup": lookup, "search": search}) as repl:
        result = await repl.run_cell(
            "print(lookup('alpha'), lookup('beta', default=[1]), search('q', limit=3))\n"
            "print(lookup.__doc__)"
        )
        assert result.error is None
        assert result.stdout == "1 [1] ['q-0', 'q-1', 'q-2']\nFind a key in the parent's store.\n"
        assert (await repl.run_cell("del lookup\nlookup('alpha')")).error is not None
        assert (await repl.run_cell("lookup('alpha')")).stdout == "1\n"


async def test_tool_failures_raise_runtime_error_in_the_cell() -> None:
    """A tool that raises, or returns non-JSON, is RuntimeError("tool NAME failed: ...")."""

    def broken(key: str) -> str:
        raise KeyError(key)

    def opaque() -> object:
        return object()

    async with REPLSession(tools={"broken": broken, "opaque": opaque}) as repl:
        failed = await repl.run_cell("broken('k')")
        assert failed.error is not None
        assert failed.error.type == "RuntimeError"
        assert failed.error.message == "tool broken failed: KeyError: 'k'"
        not_json = await repl.run_cell("opaque()")
        assert not_json.error is not None
        assert not_json.error.message.startswith("tool opaque failed: TypeError")
        bad_args = await repl.run_cell("broken({1, 2})")
        assert bad_args.error is not None
        assert bad_args.error.type == "TypeError"
        assert "JSON" in bad_args.error.message


class Budget:
    """A handler that counts every prompt and answers "Error: budget" once ``limit`` is spent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.prompts: list[str] = []

    async def __call__(self, request: SubCallRequest) -> list[str]:
        answers = []
        for prompt in request.prompts:
            self.prompts.append(prompt)
            over = len(self.prompts) > self.limit
            answers.append("Error: budget" if over else f"ok:{prompt}")
        return answers


async def test_a_flood_of_sub_calls_each_reaches_the_handler_once() -> None:
    """1000 llm_query calls in a loop are 1000 handler calls; over budget they get errors."""
    handler = Budget(limit=600)
    async with REPLSession(handler=handler) as repl:
        result = await repl.run_cell(
            "out = [llm_query(str(i)) for i in range(1000)]\n"
            "print(out[599], out[600], sum(a == 'Error: budget' for a in out))"
        )
        assert result.stdout == "ok:599 Error: budget 400\n"
        assert handler.prompts == [str(i) for i in range(1000)]
        after = await repl.run_cell("llm_query('more')")  # the session goes on
        assert after.stdout == "'Error: budget'\n"
        assert not after.restarted
    assert len(handler.prompts) == 1001


async def test_forged_call_frames_still_go_through_the_handler() -> None:
    """Call frames a cell writes straight onto the channel are counted by the handler too."""
    handler = Budget(limit=10)
    async with REPLSession(handler=handler) as repl:
        result = await repl.run_cell(
            "import fcntl, json, os, stat, struct\n"
            "capture = {os.fstat(1).st_ino, os.fstat(2).st_ino}\n"
            "def writes_out(fd):  # a pipe's write end that is not the cell's own output\n"
            "    try:\n"
            "        info = os.fstat(fd)\n"
            "        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE\n"
            "    except OSError:\n"
            "        return False\n"
            "    return stat.S_ISFIFO(info.st_mode) and mode == os.O_WRONLY and info.st_ino not in capture\n"
            "targets = [fd for fd in range(3, 256) if writes_out(fd)]\n"
            "for i in range(500):\n"
            "    body = json.dumps({'type': 'call', 'id': 10**9 + i, 'kind': 'llm',\n"
            "                       'prompts': [f'forged {i}'], 'model': None, 'batched': False})\n"
            "    for fd in targets:\n"
            "        os.write(fd, struct.pack('>I', len(body)) + body.encode())\n"
            "print(llm_query('real'))"
        )
        assert result.error is None, result.error
        assert result.stdout == "Error: budget\n"
        assert handler.prompts == [f"forged {i}" for i in range(500)] + ["real"]
        assert (await repl.run_cell("1 + 1")).stdout == "2\n"


async def test_big_prompts_and_answers_cross_intact() -> None:
    """32 prompts of 120 KB go to the handler and big answers come back, byte for byte."""
    seen: list[SubCallRequest] = []

    async def echo(request: SubCallRequest) -> list[str]:
        seen.append(request)
        return [prompt[::-1] + "é" for prompt in request.prompts]

    async with REPLSession(handler=echo) as repl:
        result = await repl.run_cell(
            "prompts = [('ünï ✓ %d ' % i) * 12_000 for i in range(32)]\n"
            "answers = llm_query_batched(prompts)\n"
            "print(all(a == p[::-1] + 'é' for a, p in zip(answers, prompts)), len(answers))\n"
            "print(llm_query('x' * 200_000 + '\\ud800') == '?' + 'x' * 200_000 + 'é')"
        )
        assert result.error is None, result.error
        assert result.stdout == "True 32\nTrue\n"
    assert [len(request.prompts) for request in seen] == [32, 1]
    assert seen[0].prompts[5] == "ünï ✓ 5 " * 12_000
    assert seen[1].prompts[0] == "x" * 200_000 + "?"  # a lone surrogate becomes "?", as in JSON
