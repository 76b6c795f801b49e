"""The REPL worker: the process that holds the context and runs the model's code.

The parent runs this file as a script, ``python -I _worker.py`` (or the fork server forks it
ready-made, see ``_forkserver.py``), never as part of the ``rlm_sdk`` package: importing the
package would pull in pydantic and httpx and cost hundreds of milliseconds on every start, and
the worker runs code written by a model, so it should hold as little as possible. It uses the
standard library only, plus three sibling files: ``_wire.py`` (the frames and the context
layout it shares with the parent), ``_capture.py`` (what cells print) and ``_sandbox.py``.

How it finds them: ``-I`` leaves the script's directory off ``sys.path``, so this module puts
it there for those imports and takes it off again, before any model code runs. That is a
plain import (no ``importlib.util``, about a millisecond cheaper per start), and the model's
code can import nothing more from the package directory than before: only the modules already
loaded. Imported from the package instead (the parent's tests, the type checker), the same
names come from ``rlm_sdk.repl``.

Startup, in order (:func:`main`):

1. Take the channel: the protocol moves from fd 0/1 (two pipes) to private descriptors,
   fd 0 reads ``/dev/null`` and fd 1/2 become pipes this process drains itself, so ``print``,
   ``os.write(1, ...)`` and child processes can never write into the channel.
2. Read the ``init`` frame (protocol version, context descriptor, sandbox policy, tool names).
3. Apply isolation (:func:`apply_isolation`): death with the parent, then the sandbox layers of
   ``_sandbox.py`` (rlimits, no_new_privs, a network namespace, Landlock, seccomp), while the
   process still has a single thread.
4. Load the context from the sealed memfd, build the namespace, say ``ready`` (with the layers).
5. Serve: run cells, answer variable queries, forward sub-calls and tool calls to the parent.
"""

from __future__ import annotations

import _thread
import builtins
import contextlib
import itertools
import json
import os
import signal
import sys
import threading
import time
from _queue import SimpleQueue

TYPE_CHECKING = False
if TYPE_CHECKING or __package__:  # imported from the package (tests, type checking)
    from . import _capture, _documents, _sandbox, _wire
else:  # run as a script: see the module docstring
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import _capture
        import _documents
        import _sandbox
        import _wire
    finally:
        del sys.path[0]

if TYPE_CHECKING:
    import traceback
    from collections.abc import Callable
    from types import CodeType, FrameType
    from typing import Any

TRACEBACK_CHARS = 3000
"""Characters of a cell's traceback kept (the tail, where the error is)."""
TRACEBACK_FRAMES = 8
MAX_DEFINED_NAMES = 500
_ModuleType = type(sys)
_OWN_FILES = frozenset({__file__, _wire.__file__, _capture.__file__})
"""Frames of these files are the worker's, not the cell's: tracebacks leave them out."""

# --------------------------------------------------------------------------------------------
# The channel
# --------------------------------------------------------------------------------------------


class _Gate:
    """Turns SIGINT into KeyboardInterrupt only while a cell runs, never inside a frame write.

    The parent interrupts a cell that runs past its deadline with SIGINT. Raised in the middle of
    writing a frame, the interrupt would leave half a frame in the channel, so it is deferred
    until the write is done; outside cells it is ignored.
    """

    def __init__(self) -> None:
        self.armed = False
        self._held = 0
        self._pending = False
        self._main = threading.get_ident()

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:
            return
        if self._held:
            self._pending = True
            return
        raise KeyboardInterrupt

    def arm(self) -> None:
        self._pending = False
        self.armed = True

    def disarm(self) -> None:
        self.armed = False
        self._pending = False

    def hold(self) -> bool:
        if threading.get_ident() != self._main:
            return False
        self._held += 1
        return True

    def release(self, held: bool) -> None:
        if not held:
            return
        self._held -= 1
        if not self._held and self._pending:
            self._pending = False
            if self.armed:
                raise KeyboardInterrupt


