"""The REPL worker: the process that holds the context and runs the model's code.

The parent starts this file as a script (``python -I _worker.py``) and never as part of the
``rlm_sdk`` package: importing the package would pull in pydantic and httpx and cost hundreds of
milliseconds on every start, and the worker runs code written by a model, so it should contain as
little as possible. It is therefore self-contained and uses the standard library only. It also
holds the wire format (frames, the context layout in the memfd), which the parent imports from
here, so both sides share one definition.

Two ways to start. Directly, one interpreter per worker, the channel on fd 0/1. Or through the
fork server (``python -I _worker.py --forkserver FD PARENT_PID``, :func:`serve_forks`): one
interpreter that has imported everything a worker needs and loaded the sandbox, and forks a
fresh worker per request in about a millisecond, instead of the ~25 ms of CPU an interpreter
start costs; hundreds of runs starting at once then no longer starve the machine. The fork
server holds no context and no secret: it is started with the scrubbed environment, a request
carries only the worker's descriptors, and the worker takes its environment and directory
from its own init frame (so nothing of one session stays in the server's memory for a later
fork to find).

Startup, in order (:func:`main`):

1. Take the channel: the protocol moves from fd 0/1 (two pipes) to private descriptors,
   fd 0 reads ``/dev/null`` and fd 1/2 become pipes this process drains itself, so ``print``,
   ``os.write(1, ...)`` and child processes can never write into the channel.
2. Say ``hello``, then read the ``init`` frame (context descriptor, sandbox policy, tool names).
3. Apply isolation (:func:`apply_isolation`): death with the parent, then the sandbox layers of
   ``_sandbox.py`` (rlimits, no_new_privs, a network namespace, Landlock, seccomp), while the
   process still has a single thread.
4. Load the context from the sealed memfd, build the namespace, say ``ready`` (with the layers).
5. Serve: run cells, answer variable queries, forward sub-calls and tool calls to the parent.

The wire format: each frame is a 4-byte big-endian length and a UTF-8 JSON object with a
``"type"``. Parent to worker: ``init``, ``exec``, ``get_var``, ``list_vars``, ``call_result``,
``tool_result``. Worker to parent: ``hello``, ``ready``, ``fatal``, ``result``, ``var``, ``vars``,
``call``, ``tool``. Big strings (sub-call prompts and answers, long texts) would spend most of
their time in JSON escaping, so a frame whose length has the top bit set is *segmented*: a
4-byte header length, a JSON header in which ``"$segments"`` maps each big field to the UTF-8
byte lengths of its string (or list of strings), then those raw bytes. Both sides check that
the lengths add up exactly and decode strictly. Nothing is ever pickled.
"""

from __future__ import annotations

import _thread
import builtins
import codecs
import contextlib
import fcntl
import io
import itertools
import json
import mmap
import os
import select
import signal
import struct
import sys
import threading
import time
from _queue import SimpleQueue
from array import array

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import traceback
    from collections.abc import Callable
    from types import CodeType, FrameType, ModuleType
    from typing import Any

    from _typeshed import ReadableBuffer

# --------------------------------------------------------------------------------------------
# Wire format (shared with the parent)
# --------------------------------------------------------------------------------------------

PROTOCOL_VERSION = 2
HEADER_SIZE = 4
MAX_FRAME_SIZE = 256 * 1024 * 1024
"""Largest frame either side accepts; sub-call prompts may carry big chunks of the context."""
SEGMENT_MIN_CHARS = 32 * 1024
"""A string field (or list of strings) at least this long travels as raw segments, not JSON."""
SEGMENTS_KEY = "$segments"
MAX_TEXT_CHARS = MAX_FRAME_SIZE // 4 - 4096
"""Longest text the worker puts in one frame (a variable's value, a final answer)."""
TRACEBACK_CHARS = 3000
"""Characters of a cell's traceback kept (the tail, where the error is)."""
TRACEBACK_FRAMES = 8
MAX_DEFINED_NAMES = 500
CUT_MARKER = "\n... [{cut} characters cut] ...\n"
CONTEXT_SEPARATOR = "\x00"
"""Joins the items of a ``list[str]`` context when no item contains it."""
CONTEXT_FD = 3
"""Where a worker forked by the fork server finds the context memfd."""
RESERVED_NAMES = (
    "context",
    "llm_query",
    "llm_query_batched",
    "rlm_query",
    "rlm_query_batched",
    "FINAL_VAR",
    "SHOW_VARS",
)
"""Names the worker restores after every cell; tool names are reserved as well."""
ANSWER_NAME = "answer"

