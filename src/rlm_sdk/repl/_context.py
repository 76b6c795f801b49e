"""A session's context on the parent side: written once into a sealed memfd that workers map.

Why a memfd: the context can be hundreds of megabytes, and it must reach every worker of the
session (a restart starts a new one) without travelling through the channel, a prompt or a
second copy in this process. So it is written once into an anonymous file that is then
sealed: no process, the worker included, can change it any more. A big context is written on
a worker thread (encoding 100 MB takes tens of milliseconds and must not stall the event
loop); a short text at once, as the thread hop would cost more. A worker gets the descriptor
at start and maps it (``_wire.load_context``); a restart maps the same file again.

Closing is on every run's critical path, and freeing a big memfd's pages takes milliseconds,
so a big one is closed on a background thread while the session goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from queue import SimpleQueue
from typing import Any

import anyio
import anyio.abc

from rlm_sdk._constants import MIN_WORKER_MEMORY
from rlm_sdk._exceptions import WorkerStartError

from . import _wire
from ._corpus import Corpus
from ._types import ContextData

__all__ = ["SessionContext"]

_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_INLINE_WRITE_CHARS = 256 * 1024
"""A text context up to this long is written in the event loop: a thread hop costs the loop
~0.1 ms of CPU (measured), more than writing 256 KiB into the memfd."""
_BACKGROUND_CLOSE_BYTES = 4 * 1024 * 1024
"""A memfd at least this big is closed on the closer thread (see :meth:`SessionContext.close`)."""
_MEMORY_FACTORS = {"lines": 8, "json": 16}
"""Worker memory per byte of context by layout: Python objects cost more than the bytes."""


class SessionContext:
    """The context of one session: its sealed memfd, and the descriptor workers load it by.

    :meth:`open` starts writing; :meth:`descriptor` waits for the write; :meth:`close`
    releases the memfd. Everything happens in the event loop of the session that owns it.
    """

    def __init__(self, value: ContextData | None) -> None:
        self._value: ContextData | None = value
        self.corpus = value if isinstance(value, Corpus) else None
        """Files the worker reads itself (the sandbox must let it), when the context is some."""
        self.fd: int | None = None
        """The memfd, to hand to each worker; None when there is no context (or once closed)."""
        self._descriptor: dict[str, Any] | None = None
        self._error: Exception | None = None
        self._written: anyio.Event | None = None

    def open(self, tg: anyio.abc.TaskGroup) -> None:
        """Create the memfd and start writing the context into it, in a thread.

        Raises:
            WorkerStartError: the memfd could not be created.
        """
        self._written = anyio.Event()
        if self._value is None:
            self._descriptor = {"kind": "none", "nbytes": 0}
            self._written.set()
            return
        try:
            self.fd = os.memfd_create("rlm-context", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as exc:
            raise WorkerStartError(f"could not create the context memfd: {exc}") from exc
        value = self._value
        if isinstance(value, str | bytes) and len(value) <= _INLINE_WRITE_CHARS:
            self._write_now(self.fd)
        else:
            tg.start_soon(self._write, self.fd)

    @property
    def error(self) -> Exception | None:
        """Why the context could not be written, once that is known."""
        return self._error

    async def descriptor(self) -> dict[str, Any]:
        """The context's layout in the memfd (``_wire.write_context``), once it is written.

        Raises:
            WorkerStartError: the context could not be written (not JSON, out of memory...);
                the original error is its cause.
        """
        assert self._written is not None, "open() first"
        await self._written.wait()
        if self._error is not None:
            error = WorkerStartError(f"the context could not be prepared: {self._error!r}")
            raise error from self._error
        assert self._descriptor is not None
        return self._descriptor

    def memory_limit(self, descriptor: dict[str, Any]) -> int:
        """A worker's default address-space limit: the interpreter, the context, and a few
        working copies of it (``MIN_WORKER_MEMORY`` at least)."""
        if self.corpus is not None:  # a mapped file counts in the address space; two documents
            return max(MIN_WORKER_MEMORY, 2 * self.corpus.largest + 1024**3)
        factor = _MEMORY_FACTORS.get(descriptor["kind"], 4)
        return max(MIN_WORKER_MEMORY, factor * int(descriptor["nbytes"]) + 1024**3)

    async def close(self) -> None:
        """Release the memfd (waiting for the writing thread, shielded); idempotent.

        Call it before killing the worker: while the worker still maps the file, this close
        only drops a reference, and the dying worker frees the pages, off the caller's path.
        """
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if self._written is not None:
            with anyio.CancelScope(shield=True):
                await self._written.wait()  # the thread must be done with the descriptor
        nbytes = int(self._descriptor["nbytes"]) if self._descriptor is not None else 0
        if nbytes < _BACKGROUND_CLOSE_BYTES:
            os.close(fd)
        else:
            _Closer.close(fd)

    async def _write(self, fd: int) -> None:
        assert self._written is not None
        try:
            self._descriptor = await anyio.to_thread.run_sync(_write_sealed, fd, self._value)
        except Exception as exc:
            self._error = exc
        finally:
            self._value = None  # the memfd holds it now; let the caller's copy go
            self._written.set()

    def _write_now(self, fd: int) -> None:
        """:meth:`_write`, in the event loop: for a small text, cheaper than the thread hop."""
        assert self._written is not None
        try:
            self._descriptor = _write_sealed(fd, self._value)
        except Exception as exc:
            self._error = exc
        finally:
            self._value = None
            self._written.set()


def _write_sealed(fd: int, context: object) -> dict[str, Any]:
    """Write the context into the memfd and seal it: from now on nobody can change it."""
    if isinstance(context, Corpus):
        descriptor = _wire.write_files(fd, context.manifest())
    else:
        descriptor = _wire.write_context(fd, context)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    return descriptor


class _Closer:
    """A daemon thread that closes the descriptors handed to it, started on first use.

    Closing the last reference to a memfd frees its pages, about 4 ms for 40 MB, and nothing
    needs to wait for that. Starting a thread per close would cost more than the close when
    the cores are busy, so one thread serves the whole process.
    """

    _queue: SimpleQueue[int] = SimpleQueue()
    _thread: threading.Thread | None = None
    _lock = threading.Lock()

    @classmethod
    def close(cls, fd: int) -> None:
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._run, name="rlm-fd-closer", daemon=True)
                cls._thread.start()
        cls._queue.put(fd)

    @classmethod
    def _run(cls) -> None:
        while True:
            fd = cls._queue.get()
            with contextlib.suppress(OSError):
                os.close(fd)
