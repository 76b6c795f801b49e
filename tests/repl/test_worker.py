"""The worker runtime (``repl/_worker.py``): cells in a real worker, and its parts in-process.

Namespace, output capture, errors, reserved names, final answers and variables are checked
through a session; the channel reader and the bytecode scan of bound names are checked in this
process, as the worker would use them.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from rlm_sdk.repl import REPLOptions, REPLSession, _wire, _worker

pytestmark = pytest.mark.integration


async def test_namespace_persists_and_last_expression_is_echoed() -> None:
    """Variables survive between cells and a bare last expression prints its repr."""
    async with REPLSession() as repl:
        first = await repl.run_cell("x = 39\ny = 'two'")
        second = await repl.run_cell("x + len(y)")
        assert first.error is None
        assert first.stdout == ""
        assert second.stdout == "42\n"
        assert (await repl.run_cell("print('a'); None")).stdout == "a\n"
        assert (await repl.run_cell("x;")).stdout == ""
        assert (await repl.run_cell("__name__")).stdout == "'__main__'\n"


async def test_stdout_stderr_and_fd_writes_are_captured() -> None:
    """print, sys.stderr, os.write(1/2) and a child process's output all land in the result.

    Python-level prints and fd-level writes reach the capture by two paths, so only whole
    writes are compared here, not their order.
    """
    async with REPLSession(options=REPLOptions(allow_subprocess=True)) as repl:
        result = await repl.run_cell(
            "import os, subprocess, sys\n"
            "print('out')\n"
            "print('err', file=sys.stderr)\n"
            "os.write(1, b'fd1\\n')\n"
            "os.write(2, b'fd2\\n')\n"
            "sys.stdout.buffer.write(b'bytes\\n')\n"
            f"_ = subprocess.run([{sys.executable!r}, '-c', 'import os; os.write(1, b\"child\\\\n\")'])\n"
        )
        assert result.error is None
        assert sorted(result.stdout.split()) == ["bytes", "child", "fd1", "out"]
        assert sorted(result.stderr.split()) == ["err", "fd2"]


async def test_output_is_bounded_head_and_tail() -> None:
    """Output beyond output_limit keeps the head and the tail with a marker saying what was cut."""
    async with REPLSession(options=REPLOptions(output_limit=100)) as repl:
        result = await repl.run_cell("print('a' * 500 + 'b' * 500, end='')")
        assert result.stdout == "a" * 50 + "\n... [900 characters cut] ...\n" + "b" * 50
        assert result.output_truncated == 900


async def test_printing_a_gigabyte_stays_bounded_and_fast() -> None:
    """Printing 1 GB in 1 MB chunks is cut to the limit, quickly, without the worker growing."""
    async with REPLSession(options=REPLOptions(output_limit=1000)) as repl:
        started = time.perf_counter()
        result = await repl.run_cell(
            "chunk = 'x' * 1_000_000\nfor _ in range(1000):\n    print(chunk)"
        )
        elapsed = time.perf_counter() - started
        assert result.error is None
        assert result.output_truncated == 1000 * 1_000_001 - 1000
        assert len(result.stdout) < 1100
        assert elapsed < 20
        assert repl.pid is not None
        assert _peak_rss(repl.pid) < 200 * 1024**2
        assert (await repl.run_cell("1 + 1")).stdout == "2\n"


async def test_os_write_of_200_mb_to_fd_1_is_bounded() -> None:
    """200 MB written straight to fd 1 goes through the drained pipe and is cut to the limit."""
    async with REPLSession(options=REPLOptions(output_limit=1000)) as repl:
        result = await repl.run_cell(
            "import os\n"
            "data = memoryview(b'y' * 200_000_000)\n"
            "while data:\n"
            "    data = data[os.write(1, data):]\n"
            "del data"
        )
        assert result.error is None
        assert result.output_truncated == 200_000_000 - 1000
        assert result.stdout.startswith("y" * 500)


async def test_errors_carry_type_message_and_short_traceback() -> None:
    """A raised exception is a cell error with its type, message and the traceback tail."""
    async with REPLSession() as repl:
        result = await repl.run_cell("def f():\n    return 1 / 0\nprint('before')\nf()")
        assert result.stdout == "before\n"
        assert result.error is not None
        assert result.error.type == "ZeroDivisionError"
        assert result.error.message == "division by zero"
        assert 'File "<cell-1>", line 2, in f' in result.error.traceback
        assert "return 1 / 0" in result.error.traceback
        assert "_worker.py" not in result.error.traceback
        assert result.defined_names == ["f"]


async def test_syntax_error_shows_line_and_caret() -> None:
    """A cell that does not compile reports where, with a caret, and runs nothing."""
    async with REPLSession() as repl:
        result = await repl.run_cell("x = 1\ny = (2 +\n")
        assert result.error is not None
        assert result.error.type == "SyntaxError"
        assert "line 2" in result.error.traceback
        assert "^" in result.error.traceback
        assert "Traceback" not in result.error.traceback
        assert (await repl.run_cell("'x' in dir()")).stdout == "False\n"


@pytest.mark.parametrize(
    "code", ["import sys; sys.exit(3)", "raise SystemExit", "exit()", "quit(1)"]
)
async def test_system_exit_is_a_cell_error(code: str) -> None:
    """sys.exit(), raise SystemExit, exit() and quit() fail the cell; the worker keeps running."""
    async with REPLSession() as repl:
        await repl.run_cell("kept = 1")
        pid = repl.pid
        result = await repl.run_cell(code)
        assert result.error is not None
        assert result.error.type == "SystemExit"
        assert "keeps running" in result.error.message
        assert not result.restarted
        assert repl.pid == pid
        assert (await repl.run_cell("kept")).stdout == "1\n"


async def test_defined_names_lists_user_names_bound_by_the_cell() -> None:
    """defined_names holds names the cell (re)bound, not modules, private or reserved names."""
    async with REPLSession() as repl:
        await repl.run_cell("a = 1")
        result = await repl.run_cell(
            "import json as j\na = 1\nb, c = 2, 3\ndef f(): pass\nclass K: pass\n_p = 1\n"
            "for i in range(2): pass\nif (w := 5): pass\nglobals()['g'] = 7"
        )
        assert result.defined_names == ["K", "a", "b", "c", "f", "g", "i", "w"]


async def test_reserved_names_are_restored_after_every_cell() -> None:
    """Deleting or overwriting context and the helper functions lasts only until the cell ends."""
    async with REPLSession("the context") as repl:
        result = await repl.run_cell(
            "del llm_query, llm_query_batched, rlm_query, rlm_query_batched, FINAL_VAR, SHOW_VARS\n"
            "context = 'mine'\nprint(context)"
        )
        assert result.stdout == "mine\n"
        assert result.defined_names == []
        check = await repl.run_cell(
            "print(context)\nprint(all(callable(f) for f in (llm_query, llm_query_batched, "
            "rlm_query, rlm_query_batched, FINAL_VAR, SHOW_VARS)))"
        )
        assert check.stdout == "the context\nTrue\n"


async def test_final_var_sets_the_final_answer() -> None:
    """FINAL_VAR takes a variable's name or a value, and its echo is not printed."""
    async with REPLSession() as repl:
        named = await repl.run_cell("result = 6 * 7\nFINAL_VAR('result')")
        assert named.final_answer == "42"
        assert named.stdout == ""
        assert (await repl.run_cell("FINAL_VAR([1, 2])")).final_answer == "[1, 2]"
        assert (await repl.run_cell("FINAL_VAR('no_such_name')")).final_answer == "no_such_name"
        assert (await repl.run_cell("x = 1")).final_answer is None