class _Channel:
    """Frames over the worker's private channel descriptors, plus a line-based diagnostic stream."""

    def __init__(self, rfd: int, wfd: int, diag: int) -> None:
        self._rfd = rfd
        self._wfd = wfd
        self._diag = diag
        self._wlock = threading.Lock()
        self._reader = _wire.FrameReader()

    def diag(self, text: str) -> None:
        """A line for the parent's log (the original stderr pipe, not the cell's capture)."""
        with contextlib.suppress(OSError):
            os.write(self._diag, f"rlm worker: {text}\n".encode("utf-8", "replace"))

    def diag_fd(self) -> int:
        return self._diag

    def read(self) -> dict[str, Any] | None:
        """The next message, or None when the parent closed the channel."""
        steps = self._reader.read_frame()
        try:
            target = next(steps)
            while True:
                got = os.readv(self._rfd, [target])
                if not got:
                    return None
                target = steps.send(got)
        except StopIteration as done:
            segmented, payload = done.value
        message = _wire.decode_segmented(payload) if segmented else json.loads(payload)
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ValueError("a frame from the parent is not a typed JSON object")
        return message

    def send(self, message: dict[str, Any], gate: _Gate | None = None) -> None:
        self.send_frame(_wire.encode_frame_parts(message), gate)

    def send_frame(self, parts: list[bytes], gate: _Gate | None = None) -> None:
        held = gate.hold() if gate is not None else False
        try:
            with self._wlock:
                _wire.write_parts(self._wfd, parts)
        except OSError:
            os._exit(0)  # the parent is gone
        finally:
            if gate is not None:
                gate.release(held)


# --------------------------------------------------------------------------------------------
# Requests to the parent: sub-calls and tools
# --------------------------------------------------------------------------------------------