_HEADER = struct.Struct(">I")
_SEGMENTED = 0x8000_0000
_CONTEXT_CHUNK = 4 * 1024 * 1024
_LINES_BATCH = 4096
_PIPE_SIZE = 1024 * 1024
_READ_CHUNK = 16 * 1024 * 1024
_READ_AHEAD = 64 * 1024
_PR_SET_PDEATHSIG = 1
_IOV_MAX = 1024
_WARM_UP_CELL = 'n = len("warm")\nprint(f"{n:,}", repr("up"[:1]))\nn'
WORKDIR_PREFIX = "rlm-repl-"
"""Session directories are made with this prefix; the fork server removes no other kind."""
_FORK_REPLY_SIZE = 65536
_SMALL_WORKDIR = 64
_ModuleType = type(sys)


class FrameTooLargeError(ValueError):
    """A message does not fit in one frame (``MAX_FRAME_SIZE``)."""


def encode_frame(message: dict[str, Any]) -> bytes:
    """One frame: the length header and the payload of ``message``.

    Top-level string fields (or lists of strings) of ``SEGMENT_MIN_CHARS`` or more travel as
    raw UTF-8 segments; everything else is JSON. Lone surrogates become ``?`` either way.

    Raises:
        FrameTooLargeError: the payload exceeds ``MAX_FRAME_SIZE``.
        TypeError, ValueError: ``message`` is not plain JSON (NaN and infinities included).
    """
    return b"".join(encode_frame_parts(message))


def encode_frame_parts(message: dict[str, Any]) -> list[bytes]:
    """:func:`encode_frame` as a list of byte strings, for ``writev``: no joined copy."""
    table: dict[str, int | list[int]] = {}
    segments: list[bytes] = []
    for key, value in message.items():
        if type(value) is str and len(value) >= SEGMENT_MIN_CHARS:
            data = value.encode("utf-8", "replace")
            table[key] = len(data)
            segments.append(data)
        elif type(value) is list and _is_long_text_list(value):
            encoded = [item.encode("utf-8", "replace") for item in value]
            table[key] = [len(data) for data in encoded]
            segments += encoded
    if table:
        header = {key: value for key, value in message.items() if key not in table}
        header[SEGMENTS_KEY] = table
        head = _json_bytes(header)
        size = HEADER_SIZE + len(head) + sum(map(len, segments))
        _check_size(size)
        return [_HEADER.pack(size | _SEGMENTED) + _HEADER.pack(len(head)) + head, *segments]
    payload = _json_bytes(message)
    _check_size(len(payload))
    return [_HEADER.pack(len(payload)) + payload]


def write_parts(fd: int, parts: list[bytes]) -> None:
    """Write every byte of ``parts`` to the blocking descriptor ``fd``, with ``writev``."""
    views = [memoryview(part) for part in parts if part]
    first = 0
    while first < len(views):
        done = os.writev(fd, views[first : first + _IOV_MAX])
        while done:
            size = len(views[first])
            if done >= size:
                done -= size
                first += 1
            else:
                views[first] = views[first][done:]
                done = 0


def _json_bytes(message: dict[str, Any]) -> bytes:
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace")  # a lone surrogate becomes "?", never invalid UTF-8


def _check_size(size: int) -> None:
    if size > MAX_FRAME_SIZE:
        raise FrameTooLargeError(f"a {size}-byte frame exceeds {MAX_FRAME_SIZE} bytes")


def _is_long_text_list(value: list[Any]) -> bool:
    total = 0
    for item in value:
        if type(item) is not str:
            return False
        total += len(item)
    return total >= SEGMENT_MIN_CHARS


def frame_size(header: bytes | bytearray) -> int:
    """The payload length a frame header announces."""
    size: int = _HEADER.unpack(header)[0]
    return size & ~_SEGMENTED


def is_segmented(header: bytes | bytearray) -> bool:
    """Whether the payload after this header is segmented (see the module docstring)."""
    return bool(_HEADER.unpack(header)[0] & _SEGMENTED)