async def test_answer_dict_ready_sets_the_final_answer() -> None:
    """answer["ready"] = True makes answer["content"] the final answer; a deleted answer returns."""
    async with REPLSession() as repl:
        assert (await repl.run_cell("answer")).stdout == "{'content': '', 'ready': False}\n"
        assert (await repl.run_cell("answer['content'] = 'draft'")).final_answer is None
        done = await repl.run_cell("answer['content'] = 41 + 1\nanswer['ready'] = True")
        assert done.final_answer == "42"
        await repl.run_cell("del answer")
        assert (await repl.run_cell("answer['ready']")).stdout == "False\n"
        await repl.run_cell("answer = 'user value'")
        assert (await repl.run_cell("answer")).stdout == "'user value'\n"


async def test_show_vars_get_variable_and_list_variables() -> None:
    """SHOW_VARS, get_variable and list_variables see user variables with their types."""
    async with REPLSession("ctx") as repl:
        await repl.run_cell("import re\nitems = [1, 2]\nname = 'n'\n_hidden = 1")
        shown = await repl.run_cell("SHOW_VARS()")
        assert "items: list" in shown.stdout
        assert "re" not in shown.stdout.split()
        assert await repl.get_variable("items") == "[1, 2]"
        assert await repl.get_variable("name") == "n"
        assert await repl.get_variable("missing") is None
        assert await repl.list_variables() == {"answer": "dict", "items": "list", "name": "str"}