class _Bridge:
    """Sends requests to the parent and waits for the replies the reader thread hands over.

    Any thread may call; each request waits on its own lock, so a cell can run sub-calls from a
    thread pool. The wait is interruptible, so a cell blocked on a slow sub-call still stops at
    its deadline.
    """

    def __init__(self, channel: _Channel, gate: _Gate) -> None:
        self._channel = channel
        self._gate = gate
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[_thread.LockType, list[dict[str, Any]]]] = {}

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        waiter = _thread.allocate_lock()
        waiter.acquire()
        box: list[dict[str, Any]] = []
        with self._lock:
            request_id = next(self._ids)
            self._pending[request_id] = (waiter, box)
        try:
            parts = _wire.encode_frame_parts({**message, "id": request_id})
            self._channel.send_frame(parts, self._gate)
            waiter.acquire()
            return box[0]
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand a reply to the thread waiting for it (a reply nobody waits for is dropped)."""
        with self._lock:
            entry = self._pending.pop(message.get("id", -1), None)
        if entry is not None:
            entry[1].append(message)
            entry[0].release()

    def ask(self, kind: str, prompts: list[str], model: object, batched: bool) -> list[str]:
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a str or None, not {type(model).__name__}")
        if not prompts:
            return []
        try:
            reply = self.request(
                {
                    "type": "call",
                    "kind": kind,
                    "prompts": prompts,
                    "model": model,
                    "batched": batched,
                }
            )
        except _wire.FrameTooLargeError as exc:
            raise ValueError(f"the prompts are too large to send: {exc}") from None
        results = reply.get("results")
        if not isinstance(results, list) or len(results) != len(prompts):
            raise RuntimeError("the parent answered a sub-call with the wrong number of results")
        return [str(result) for result in results]

    def tool(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            reply = self.request(
                {"type": "tool", "name": name, "args": list(args), "kwargs": kwargs}
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"tool {name}: the arguments must be JSON values ({exc})") from None
        if reply.get("ok"):
            return reply.get("value")
        raise RuntimeError(f"tool {name} failed: {reply.get('error')}")


def _prompt(value: object, function: str) -> str:
    if isinstance(value, str):
        return value
    hint = f"; use {function}_batched() for many prompts" if isinstance(value, list | tuple) else ""
    raise TypeError(f"{function}() takes a str prompt, not {type(value).__name__}{hint}")


def _prompts(values: object, function: str) -> list[str]:
    if isinstance(values, str | bytes | dict) or not hasattr(values, "__iter__"):
        raise TypeError(f"{function}() takes a list of str prompts, not {type(values).__name__}")
    prompts = list(values)
    for index, value in enumerate(prompts):
        if not isinstance(value, str):
            raise TypeError(f"{function}() prompt {index} is a {type(value).__name__}, not a str")
    return prompts


# --------------------------------------------------------------------------------------------
# The session: namespace, cells, variables
# --------------------------------------------------------------------------------------------


class _VarListing(dict[str, str]):
    """What ``SHOW_VARS()`` returns: user variable names to type names, shown readably."""

    def __repr__(self) -> str:
        if not self:
            return "No variables defined yet."
        return "Variables:\n" + "\n".join(f"  {name}: {kind}" for name, kind in self.items())


class _Session:
    """The persistent namespace and everything that happens in it."""

    def __init__(
        self,
        channel: _Channel,
        gate: _Gate,
        output: _capture.Output,
        context: object,
        config: dict[str, Any],
    ) -> None:
        self._channel = channel
        self._gate = gate
        self._output = output
        self._bridge = _Bridge(channel, gate)
        self._commands: SimpleQueue[dict[str, Any]] = SimpleQueue()
        self._cells = 0
        self._final: str | None = None
        self._final_json: str | None = None
        """The final answer's value as JSON, when it was not text (for typed answers)."""
        module = _ModuleType("__main__")
        sys.modules["__main__"] = module
        self.ns: dict[str, Any] = module.__dict__
        self.reserved: dict[str, object] = {"context": context, **self._functions()}
        for name, doc in dict(config.get("tools") or {}).items():
            self.reserved[name] = self._tool(name, doc)
        self.ns.update(self.reserved)
        self.ns[_wire.ANSWER_NAME] = {"content": "", "ready": False}

    # -- the functions model code sees ------------------------------------------------------

    def _functions(self) -> dict[str, Callable[..., Any]]:
        bridge = self._bridge

        def llm_query(prompt: str, model: str | None = None) -> str:
            """Ask a language model one prompt; returns its answer ("Error: ..." if it failed)."""
            return bridge.ask("llm", [_prompt(prompt, "llm_query")], model, False)[0]

        def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
            """Ask a language model many prompts concurrently; answers come back in order."""
            return bridge.ask("llm", _prompts(prompts, "llm_query_batched"), model, True)

        def rlm_query(prompt: str, model: str | None = None) -> str:
            """Ask a recursive LM (with its own REPL) one prompt; returns its answer."""
            return bridge.ask("rlm", [_prompt(prompt, "rlm_query")], model, False)[0]

        def rlm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
            """Ask recursive LMs many prompts concurrently; answers come back in order."""
            return bridge.ask("rlm", _prompts(prompts, "rlm_query_batched"), model, True)

        def FINAL_VAR(value: object) -> str:
            """Give the final answer: a variable's name (its value is used) or any value."""
            if isinstance(value, str) and value.isidentifier() and value in self.ns:
                value = self.ns[value]
            self._final, self._final_json = _text(value), _json(value)
            return self._final

        def FINAL(value: object) -> str:
            """Give the final answer: ``str(value)`` (models used to text protocols write this)."""
            self._final, self._final_json = _text(value), _json(value)
            return self._final

        def SHOW_VARS() -> _VarListing:
            """The variables defined so far, with their types."""
            return _VarListing(self.variables())

        return {
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "FINAL_VAR": FINAL_VAR,
            "FINAL": FINAL,
            "SHOW_VARS": SHOW_VARS,
        }

    def _tool(self, name: str, doc: object) -> Callable[..., Any]:
        bridge = self._bridge

        def tool(*args: Any, **kwargs: Any) -> Any:
            return bridge.tool(name, args, kwargs)

        tool.__name__ = tool.__qualname__ = name
        tool.__doc__ = str(doc) if doc else f"The {name} tool (runs in the parent process)."
        return tool

    # -- serving -------------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer the parent's commands until it closes the channel (which ends the process)."""
        # No warm-up cell: running one on a scratch namespace cost each worker ~0.6 ms of CPU
        # to save its first cell ~0.3 ms (measured), a bad trade when hundreds start at once.
        threading.Thread(target=self._read_loop, name="rlm-channel", daemon=True).start()
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "exec": self.run_cell,
            "get_var": self.get_var,
            "list_vars": self.list_vars,
            "add_context": self.add_context,
        }
        while True:
            message = self._commands.get()
            handler = handlers.get(message["type"])
            if handler is None:
                self._channel.diag(f"unexpected frame {message['type']!r} from the parent")
                continue
            try:
                reply = handler(message)
            except KeyboardInterrupt:  # landed on the edge of a cell, in our own code
                self._gate.disarm()
                reply = self._fallback(message, "KeyboardInterrupt", "the cell was interrupted")
            self._reply(message, reply)

    def _read_loop(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            while True:
                message = self._channel.read()
                if message is None:
                    os._exit(0)  # the parent closed the channel or died
                if message["type"] in ("call_result", "tool_result"):
                    self._bridge.deliver(message)
                else:
                    self._commands.put(message)
        except BaseException as exc:
            self._channel.diag(f"channel read failed: {type(exc).__name__}: {exc}")
            os._exit(2)

    def _reply(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        try:
            parts = _wire.encode_frame_parts(reply)
        except (TypeError, ValueError) as exc:
            reply = self._fallback(message, "REPLError", f"the reply could not be sent: {exc}")
            parts = _wire.encode_frame_parts(reply)
        self._channel.send_frame(parts)

    def _fallback(self, message: dict[str, Any], error: str, text: str) -> dict[str, Any]:
        """A minimal reply to ``message`` when the normal one could not be made."""
        kind = message["type"]
        if kind == "exec":
            stdout, stdout_cut, stderr, stderr_cut = self._output.finish_cell()
            return {
                "type": "result",
                "id": message["id"],
                "stdout": stdout,
                "stdout_cut": stdout_cut,
                "stderr": stderr,
                "stderr_cut": stderr_cut,
                "error": {"type": error, "message": text, "traceback": ""},
                "defined_names": [],
                "final_answer": None,
            }
        if kind == "add_context":
            return _loaded(message, {"type": error, "message": text, "traceback": ""})
        if kind == "get_var":
            return {"type": "var", "id": message["id"], "found": False, "text": None}
        return {"type": "vars", "id": message["id"], "variables": {}}

    # -- cells ---------------------------------------------------------------------------------

    def run_cell(self, message: dict[str, Any]) -> dict[str, Any]:
        code = str(message["code"])
        self._cells += 1
        self._final = self._final_json = None
        self._output.begin_cell()
        if signal.getsignal(signal.SIGINT) != self._gate.on_sigint:  # a cell replaced it
            signal.signal(signal.SIGINT, self._gate.on_sigint)
        before = {name: id(value) for name, value in self.ns.items()}
        error, bound = self._execute(code, f"<cell-{self._cells}>")
        self._restore()
        stdout, stdout_cut, stderr, stderr_cut = self._output.finish_cell()
        changed = {name for name, value in self.ns.items() if before.get(name) != id(value)}
        defined = sorted(
            name
            for name in changed | bound
            if name in self.ns and self._is_user(name, self.ns[name])
        )
        reply = {
            "type": "result",
            "id": message["id"],
            "stdout": stdout,
            "stdout_cut": stdout_cut,
            "stderr": stderr,
            "stderr_cut": stderr_cut,
            "error": error,
            "defined_names": defined[:MAX_DEFINED_NAMES],
            "final_answer": self._final_answer(),
        }
        if self._final_json is not None:  # only then: other frames stay as they were
            reply["final_json"] = self._final_json
        return reply

    def _execute(self, code: str, filename: str) -> tuple[dict[str, str] | None, set[str]]:
        """Run one cell; the error (if any) and the names its top level binds."""
        import ast
        import linecache

        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            tree = ast.parse(code, filename, "exec")
            echo = None
            if (
                tree.body
                and isinstance(tree.body[-1], ast.Expr)
                and not code.rstrip().endswith(";")
            ):
                last = tree.body.pop()
                assert isinstance(last, ast.Expr)
                echo = compile(ast.Expression(last.value), filename, "eval", dont_inherit=True)
            body = compile(tree, filename, "exec", dont_inherit=True)
        except BaseException as exc:  # the cell does not compile: say where
            return _describe(exc, compiling=True), set()
        bound = _bound_names(body)
        try:
            self._gate.arm()
            try:
                exec(body, self.ns)
                if echo is not None:
                    value = eval(echo, self.ns)
                    if value is not None and not (self._final is not None and value is self._final):
                        print(repr(value), file=self._output.stdout)
            finally:
                self._gate.disarm()
        except BaseException as exc:  # everything the model's code does is a cell result
            self._gate.disarm()
            return _describe(exc), bound
        return None, bound

    def _restore(self) -> None:
        """Put back the reserved names (and ``answer`` if it was deleted)."""
        ns = self.ns
        for name, value in self.reserved.items():
            if ns.get(name, ns) is not value:
                ns[name] = value
        if _wire.ANSWER_NAME not in ns:
            ns[_wire.ANSWER_NAME] = {"content": "", "ready": False}

    def _final_answer(self) -> str | None:
        if self._final is not None:
            return self._final[: _wire.MAX_TEXT_CHARS]
        answer = self.ns.get(_wire.ANSWER_NAME)
        try:
            if isinstance(answer, dict) and answer.get("ready"):
                # Reported once: an answer the parent turns down (a typed answer that does not
                # match), or a session's next query, must not see it offered again by every cell.
                answer["ready"] = False
                content = answer.get("content", "")
                self._final_json = _json(content)
                return _text(content)
        except Exception:
            return None
        return None

    def _is_user(self, name: str, value: object) -> bool:
        return (
            not name.startswith("_")
            and name not in self.reserved
            and not isinstance(value, _ModuleType)
        )

    def variables(self) -> dict[str, str]:
        return {
            name: type(value).__name__
            for name, value in list(self.ns.items())
            if self._is_user(name, value)
        }

    # -- variable queries ------------------------------------------------------------------------

    def get_var(self, message: dict[str, Any]) -> dict[str, Any]:
        name = str(message["name"])
        if name not in self.ns:
            return {"type": "var", "id": message["id"], "found": False, "text": None}
        reply: dict[str, Any] = {"type": "var", "id": message["id"], "found": True}
        self._gate.arm()  # a __str__ may loop forever; the deadline still applies
        try:
            reply["text"] = _text(self.ns[name])
            if message.get("json"):  # asked for typed answers only
                reply["value_json"] = _json(self.ns[name])
        except KeyboardInterrupt:
            reply["text"] = f"<str() of {type(self.ns[name]).__name__} was interrupted>"
        finally:
            self._gate.disarm()
        return reply

    def list_vars(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"type": "vars", "id": message["id"], "variables": self.variables()}

    # -- contexts added to a live session ------------------------------------------------------

    def add_context(self, message: dict[str, Any]) -> dict[str, Any]:
        """Load one more context (``context_1``, ...) from a file the parent wrote; the reply
        is a cell result, its error saying why the context could not be loaded."""
        try:
            self.load_extra(message)
        except Exception as exc:
            return _loaded(message, _describe(exc))
        return _loaded(message, None)

    def load_extra(self, entry: dict[str, Any]) -> None:
        """Map an extra context's file and bind it as a reserved name (kept like ``context``)."""
        name = str(entry["name"])
        if not name.isidentifier() or name in self.reserved:
            raise ValueError(f"{name!r} cannot name a context")
        fd = os.open(str(entry["path"]), os.O_RDONLY | os.O_CLOEXEC)
        try:
            value = _wire.load_context(fd, dict(entry["context"]))
        finally:
            os.close(fd)
        self.reserved[name] = self.ns[name] = value


def _loaded(message: dict[str, Any], error: dict[str, str] | None) -> dict[str, Any]:
    """The reply to ``add_context``: a cell result without output."""
    return {
        "type": "result",
        "id": message["id"],
        "stdout": "",
        "stdout_cut": 0,
        "stderr": "",
        "stderr_cut": 0,
        "error": error,
        "defined_names": [],
        "final_answer": None,
    }


def _text(value: object) -> str:
    """``str(value)``, bounded to what fits in a frame; never raises for a broken ``__str__``."""
    try:
        text = str(value)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        text = f"<str() of {type(value).__name__} failed: {type(exc).__name__}: {exc}>"
    return text[: _wire.MAX_TEXT_CHARS]


def _json(value: object) -> str | None:
    """``value`` as JSON text, for a typed answer; ``None`` for text (which is its own JSON
    source) and for what JSON cannot hold. Sets become lists; pydantic models and dataclasses
    their fields. Bounded like :func:`_text`; never raises but for an interrupt."""
    if isinstance(value, str):
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=_plain)
    except KeyboardInterrupt:
        raise
    except BaseException:
        return None
    return text if len(text) <= _wire.MAX_TEXT_CHARS else None


def _plain(value: object) -> object:
    """What ``json.dumps`` writes for a value it does not know, or ``TypeError``."""
    if isinstance(value, set | frozenset):
        return list(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        return dataclasses.asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"{type(value).__name__} is not JSON")


def _describe(exc: BaseException, *, compiling: bool = False) -> dict[str, str]:
    """The error of a cell: type, message and a short traceback tail without the worker's frames.

    A cell that does not compile gets only the location (line, caret), not a traceback.
    """
    kind = type(exc).__name__
    try:
        import traceback

        if isinstance(exc, SystemExit):
            message = f"exit({exc.code!r}) was called; the REPL does not exit, it keeps running"
        elif isinstance(exc, KeyboardInterrupt):
            message = "the cell was interrupted"
        else:
            message = _text(exc)
        if compiling:
            lines = traceback.format_exception_only(type(exc), exc)
        else:
            report = traceback.TracebackException(
                type(exc), exc, exc.__traceback__, limit=-TRACEBACK_FRAMES, compact=True
            )
            _drop_worker_frames(report)
            lines = list(report.format())
        text = "".join(lines)
        if len(text) > TRACEBACK_CHARS:
            text = "...\n" + text[len(text) - TRACEBACK_CHARS :]
    except BaseException:  # MemoryError while formatting: keep what we have
        return {"type": kind, "message": "", "traceback": ""}
    finally:
        del exc
    return {"type": kind, "message": message, "traceback": text}


def _drop_worker_frames(report: traceback.TracebackException) -> None:
    """Remove this file's frames (the cell runner, the bridge) from a report and its chain."""
    import traceback

    todo = [report]
    seen: set[int] = set()
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        frames = [frame for frame in item.stack if frame.filename not in _OWN_FILES]
        item.stack = traceback.StackSummary.from_list(frames)
        todo.extend(chained for chained in (item.__cause__, item.__context__) if chained)


def _bound_names(code: CodeType) -> set[str]:
    """Names the top level of a compiled cell binds: its ``STORE_NAME``/``STORE_GLOBAL`` ops.

    Function and class bodies, lambdas and comprehensions are code objects of their own, so
    they are not looked into. Reading the bytecode costs a fraction of walking the syntax tree.
    """
    import opcode

    stores = {opcode.opmap["STORE_NAME"], opcode.opmap["STORE_GLOBAL"]}
    extended = opcode.opmap["EXTENDED_ARG"]
    raw, names = code.co_code, code.co_names
    bound: set[str] = set()
    high = 0
    for i in range(0, len(raw), 2):
        op, arg = raw[i], raw[i + 1] | high
        if op == extended:
            high = arg << 8
            continue
        high = 0
        if op in stores:
            bound.add(names[arg])
    return bound


# --------------------------------------------------------------------------------------------
# Startup
# --------------------------------------------------------------------------------------------


def take_channel() -> tuple[_Channel, dict[int, tuple[int, int]]]:
    """Move the protocol off fd 0/1 and point fd 0 at /dev/null and fd 1/2 at capture pipes.

    Returns the channel and, per target fd, the capture pipe's read end and a private copy of
    its write end (used to put fd 1/2 back if a cell moves them).
    """
    channel = _Channel(os.dup(0), os.dup(1), os.dup(2))  # os.dup: non-inheritable copies
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    pipes: dict[int, tuple[int, int]] = {}
    for target in (1, 2):
        read, write = os.pipe()
        _wire.enlarge_pipe(write)
        os.set_blocking(read, False)
        os.dup2(write, target)  # inheritable, so child processes write into the capture too
        pipes[target] = (read, write)
    return channel, pipes


def apply_isolation(config: dict[str, Any]) -> list[str]:
    """Narrow what the model's code can do, before any of it runs; the layers applied.

    Dies with its parent (the SDK process, or the fork server), then applies the init frame's
    sandbox policy (``_sandbox.apply_sandbox``): resource limits always, and in ``auto`` or
    ``strict`` mode no_new_privs, a network namespace, dropped capabilities, Landlock and
    seccomp. Those layers bind only the calling thread, so this runs while the process has a
    single thread (the output and channel threads start after it); keep it that way.

    Raises:
        SandboxUnavailable: strict mode, and the host lacks a layer.
        SandboxError: a layer failed half-way, or the process has more than one thread.
    """
    _wire.die_with_parent(int(config["parent_pid"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG instead
    layers: list[str] = _sandbox.apply_sandbox(config["sandbox"])
    return layers


def main() -> None:
    """Start, load the context, and serve until the parent goes away."""
    channel, pipes = take_channel()
    try:
        _start(channel, pipes)
    except BaseException as exc:
        channel.diag(f"fatal: {type(exc).__name__}: {exc}")
        os._exit(1)


def _start(channel: _Channel, pipes: dict[int, tuple[int, int]]) -> None:
    import faulthandler

    faulthandler.enable(channel.diag_fd())  # a segfault leaves a Python traceback in the log
    gate = _Gate()
    signal.signal(signal.SIGINT, gate.on_sigint)
    config = channel.read()
    if config is None:
        os._exit(0)
    started = time.perf_counter()
    try:
        if config["type"] != "init" or config.get("protocol") != _wire.PROTOCOL_VERSION:
            raise ValueError(f"expected an init frame for protocol {_wire.PROTOCOL_VERSION}")
        _take_environment(config)
        try:
            layers = apply_isolation(config)
        except _sandbox.SandboxError as exc:
            channel.send({"type": "fatal", "kind": "isolation", "message": str(exc)})
            os._exit(1)
        descriptor = dict(config["context"])
        fd = descriptor.get("fd")
        # The (sealed, read-only) memfd stays open for the worker's life: whichever process
        # lets go of it last frees its pages, and that should be this one, as it exits after
        # a SIGKILL, not the parent on its way to returning a result.
        context = _wire.load_context(-1 if fd is None else int(fd), descriptor)
        if descriptor["kind"] == "files":  # files on disk: read when the code asks
            context = _documents.from_manifest(context)  # type: ignore[arg-type]
        _install_builtins()
        output = _capture.Output(int(config["output_limit"]), pipes)
        session = _Session(channel, gate, output, context, config)
        del context
        for entry in config.get("contexts") or ():  # a restart in a session that added some
            session.load_extra(entry)
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        channel.send({"type": "fatal", "kind": "start", "message": message})
        os._exit(1)
    ready = {"load_s": time.perf_counter() - started, "isolation": layers}
    channel.send({"type": "ready", "protocol": _wire.PROTOCOL_VERSION, **ready})
    session.serve()


def _take_environment(config: dict[str, Any]) -> None:
    """Move into the session's directory and environment (a forked worker starts in neither)."""
    env, cwd = config["env"], config["cwd"]
    if not isinstance(cwd, str) or not isinstance(env, dict):
        raise ValueError("the init frame's env and cwd are malformed")
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update({str(key): str(value) for key, value in env.items()})


def _install_builtins() -> None:
    """``exit()``/``quit()`` raise SystemExit without closing stdin (the cell reports it)."""

    def exit(code: object = None) -> None:
        raise SystemExit(code)

    builtins.__dict__["exit"] = builtins.__dict__["quit"] = exit


if __name__ == "__main__":
    main()