def decode_segmented(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The message a segmented payload carries, its big fields put back as ``str``.

    Raises:
        ValueError: the header is not a JSON object with a valid ``"$segments"`` table, the
            segment lengths do not add up to the payload exactly, or a segment is not UTF-8.
    """
    view = memoryview(payload)
    if len(view) < HEADER_SIZE:
        raise ValueError("a segmented frame without a header length")
    head_size = frame_size(bytes(view[:HEADER_SIZE]))
    offset = HEADER_SIZE + head_size
    if offset > len(view):
        raise ValueError("a segmented frame's header overruns the frame")
    message = json.loads(bytes(view[HEADER_SIZE:offset]))
    if not isinstance(message, dict):
        raise ValueError("a segmented frame's header is not a JSON object")
    table = message.pop(SEGMENTS_KEY, None)
    if not isinstance(table, dict) or not table:
        raise ValueError("a segmented frame without a segment table")
    sizes_of: dict[str, list[int]] = {}
    total = 0
    for key, sizes in table.items():
        listed = sizes if type(sizes) is list else [sizes]
        if key in message or not all(type(size) is int and size >= 0 for size in listed):
            raise ValueError(f"a bad segment entry for {key!r}")
        sizes_of[key] = listed
        total += sum(listed)
    if offset + total != len(view):
        raise ValueError("the segment lengths do not add up to the frame")
    for key, listed in sizes_of.items():
        texts = []
        for size in listed:
            texts.append(str(view[offset : offset + size], "utf-8"))
            offset += size
        message[key] = texts if type(table[key]) is list else texts[0]
    return message


def write_context(fd: int, context: object) -> dict[str, Any]:
    """Write ``context`` into the empty file ``fd`` and return its descriptor (parent side).

    Layouts: ``str`` as UTF-8; ``bytes`` as is; a ``list`` of ``str`` as its items joined by
    ``CONTEXT_SEPARATOR`` (or, when an item contains it, the items concatenated followed by an
    array of their lengths), so no item is JSON-escaped; any other JSON value as JSON.
    Large texts are encoded in chunks, so this never holds a second full copy of the context.
    """
    if context is None:
        return {"kind": "none", "nbytes": 0}
    if isinstance(context, str):
        return {"kind": "str", "nbytes": _write_text(fd, context, 0)}
    if isinstance(context, bytes | bytearray | memoryview):
        view = memoryview(context).cast("B")
        _write_all(fd, view, 0)
        return {"kind": "bytes", "nbytes": len(view)}
    if isinstance(context, list):
        lines = _write_lines(fd, context)
        if lines is not None:
            return lines
        os.ftruncate(fd, 0)
    data = json.dumps(context, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _write_all(fd, memoryview(data), 0)
    return {"kind": "json", "nbytes": len(data)}


def _write_text(fd: int, text: str, offset: int) -> int:
    written = 0
    for start in range(0, len(text), _CONTEXT_CHUNK):
        data = text[start : start + _CONTEXT_CHUNK].encode("utf-8", "surrogatepass")
        _write_all(fd, memoryview(data), offset + written)
        written += len(data)
    return written


def _write_lines(fd: int, items: list[Any]) -> dict[str, Any] | None:
    """The ``list[str]`` layout, or None when an item is not a ``str``."""
    sep = CONTEXT_SEPARATOR
    offset = 0
    for start in range(0, len(items), _LINES_BATCH):
        batch = items[start : start + _LINES_BATCH]
        try:
            text = sep.join(batch)
        except TypeError:
            return None
        if text.count(sep) != len(batch) - 1:
            return _write_lines_with_lengths(fd, items)
        offset += _write_text(fd, sep + text if start else text, offset)
    return {"kind": "lines", "nbytes": offset, "count": len(items), "lengths": False}


def _write_lines_with_lengths(fd: int, items: list[str]) -> dict[str, Any]:
    os.ftruncate(fd, 0)
    offset = 0
    for start in range(0, len(items), _LINES_BATCH):
        offset += _write_text(fd, "".join(items[start : start + _LINES_BATCH]), offset)
    lengths = array("q", map(len, items))
    _write_all(fd, memoryview(lengths).cast("B"), offset)
    return {"kind": "lines", "nbytes": offset, "count": len(items), "lengths": True}


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done


def load_context(fd: int, descriptor: dict[str, Any]) -> object:
    """Rebuild the context from ``fd`` as :func:`write_context` laid it out (worker side)."""
    kind = descriptor["kind"]
    nbytes = int(descriptor["nbytes"])
    if kind == "none":
        return None
    count = int(descriptor.get("count", 0))
    lengths_nbytes = 8 * count if descriptor.get("lengths") else 0
    total = nbytes + lengths_nbytes
    if total == 0:
        return {"str": "", "bytes": b"", "lines": [""] * count}[kind]
    with mmap.mmap(fd, total, prot=mmap.PROT_READ) as mapped:
        view = memoryview(mapped)
        try:
            if kind == "bytes":
                return bytes(view)
            if kind == "json":
                return json.loads(view.tobytes())
            text = str(view[:nbytes], "utf-8", "surrogatepass")
            if kind == "str":
                return text
            if kind != "lines":
                raise ValueError(f"unknown context kind {kind!r}")
            if not lengths_nbytes:
                items = text.split(CONTEXT_SEPARATOR) if count else []
            else:
                lengths = array("q")
                lengths.frombytes(view[nbytes:total])
                items = [
                    text[a:b]
                    for a, b in itertools.pairwise(itertools.accumulate(lengths, initial=0))
                ]
            if len(items) != count:
                raise ValueError(f"context has {len(items)} items, expected {count}")
            return items
        finally:
            view.release()


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
        self._pending = bytearray()

    def diag(self, text: str) -> None:
        """A line for the parent's log (the original stderr pipe, not the cell's capture)."""
        with contextlib.suppress(OSError):
            os.write(self._diag, f"rlm worker: {text}\n".encode("utf-8", "replace"))

    def diag_fd(self) -> int:
        return self._diag

    def read(self) -> dict[str, Any] | None:
        """The next message, or None when the parent closed the channel."""
        header = self._read_exact(HEADER_SIZE)
        if header is None:
            return None
        size = frame_size(header)
        if size > MAX_FRAME_SIZE:
            raise ValueError(f"frame of {size} bytes from the parent")
        payload = self._read_exact(size)
        if payload is None:
            return None
        message = decode_segmented(payload) if is_segmented(header) else json.loads(payload)
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ValueError("a frame from the parent is not a typed JSON object")
        return message

    def _read_exact(self, size: int) -> bytes | bytearray | None:
        """The next ``size`` bytes, or None at EOF. Reads ahead, so a small frame costs one read."""
        pending = self._pending
        if size <= _READ_AHEAD:
            while len(pending) < size:
                chunk = os.read(self._rfd, _READ_AHEAD)
                if not chunk:
                    return None
                pending += chunk
            data = bytes(pending[:size])
            del pending[:size]
            return data
        buffer = bytearray(size)  # a big frame: read in place instead of joining copies
        view = memoryview(buffer)
        done = len(pending)
        view[:done] = pending
        pending.clear()
        while done < size:
            got = os.readv(self._rfd, [view[done : done + _READ_CHUNK]])
            if not got:
                return None
            done += got
        return buffer

    def send(self, message: dict[str, Any], gate: _Gate | None = None) -> None:
        self.send_frame(encode_frame_parts(message), gate)

    def send_frame(self, parts: list[bytes], gate: _Gate | None = None) -> None:
        held = gate.hold() if gate is not None else False
        try:
            with self._wlock:
                write_parts(self._wfd, parts)
        except OSError:
            os._exit(0)  # the parent is gone
        finally:
            if gate is not None:
                gate.release(held)


# --------------------------------------------------------------------------------------------
# Output capture
# --------------------------------------------------------------------------------------------


class _Sink:
    """Keeps the head and the tail of one stream's text within a budget of characters."""

    def __init__(self, limit: int) -> None:
        self._tail_limit = limit // 2
        self._head_limit = limit - self._tail_limit
        self.reset()

    def reset(self) -> None:
        self._head: list[str] = []
        self._head_room = self._head_limit
        self._tail: list[str] = []
        self._tail_len = 0
        self.total = 0

    def add(self, text: str) -> None:
        size = len(text)
        if not size:
            return
        self.total += size
        if self._head_room:
            part = text[: self._head_room]
            self._head.append(part)
            self._head_room -= len(part)
            if len(part) == size:
                return
            text = text[len(part) :]
        limit = self._tail_limit
        if len(text) >= limit:
            self._tail = [text[len(text) - limit :]]
            self._tail_len = limit
            return
        self._tail.append(text)
        self._tail_len += len(text)
        if self._tail_len > 2 * limit:
            joined = "".join(self._tail)
            self._tail = [joined[len(joined) - limit :]]
            self._tail_len = limit

    def take(self) -> tuple[str, int]:
        """The text kept (with a marker where characters were cut) and how many were cut."""
        head = "".join(self._head)
        tail = "".join(self._tail)
        if len(tail) > self._tail_limit:
            tail = tail[len(tail) - self._tail_limit :]
        cut = self.total - len(head) - len(tail)
        self.reset()
        return (head + CUT_MARKER.format(cut=cut) + tail if cut else head + tail), cut


