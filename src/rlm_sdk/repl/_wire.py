"""What the parent and the worker agree on: frames, the context's layout, the process contract.

Both sides import this module: the parent as ``rlm_sdk.repl._wire``, the worker and the fork
server as a plain sibling file (they run as ``python -I`` scripts outside the package, see
``_worker.py``). So it uses the standard library only, and only modules the worker loads
anyway, and anything both sides must agree on is defined here exactly once.

Frames. Each frame is a 4-byte big-endian length and a UTF-8 JSON object with a ``"type"``.
Parent to worker: ``init``, ``exec``, ``get_var``, ``list_vars``, ``add_context``,
``call_result``, ``tool_result``. Worker to parent: ``ready``, ``fatal``, ``result``, ``var``, ``vars``,
``call``, ``tool``. Big strings (sub-call prompts and answers, long texts) would
spend most of their time in JSON escaping, so a frame whose length has the top bit set is
*segmented*: a 4-byte header length, a JSON header in which ``"$segments"`` maps each big field
to the UTF-8 byte lengths of its string (or list of strings), then those raw bytes. Both sides
check that the lengths add up exactly and decode strictly. Nothing is ever pickled. Both sides
read frames with one :class:`FrameReader`; only their waiting differs. For typed answers, a
``result`` whose final answer is a value other than text also carries ``final_json`` (the
value as JSON), and a ``get_var`` sent with ``"json": true`` is answered with ``value_json``;
frames without them are unchanged.

The context. The parent writes it once into a sealed memfd (:func:`write_context`) and the
worker maps it (:func:`load_context`); a ``list[str]`` is laid out as joined text, so no item
is JSON-escaped. A context added to a live session (``add_context``, answered by a
``result``) has the same layout in a file of the session's directory, since a running worker
cannot be handed a new descriptor through its pipes; ``init`` lists those files too, so a
restarted worker loads them again.

The process contract. A worker leads a process group of its own, so killing the group
(:func:`kill_group`) takes everything it started; it dies with the process that started it
(:func:`die_with_parent`); and it lives in a private directory whose name carries
``WORKDIR_PREFIX`` (:func:`make_workdir`), the only kind the fork server agrees to remove.

Non-blocking I/O on both sides never waits inside ``except BlockingIOError:``. A coroutine
suspended in a handler keeps the handled exception as its context; if it is then cancelled,
the cancellation's traceback and that exception form a reference cycle holding every frame
of the stack, and so whatever those frames hold, until the cyclic garbage collector runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import mmap
import os
import signal
import struct
from array import array

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Generator
    from typing import Any

# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------

PROTOCOL_VERSION = 3
HEADER_SIZE = 4
MAX_FRAME_SIZE = 256 * 1024 * 1024
"""Largest frame either side accepts; sub-call prompts may carry big chunks of the context."""
SEGMENT_MIN_CHARS = 32 * 1024
"""A string field (or list of strings) at least this long travels as raw segments, not JSON."""
SEGMENTS_KEY = "$segments"
MAX_TEXT_CHARS = MAX_FRAME_SIZE // 4 - 4096
"""Longest text the worker puts in one frame (a variable's value, a final answer)."""
READ_AHEAD = 64 * 1024
"""Bytes read at once for small frames: a burst of them costs one ``read`` per this many."""
PIPE_SIZE = 1024 * 1024
"""Capacity asked of the channel and capture pipes: fewer wake-ups for big frames and writes."""
RESERVED_NAMES = (
    "context",
    "llm_query",
    "llm_query_batched",
    "rlm_query",
    "rlm_query_batched",
    "FINAL_VAR",
    "FINAL",
    "SHOW_VARS",
)
"""Names the worker restores after every cell; tool names are reserved as well."""
ANSWER_NAME = "answer"

_HEADER = struct.Struct(">I")
_SEGMENTED = 0x8000_0000
_IOV_MAX = 1024


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


class FrameReader:
    """Cuts a byte stream into frames, whatever does the reading (the I/O is the caller's).

    Both ends read frames the same way: small ones through a ``READ_AHEAD`` buffer, so a burst
    of small frames costs one ``read`` per 64 KiB, and a big one straight into one buffer of
    its size, not joined from chunks. Only the waiting differs: the worker blocks in a thread,
    the parent waits on its event loop. So :meth:`read_frame` is a generator: it yields the
    buffer the next read should fill and is sent how many bytes the read put there (never 0:
    at the end of the stream the caller stops). A generator costs about a microsecond per
    frame; a round trip costs hundreds.
    """

    __slots__ = ("_chunk", "_pending")

    def __init__(self) -> None:
        self._pending = bytearray()
        self._chunk = memoryview(bytearray(READ_AHEAD))

    def read_frame(self) -> Generator[memoryview, int, tuple[bool, bytes | bytearray]]:
        """Reads one frame: whether it is segmented, and its payload.

        Raises:
            FrameTooLargeError: the header announces more than ``MAX_FRAME_SIZE`` bytes (the
                stream cannot be trusted after that).
        """
        header = yield from self._exactly(HEADER_SIZE)
        size = frame_size(header)
        if size > MAX_FRAME_SIZE:
            raise FrameTooLargeError(f"a {size}-byte frame exceeds {MAX_FRAME_SIZE} bytes")
        payload = yield from self._exactly(size)
        return is_segmented(header), payload

    def _exactly(self, size: int) -> Generator[memoryview, int, bytes | bytearray]:
        pending = self._pending
        if size <= READ_AHEAD:
            while len(pending) < size:
                got = yield self._chunk
                pending += self._chunk[:got]
            data = bytes(pending[:size])
            del pending[:size]
            return data
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = len(pending)
        view[:done] = pending
        pending.clear()
        while done < size:
            done += yield view[done:]
        return buffer


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


def enlarge_pipe(fd: int) -> None:
    """Ask for a ``PIPE_SIZE`` pipe buffer (best effort: the system may cap it)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


# --------------------------------------------------------------------------------------------
# The context's layout in its memfd
# --------------------------------------------------------------------------------------------

CONTEXT_SEPARATOR = "\x00"
"""Joins the items of a ``list[str]`` context when no item contains it."""
CONTEXT_FD = 3
"""Where a worker forked by the fork server finds the context memfd."""
_CONTEXT_CHUNK = 4 * 1024 * 1024
_LINES_BATCH = 4096


def write_files(fd: int, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the list of a corpus's files (names, paths, sizes), not their contents (parent side)."""
    data = json.dumps(manifest, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _write_all(fd, memoryview(data), 0)
    return {"kind": "files", "nbytes": len(data), "count": len(manifest["names"])}


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
            if kind in ("json", "files"):  # "files": the worker builds documents from it
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
# The process contract
# --------------------------------------------------------------------------------------------

WORKDIR_PREFIX = "rlm-repl-"
"""Session directories are made with this prefix; the fork server removes no other kind."""
_SMALL_WORKDIR = 64
_PR_SET_PDEATHSIG = 1


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads: a worker and everything it started.

    A group that does not exist yet (the worker has not made it) can hold only the worker,
    which is then killed alone. A zombie leader still holds its group id, so this is also how
    what is left of a group dies after its leader exited, before it is reaped.
    """
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def die_with_parent(parent_pid: int) -> None:
    """Be SIGKILLed when the thread that started this process exits (``PR_SET_PDEATHSIG``).

    Exits at once if the parent ``parent_pid`` is already gone (it died before the call).
    """
    global _prctl
    if _prctl is None:  # once per process: a forked worker finds it ready
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)


_prctl: Any = None


def make_workdir(base: str) -> str:
    """A new private directory (mode 0700) in ``base``, named ``WORKDIR_PREFIX`` + random hex.

    What ``tempfile.mkdtemp`` does, at a third of its cost (and without importing it): the
    name's randomness comes from the OS in one call.
    """
    while True:
        path = os.path.join(base, WORKDIR_PREFIX + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def is_workdir(path: object) -> bool:
    """A session directory: an absolute path whose last part has the prefix, nothing else."""
    return (
        isinstance(path, str)
        and os.path.isabs(path)
        and os.path.basename(path).startswith(WORKDIR_PREFIX)
    )


def remove_small_directory(path: str) -> bool:
    """Remove ``path`` if it holds only a few plain files; False when it needs ``rmtree``.

    Most sessions leave their directory empty or nearly so, and this costs a few syscalls
    where ``shutil.rmtree`` costs an import and a walk; each side has its own fallback.
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
