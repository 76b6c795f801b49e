"""What a cell prints, captured in the worker: bounded, whoever writes it and however.

Why a module of its own: the model's code prints through ``sys.stdout`` and ``sys.stderr``,
writes to fd 1 and 2 directly, and starts processes that inherit them. All of it must reach
the cell's result, none of it may reach the protocol channel, and a cell printing a gigabyte
must not make the worker grow. So ``sys.stdout``/``sys.stderr`` are text streams whose raw
layer decodes into bounded sinks (no syscalls), fd 1 and 2 are pipes a thread drains into the
same sinks, and each sink keeps only the head and the tail of its stream.

Part of the worker program, so stdlib-only (see ``_worker.py``, which imports it as a sibling).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import select
import signal
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING or __package__:  # imported from the package (tests, type checking)
    from . import _wire
else:  # run in the worker, outside the package: a sibling, as _worker.py explains
    import _wire

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["CUT_MARKER", "Output", "Sink", "Utf8Decoder"]

CUT_MARKER = "\n... [{cut} characters cut] ...\n"


class Sink:
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


class Output:
    """What a cell prints: ``sys.stdout``/``sys.stderr``, and bytes anyone writes to fd 1 and 2.

    ``sys.stdout``/``sys.stderr`` are ordinary text streams whose raw layer writes into bounded
    sinks (no syscalls, so printing a gigabyte costs little); fd 1 and 2 are pipes drained by a
    thread into the same sinks, so ``os.write(1, ...)`` and child processes are captured too, and
    memory stays bounded either way.
    """

    def __init__(self, limit: int, pipes: dict[int, tuple[int, int]]) -> None:
        self.lock = threading.Lock()
        self.sinks = {1: Sink(limit), 2: Sink(limit)}
        self._pipes = pipes
        self._targets = {read: target for target, (read, _) in pipes.items()}
        self._decoders = {read: Utf8Decoder() for read in self._targets}
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
                data = os.read(read, _wire.PIPE_SIZE)
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

    def __init__(self, output: Output, target: int) -> None:
        super().__init__()
        self._output = output
        self._target = target
        self._decoder = Utf8Decoder()

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


class Utf8Decoder:
    """Incremental UTF-8 decoding straight from a buffer (the stdlib one copies every input)."""

    def __init__(self) -> None:
        self._pending = b""

    def decode(self, data: ReadableBuffer) -> str:
        buffer: ReadableBuffer = self._pending + bytes(data) if self._pending else data
        text, used = codecs.utf_8_decode(buffer, "replace", False)
        self._pending = bytes(memoryview(buffer)[used:])
        return text