async def test_get_variable_with_a_looping_str_is_interrupted() -> None:
    """A __str__ that never returns is interrupted at the deadline; the session goes on."""
    async with REPLSession(options=REPLOptions(cell_timeout=0.5)) as repl:
        await repl.run_cell(
            "class Slow:\n    def __str__(self):\n        while True: pass\ns = Slow()"
        )
        assert await repl.get_variable("s") == "<str() of Slow was interrupted>"
        assert (await repl.run_cell("1")).stdout == "1\n"


@pytest.mark.parametrize(
    ("context", "check", "expected"),
    [
        (
            "héllo\nwörld \ud800",
            "(type(context).__name__, context)",
            "('str', 'héllo\\nwörld \\ud800')",
        ),
        (b"\x00\xffbytes", "context", "b'\\x00\\xffbytes'"),
        (["a", "", "b\nc", "é"], "context", "['a', '', 'b\\nc', 'é']"),
        (["with\x00nul", "x"], "context", "['with\\x00nul', 'x']"),
        ([], "context", "[]"),
        ({"k": [1, 2.5, None, True]}, "context", "{'k': [1, 2.5, None, True]}"),
        ([1, "two", {"three": 3}], "context", "[1, 'two', {'three': 3}]"),
        ("", "context", "''"),
        (None, "print(context)", "None"),
    ],
)
async def test_context_kinds_arrive_intact(context: object, check: str, expected: str) -> None:
    """str, bytes, list[str] (with and without NULs), dicts and other JSON values round-trip."""
    async with REPLSession(context) as repl:  # type: ignore[arg-type]
        result = await repl.run_cell(check)
        assert result.error is None
        assert result.stdout == expected + "\n"


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_bound_names_read_from_bytecode_cover_wide_and_nested_code() -> None:
    """Past 256 names (EXTENDED_ARG) every store counts; function and class bodies do not,
    nor comprehension variables; ``del`` and bare annotations bind nothing."""
    many = "\n".join(f"v{i} = {i}" for i in range(300))
    code = compile(
        many + "\ndef f():\n    inner = 1\nclass K:\n    attr = 2\n"
        "squares = [n * n for n in range(3)]\nx: int\ndel v0\nimport os.path as p, sys",
        "<cell>",
        "exec",
    )
    bound = _worker._bound_names(code)
    assert {f"v{i}" for i in range(300)} <= bound
    assert {"f", "K", "squares", "p", "sys"} <= bound
    assert not {"inner", "attr", "n", "x", "os"} & bound


async def test_a_fresh_worker_starts_at_cell_1_with_no_variables() -> None:
    """Nothing runs in the namespace before the first command: the first cell is cell 1."""
    async with REPLSession() as repl:
        result = await repl.run_cell("n")
        assert result.error is not None and result.error.type == "NameError"
        assert "<cell-1>" in result.error.traceback
        assert "n" not in await repl.list_variables()
        assert (await repl.run_cell("n = 2\nn")).stdout == "2\n"


def test_the_worker_reads_segmented_frames() -> None:
    """The worker's channel reassembles a big segmented reply read from its socket."""
    parent, child = socket.socketpair()
    with parent, child:
        message = {
            "type": "call_result",
            "id": 3,
            "results": ["r" * 3_000_000, "é" * _wire.SEGMENT_MIN_CHARS],
        }
        frame = _wire.encode_frame(message)
        sender = threading.Thread(target=parent.sendall, args=(frame,))
        sender.start()
        channel = _worker._Channel(child.fileno(), child.fileno(), -1)
        assert channel.read() == message
        sender.join()