class _Output:
    """What a cell prints: ``sys.stdout``/``sys.stderr``, and bytes anyone writes to fd 1 and 2.

    ``sys.stdout``/``sys.stderr`` are ordinary text streams whose raw layer writes into bounded
    sinks (no syscalls, so printing a gigabyte costs little); fd 1 and 2 are pipes drained by a
    thread into the same sinks, so ``os.write(1, ...)`` and child processes are captured too, and
    memory stays bounded either way.
    """

    def __init__(self, limit: int, pipes: dict[int, tuple[int, int]]) -> None:
        self.lock = threading.Lock()
        self.sinks = {1: _Sink(limit), 2: _Sink(limit)}
        self._pipes = pipes
        self._targets = {read: target for target, (read, _) in pipes.items()}
        self._decoders = {read: _Utf8Decoder() for read in self._targets}
        self.stdout = self._stream(1)
        self.stderr = self._stream(2)
        threading.Thread(target=self._pump, name="rlm-output", daemon=True).start()

    def _stream(self, target: int) -> io.TextIOWrapper:
        raw = io.BufferedWriter(_RawSink(self, target), 64 * 1024)
        return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace")

    def add(self, target: int, text: str) -> None:
        with self.lock:
            self.sinks[target].add(text)

    def begin_cell(self) -> None:
        """Point fd 1/2 and ``sys.stdout``/``sys.stderr`` back at the capture if code moved them."""
        for target, (_, write) in self._pipes.items():
            os.dup2(write, target)
        if self.stdout.closed:
            self.stdout = self._stream(1)
        if self.stderr.closed:
            self.stderr = self._stream(2)
        sys.stdout = self.stdout
        sys.stderr = self.stderr

    def finish_cell(self) -> tuple[str, int, str, int]:
        """Everything written so far: stdout, characters cut, stderr, characters cut."""
        for stream in (self.stdout, self.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with self.lock:
            for read in self._targets:
                self._drain(read, 1024)
            stdout, stdout_cut = self.sinks[1].take()
            stderr, stderr_cut = self.sinks[2].take()
        return stdout, stdout_cut, stderr, stderr_cut

    def _drain(self, read: int, rounds: int) -> None:
        """Move what is in one pipe into its sink (bounded, in case a writer never stops)."""
        sink = self.sinks[self._targets[read]]
        decoder = self._decoders[read]
        for _ in range(rounds):
            try:
                data = os.read(read, _PIPE_SIZE)
            except BlockingIOError:
                return
            if not data:
                return
            sink.add(decoder.decode(data))

    def _pump(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        poller = select.poll()
        for read in self._targets:
            poller.register(read, select.POLLIN)
        while True:
            for read, _ in poller.poll():
                with self.lock:  # small rounds let the cell's own prints in between
                    self._drain(read, 16)


class _RawSink(io.RawIOBase):
    """The raw layer under ``sys.stdout``/``sys.stderr``: bytes decoded into a bounded sink."""

    def __init__(self, output: _Output, target: int) -> None:
        super().__init__()
        self._output = output
        self._target = target
        self._decoder = _Utf8Decoder()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._target

    def isatty(self) -> bool:
        return False

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data)
        self._output.add(self._target, self._decoder.decode(view))
        return view.nbytes


class _Utf8Decoder:
    """Incremental UTF-8 decoding straight from a buffer (the stdlib one copies every input)."""

    def __init__(self) -> None:
        self._pending = b""

    def decode(self, data: ReadableBuffer) -> str:
        buffer: ReadableBuffer = self._pending + bytes(data) if self._pending else data
        text, used = codecs.utf_8_decode(buffer, "replace", False)
        self._pending = bytes(memoryview(buffer)[used:])
        return text


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
            parts = encode_frame_parts({**message, "id": request_id})
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
        except FrameTooLargeError as exc:
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
        output: _Output,
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
        module = _ModuleType("__main__")
        sys.modules["__main__"] = module
        self.ns: dict[str, Any] = module.__dict__
        self.reserved: dict[str, object] = {"context": context, **self._functions()}
        for name, doc in dict(config.get("tools") or {}).items():
            self.reserved[name] = self._tool(name, doc)
        self.ns.update(self.reserved)
        self.ns[ANSWER_NAME] = {"content": "", "ready": False}

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
            self._final = _text(value)
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
        threading.Thread(target=self._read_loop, name="rlm-channel", daemon=True).start()
        import traceback  # noqa: F401  warm up now, while the parent waits for a model reply

        self._run_warm_up_cell()
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "exec": self.run_cell,
            "get_var": self.get_var,
            "list_vars": self.list_vars,
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

    def _run_warm_up_cell(self) -> None:
        """Run a cell on a copy of the namespace, its result thrown away, before the first
        command: a forked worker's first cell otherwise pays for the interpreter pages it
        copies from the fork server and the caches it fills (about 0.8 ms, measured), and
        this happens while the parent still waits for the model's first reply."""
        import linecache

        ns, cells, final = self.ns, self._cells, self._final
        self.ns = dict(ns)
        try:
            encode_frame_parts(self.run_cell({"id": 0, "code": _WARM_UP_CELL}))
        except Exception as exc:  # harmless: the first real cell just costs a little more
            self._channel.diag(f"warm-up cell failed: {type(exc).__name__}: {exc}")
        finally:
            self.ns, self._cells, self._final = ns, cells, final
            linecache.cache.pop(f"<cell-{cells + 1}>", None)

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
            parts = encode_frame_parts(reply)
        except (TypeError, ValueError) as exc:
            reply = self._fallback(message, "REPLError", f"the reply could not be sent: {exc}")
            parts = encode_frame_parts(reply)
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
        if kind == "get_var":
            return {"type": "var", "id": message["id"], "found": False, "text": None}
        return {"type": "vars", "id": message["id"], "variables": {}}

    # -- cells ---------------------------------------------------------------------------------

    def run_cell(self, message: dict[str, Any]) -> dict[str, Any]:
        code = str(message["code"])
        self._cells += 1
        self._final = None
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
        return {
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
        if ANSWER_NAME not in ns:
            ns[ANSWER_NAME] = {"content": "", "ready": False}

    def _final_answer(self) -> str | None:
        if self._final is not None:
            return self._final[:MAX_TEXT_CHARS]
        answer = self.ns.get(ANSWER_NAME)
        try:
            if isinstance(answer, dict) and answer.get("ready"):
                return _text(answer.get("content", ""))
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
        self._gate.arm()  # a __str__ may loop forever; the deadline still applies
        try:
            text = _text(self.ns[name])
        except KeyboardInterrupt:
            text = f"<str() of {type(self.ns[name]).__name__} was interrupted>"
        finally:
            self._gate.disarm()
        return {"type": "var", "id": message["id"], "found": True, "text": text}

    def list_vars(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"type": "vars", "id": message["id"], "variables": self.variables()}


def _text(value: object) -> str:
    """``str(value)``, bounded to what fits in a frame; never raises for a broken ``__str__``."""
    try:
        text = str(value)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        text = f"<str() of {type(value).__name__} failed: {type(exc).__name__}: {exc}>"
    return text[:MAX_TEXT_CHARS]


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
        frames = [frame for frame in item.stack if frame.filename != __file__]
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
        with contextlib.suppress(OSError):  # a bigger pipe: fewer wake-ups for big writes
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        os.set_blocking(read, False)
        os.dup2(write, target)  # inheritable, so child processes write into the capture too
        pipes[target] = (read, write)
    return channel, pipes


def load_sandbox() -> ModuleType:
    """``_sandbox.py`` from this file's directory, loaded by path (``-I`` keeps it off sys.path)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox.py")
    spec = importlib.util.spec_from_file_location("_rlm_sandbox", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the sandbox from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_isolation(config: dict[str, Any], sandbox: ModuleType) -> list[str]:
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
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != config.get("parent_pid", os.getppid()):
        os._exit(0)  # the parent died before the line above
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG instead
    layers: list[str] = sandbox.apply_sandbox(config["sandbox"])
    return layers


def main(sandbox: ModuleType | None = None) -> None:
    """Start, load the context, and serve until the parent goes away."""
    channel, pipes = take_channel()
    try:
        _start(channel, pipes, sandbox)
    except BaseException as exc:
        channel.diag(f"fatal: {type(exc).__name__}: {exc}")
        os._exit(1)


def _start(
    channel: _Channel, pipes: dict[int, tuple[int, int]], sandbox: ModuleType | None
) -> None:
    import faulthandler

    faulthandler.enable(channel.diag_fd())  # a segfault leaves a Python traceback in the log
    gate = _Gate()
    signal.signal(signal.SIGINT, gate.on_sigint)
    channel.send({"type": "hello", "protocol": PROTOCOL_VERSION, "pid": os.getpid()})
    config = channel.read()
    if config is None:
        os._exit(0)
    started = time.perf_counter()
    try:
        if config["type"] != "init" or config.get("protocol") != PROTOCOL_VERSION:
            raise ValueError(f"expected an init frame for protocol {PROTOCOL_VERSION}")
        _take_environment(config)
        if sandbox is None:
            sandbox = load_sandbox()
        try:
            layers = apply_isolation(config, sandbox)
        except sandbox.SandboxError as exc:
            channel.send({"type": "fatal", "kind": "isolation", "message": str(exc)})
            os._exit(1)
        descriptor = dict(config["context"])
        fd = descriptor.get("fd")
        # The (sealed, read-only) memfd stays open for the worker's life: whichever process
        # lets go of it last frees its pages, and that should be this one, as it exits after
        # a SIGKILL, not the parent on its way to returning a result.
        context = load_context(-1 if fd is None else int(fd), descriptor)
        _install_builtins()
        output = _Output(int(config["output_limit"]), pipes)
        session = _Session(channel, gate, output, context, config)
        del context
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        channel.send({"type": "fatal", "kind": "start", "message": message})
        os._exit(1)
    channel.send({"type": "ready", "load_s": time.perf_counter() - started, "isolation": layers})
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


# --------------------------------------------------------------------------------------------
# The fork server
# --------------------------------------------------------------------------------------------


def serve_forks(control_fd: int, parent_pid: int) -> None:
    """Fork a fresh worker per request on ``control_fd``; reap them and report how they ended.

    A request is one ``SOCK_SEQPACKET`` record: a JSON object (``{"context": bool, "workdir":
    DIRECTORY or null, "tmpdir": DIRECTORY}``) and, by ``SCM_RIGHTS``, a status socket, the
    worker's ends of its two channel pipes (in, out), the write end of its stderr pipe and, when
    ``context`` is true, the context memfd. The worker's private directory is ``workdir`` (a
    restarted worker keeps its session's) or, when null, a new one the server makes in
    ``tmpdir``. Replies go to the status socket: ``{"pid": N, "workdir": DIRECTORY}`` (or
    ``{"error": "..."}``) at once, and ``{"exit": returncode}`` (negative: killed by that
    signal) once the worker is reaped. Each worker leads a process group of its own, set up by
    both sides of the fork so that it exists before its pid is sent. When a worker exits, what
    is left of its group is killed before it is reaped, while the group id cannot be reused.

    A closing session sends ``{"kill": true, "remove": DIRECTORY}`` on the status socket: the
    server kills the worker's group, reaps it and then removes the directory, so closing a
    session costs its event loop one message and never waits for the worker's exit. A status
    socket is kept until the session closes its end.

    The server dies with its parent (``PR_SET_PDEATHSIG``), and on EOF of the control socket it
    kills every worker's process group, reaps them and exits. It stays single-threaded, so
    forking is safe, and holds nothing a worker must not see: no context, no secret.
    """
    import ctypes
    import socket

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sandbox = load_sandbox()
    _warm_up(sandbox)
    control = socket.socket(fileno=control_fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, _no_op)  # a handler, so that SIGCHLD writes to the wakeup fd
    poller = select.poll()
    poller.register(control.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    children = _Children(poller)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_read:
                with contextlib.suppress(OSError):
                    os.read(wake_read, 4096)
                children.reap()
            elif fd == control.fileno():
                try:
                    data, fds, flags, _ = socket.recv_fds(control, 65536, 8)
                except OSError:
                    data, fds, flags = b"", [], 0
                if not data and not fds:
                    children.shutdown()
                    os._exit(0)
                _fork_worker(data, fds, flags, control, children, sandbox)
            else:
                children.on_status(fd)


class _Child:
    """A worker of the fork server, its status socket, and the directory to remove after it."""

    __slots__ = ("alive", "made", "pid", "remove", "status")

    def __init__(self, pid: int, status: socket.socket, made: str | None = None) -> None:
        self.pid = pid
        self.status = status
        self.alive = True
        self.made = made
        """The directory the server made for this worker (not for a restarted one)."""
        self.remove: str | None = None


class _Children:
    """The fork server's bookkeeping: live workers by pid, open status sockets by descriptor."""

    def __init__(self, poller: select.poll) -> None:
        self._poller = poller
        self.alive: dict[int, _Child] = {}
        self._by_fd: dict[int, _Child] = {}

    def sockets(self) -> list[socket.socket]:
        return [child.status for child in self._by_fd.values()]

    def add(self, pid: int, status: socket.socket, made: str | None) -> None:
        child = _Child(pid, status, made)
        self.alive[pid] = child
        status.setblocking(False)
        self._by_fd[status.fileno()] = child
        self._poller.register(status.fileno(), select.POLLIN)

    def on_status(self, fd: int) -> None:
        """Read what a session sent on a status socket; forget the socket at its EOF."""
        child = self._by_fd.get(fd)
        if child is None:
            return
        while True:
            try:
                data = child.status.recv(_FORK_REPLY_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._poller.unregister(fd)
                del self._by_fd[fd]
                child.status.close()
                if child.alive:  # the session went away without closing (cancelled mid-spawn)
                    _kill_group(child.pid)
                    child.remove = child.remove or child.made
                return
            self._on_message(child, data)

    def _on_message(self, child: _Child, data: bytes) -> None:
        """``{"kill": true, "remove": DIRECTORY}``: the session is closing."""
        try:
            message = json.loads(data)
            kill, path = bool(message.get("kill")), message.get("remove")
        except (ValueError, AttributeError):
            return
        if kill and child.alive:
            _kill_group(child.pid)
        if not _is_workdir(path):
            return
        if child.alive:
            child.remove = path
        else:
            _remove_workdir(path)

    def reap(self) -> None:
        """Reap every exited child; kill the rest of a worker's group first, then report."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or not info.si_pid:
                return
            pid = info.si_pid
            child = self.alive.pop(pid, None)
            if child is not None:
                with contextlib.suppress(OSError):  # the zombie still holds the group id
                    os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if child is not None:  # not a directory remover
                self._exited(child, status)

    def _exited(self, child: _Child, status: int) -> None:
        child.alive = False
        if child.status.fileno() >= 0:
            with contextlib.suppress(OSError):
                exit_code = os.waitstatus_to_exitcode(status)
                child.status.send(json.dumps({"exit": exit_code}).encode())
            self.on_status(child.status.fileno())  # a removal asked for meanwhile
        if child.remove is not None:
            _remove_workdir(child.remove)
            child.remove = None

    def shutdown(self) -> None:
        """The parent is gone or done: kill every worker's group, reap them, clean up."""
        for pid in self.alive:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for child in list(self.alive.values()):
            try:
                _, status = os.waitpid(child.pid, 0)
            except ChildProcessError:
                continue
            self._exited(child, status)
        self.alive.clear()
        for fd in list(self._by_fd):
            self.on_status(fd)


def _kill_group(pid: int) -> None:
    """SIGKILL a worker's process group (the worker itself, if the group is not made yet)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _is_workdir(path: object) -> bool:
    """A session directory: an absolute path whose last part has the prefix, nothing else."""
    return (
        isinstance(path, str)
        and os.path.isabs(path)
        and os.path.basename(path).startswith(WORKDIR_PREFIX)
    )


def _make_workdir(spec: dict[str, Any]) -> str:
    """The worker's directory: the session's own (a restart), or a new one (mode 0700)."""
    workdir = spec.get("workdir")
    if workdir is not None:
        if not _is_workdir(workdir):
            raise ValueError("a malformed fork request")
        return str(workdir)
    base = spec.get("tmpdir")
    if not isinstance(base, str) or not os.path.isabs(base):
        raise ValueError("a malformed fork request")
    while True:
        path = os.path.join(base, WORKDIR_PREFIX + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def remove_small_directory(path: str) -> bool:
    """Remove ``path`` if it holds only a few plain files; False when it needs ``rmtree``.

    Shared with the parent, which removes the directory of a worker it started itself.
    """
    try:
        with os.scandir(path) as entries:
            names: list[str] = []
            for entry in entries:
                if len(names) >= _SMALL_WORKDIR or entry.is_dir(follow_symlinks=False):
                    return False
                names.append(entry.name)
        for name in names:
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _remove_workdir(path: str) -> None:
    """Remove a session's directory: at once when small, else in a short-lived child process
    (the server must stay free to fork workers); that child is reaped like the workers."""
    if not remove_small_directory(path) and os.fork() == 0:
        try:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        finally:
            os._exit(0)


def _no_op(signum: int, frame: FrameType | None) -> None:
    """A signal handler that does nothing; the wakeup fd does the work."""


def _warm_up(sandbox: ModuleType) -> None:
    """Import now what every worker would import later, so a fork inherits it ready."""
    import ast  # noqa: F401
    import faulthandler  # noqa: F401
    import linecache  # noqa: F401
    import opcode  # noqa: F401
    import resource  # noqa: F401
    import traceback  # noqa: F401

    sandbox.probe()  # loads libc and libseccomp, so a worker's sandbox finds them mapped
    import gc

    gc.freeze()  # the collector leaves what exists now alone: fewer pages copied after a fork


def _fork_worker(
    data: bytes,
    fds: list[int],
    flags: int,
    control: socket.socket,
    children: _Children,
    sandbox: ModuleType,
) -> None:
    """Handle one request: fork the worker and answer on its status socket."""
    import socket

    status: socket.socket | None = None
    try:
        if flags & socket.MSG_CTRUNC or len(fds) < 4:
            raise ValueError("a fork request without its descriptors")
        status = socket.socket(fileno=fds[0])
        spec = json.loads(data)
        has_context = spec["context"]
        if not isinstance(has_context, bool) or len(fds) != 4 + has_context:
            raise ValueError("a malformed fork request")
        workdir = _make_workdir(spec)
        made = spec.get("workdir") is None
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            if made:
                _remove_workdir(workdir)
            raise
        if pid == 0:
            try:
                inherited = [control, status, *children.sockets()]
                _become_worker(server, fds[1:], inherited, sandbox)
            finally:
                os._exit(1)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        for fd in fds[1:] if status is not None else fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if status is not None:
            with contextlib.suppress(OSError):
                status.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            status.close()
        return
    with contextlib.suppress(OSError):  # here too, so the group exists when the pid is sent
        os.setpgid(pid, pid)
    for fd in fds[1:]:
        os.close(fd)
    children.add(pid, status, workdir if made else None)
    with contextlib.suppress(OSError):  # the parent gave up: the worker ends at its channel's EOF
        status.send(json.dumps({"pid": pid, "workdir": workdir}).encode())


def _become_worker(
    server: int,
    fds: list[int],
    inherited: list[socket.socket],
    sandbox: ModuleType,
) -> None:
    """In the forked child: shed the server's state, take the request's descriptors, run."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sock in inherited:
        sock.detach()  # closed below with every other descriptor of the server
    os.setpgid(0, 0)  # its own process group (the server does the same, against the race)
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server:
        os._exit(0)
    # fd 0: the channel's pipe in, 1: its pipe out, 2: stderr, 3: the context
    placed = list(fds)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in placed]
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    os.closerange(len(moved), 2**31 - 1)
    os.environ.clear()  # the init frame brings the worker's own
    sys.argv[1:] = []
    main(sandbox)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--forkserver"]:
        serve_forks(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
