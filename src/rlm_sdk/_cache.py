"""An opt-in cache for sub-calls: the stores, the key, and the one-request-per-prompt rule.

``RecursiveLM(cache=...)`` answers a repeated ``llm_query`` from a store instead of the
model. Three pieces, kept apart so a user can replace the first:

* a **store** (:class:`CacheStore`): text values under text keys, nothing more. The SDK
  ships :class:`MemoryCache` (an LRU dict) and :class:`SQLiteCache` (one SQLite file in WAL
  mode, shared by every process that opens it). A store that fails — a garbage file, a
  malformed database, a full disk, a user store that raises — is a miss, logged, never a
  failed run.
* the **key** (:func:`cache_key`): a SHA-256 of a canonical JSON form of everything that
  shapes a reply: the provider (its name and base URL), the model, the messages and the
  sampling options. Message texts enter as their own digests, so a 100 kB chunk is hashed
  once and never escaped into JSON.
* :class:`SubCallCache`: what the run loop talks to. Identical prompts in flight at once
  make one request (single-flight); the others wait for it and share its reply. A request
  that fails or is cancelled shares nothing: the next waiter takes over and makes its own
  request, so an error is never handed on nor stored.

Only what the run loop routes here is cached: the plain completions behind ``llm_query``
and ``llm_query_batched`` (and ``rlm_query`` where it is a plain completion). Root and
child turns are not: a turn's reply drives code, and replaying it would replay the run.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
import anyio.lowlevel
from pydantic import ValidationError

from ._exceptions import ConfigurationError
from ._logging import get_logger
from .providers import ChatMessage, CompletionRequest, CompletionResponse, Provider, TokenUsage

if TYPE_CHECKING:
    from ._budget import Budget

__all__ = [
    "CacheStore",
    "MemoryCache",
    "SQLiteCache",
    "SubCallCache",
    "cache_key",
    "make_cache",
    "through_cache",
]

_KEY_VERSION = 1
"""Part of every key: raising it orphans every entry stored under an older key form."""

_TABLE = "rlm_sdk_sub_calls"
_COLUMNS = ("key", "value", "stored_at")

_log = get_logger(component="cache")


@runtime_checkable
class CacheStore(Protocol):
    """Where cached sub-call replies live: text values under text keys.

    Implement both methods to plug in your own store (a dict, Redis, a key-value service).
    Keys are 64 hex digits; values are JSON text the SDK wrote and reads back. A store may
    forget any entry at any time; what it raises is logged and read as a miss.
    """

    async def get(self, key: str) -> str | None:
        """The value stored under ``key``, or ``None``."""
        ...

    async def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any older value."""
        ...


class MemoryCache:
    """A :class:`CacheStore` in this process's memory, least recently used entries dropped first.

    Shared by every run of the :class:`~rlm_sdk.RecursiveLM` it is given to (and of any other
    it is given to), gone when the process ends.

    Args:
        max_entries: entries kept; the least recently used go past it.

    Raises:
        ConfigurationError: ``max_entries`` below 1.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"max_entries must be at least 1, not {max_entries!r}")
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()  # sync calls run their own event loops, maybe in threads

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self.max_entries}, entries={len(self)})"

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> str | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    async def set(self, key: str, value: str) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()


class SQLiteCache:
    """A :class:`CacheStore` in one SQLite file, shared by every process that opens it.

    The database runs in WAL mode, so readers never wait for a writer, and writers wait up
    to ``timeout`` seconds for one another. Lookups run on the event loop (a read of an
    indexed row, microseconds); writes run in a worker thread, since a write may wait for
    another process's. Entries are never evicted: delete the file to start over.

    A file that is not a SQLite database, a malformed one or a table of another shape is
    moved aside (to ``<name>.corrupt``) and the store is rebuilt, with a warning; if that
    fails too, the store turns itself off (every lookup a miss) and the runs go on.

    Args:
        path: the database file; made, with its folder, on first use.
        timeout: seconds a write waits for another writer (SQLite's busy timeout).
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        if timeout < 0:
            raise ConfigurationError(f"timeout must be at least 0, not {timeout!r}")
        self.path = Path(path)
        self.timeout = timeout
        self._open_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._pid = 0
        self._broken = False
        self._rebuilt = False

    def __repr__(self) -> str:
        return f"SQLiteCache({str(self.path)!r}, timeout={self.timeout})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout}  # connections stay in this process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], timeout=state["timeout"])  # type: ignore[misc]

    async def get(self, key: str) -> str | None:
        if self._broken:
            return None
        try:
            reader, _ = self._connections()
            with self._read_lock:
                row = reader.execute(f"SELECT value FROM {_TABLE} WHERE key = ?", (key,)).fetchone()
        except (sqlite3.Error, OSError) as err:
            self._failed("read", err)
            return None
        return None if row is None or not isinstance(row[0], str) else row[0]

    async def set(self, key: str, value: str) -> None:
        if self._broken:
            return
        try:
            await anyio.to_thread.run_sync(self._write, key, value)
        except (sqlite3.Error, OSError) as err:
            self._failed("write", err)

    def close(self) -> None:
        """Close this process's connections (the next use opens them again)."""
        with self._open_lock:
            self._close()

    # --- the file ---------------------------------------------------------------------------

    def _write(self, key: str, value: str) -> None:
        _, writer = self._connections()
        with self._write_lock, writer:
            writer.execute(
                f"INSERT OR REPLACE INTO {_TABLE} (key, value, stored_at) VALUES (?, ?, ?)",
                (key, value, time.time()),
            )

    def _connections(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        reader, writer = self._reader, self._writer
        if reader is not None and writer is not None and self._pid == os.getpid():
            return reader, writer
        with self._open_lock:
            if self._reader is None or self._writer is None or self._pid != os.getpid():
                self._reader = self._writer = None  # a forked child must not share them
                self._open()
            assert self._reader is not None and self._writer is not None
            return self._reader, self._writer

    def _open(self) -> None:
        """Open (making or rebuilding the file if needed) both connections."""
        try:
            self._reader, self._writer = self._connect()
        except sqlite3.DatabaseError as err:
            if not _damaged(err):
                raise  # locked, unreadable: a miss now, another try next time
            self._close()
            _log.warning("rlm.cache_rebuilt", path=str(self.path), error=str(err))
            self._move_aside()
            self._reader, self._writer = self._connect()
        self._pid = os.getpid()

    def _connect(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connection()
        try:
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA synchronous=NORMAL")
            with writer:
                writer.execute(
                    f"CREATE TABLE IF NOT EXISTS {_TABLE} (key TEXT PRIMARY KEY, "
                    "value TEXT NOT NULL, stored_at REAL NOT NULL) WITHOUT ROWID"
                )
            columns = tuple(row[1] for row in writer.execute(f"PRAGMA table_info({_TABLE})"))
            if columns != _COLUMNS:  # ours by name, not by shape: an older or foreign table
                _log.warning("rlm.cache_rebuilt", path=str(self.path), columns=list(columns))
                with writer:
                    writer.execute(f"DROP TABLE {_TABLE}")
                    writer.execute(
                        f"CREATE TABLE {_TABLE} (key TEXT PRIMARY KEY, "
                        "value TEXT NOT NULL, stored_at REAL NOT NULL) WITHOUT ROWID"
                    )
            reader = self._connection()
            reader.execute(f"SELECT value FROM {_TABLE} LIMIT 1").fetchall()
        except BaseException:
            writer.close()
            raise
        return reader, writer

    def _connection(self) -> sqlite3.Connection:
        # check_same_thread off: writes run in worker threads, each behind its own lock.
        # ``timeout`` is SQLite's busy timeout: how long a statement waits for a lock.
        return sqlite3.connect(
            self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None
        )

    def _move_aside(self) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with_suffix = self.path.with_name(self.path.name + suffix)
            with_suffix.unlink(missing_ok=True)

    def _close(self) -> None:
        with self._read_lock, self._write_lock:  # no read or write is using them
            for connection in (self._reader, self._writer):
                if connection is not None:
                    connection.close()
            self._reader = self._writer = None

    def _failed(self, what: str, err: Exception) -> None:
        """A read or write failed: rebuild a damaged file once; otherwise a logged miss."""
        _log.warning("rlm.cache_failed", path=str(self.path), action=what, error=str(err))
        if not (isinstance(err, sqlite3.Error) and _damaged(err)):
            return  # busy, locked, disk full: this one lookup or write is lost, nothing more
        with self._open_lock:
            self._close()
            if self._rebuilt:
                self._broken = True
                _log.warning("rlm.cache_disabled", path=str(self.path))
                return
            self._rebuilt = True
            try:
                self._move_aside()
                self._reader, self._writer = self._connect()
                self._pid = os.getpid()
            except (OSError, sqlite3.Error) as again:
                self._close()
                self._broken = True
                _log.warning("rlm.cache_disabled", path=str(self.path), error=str(again))


def _damaged(err: sqlite3.Error) -> bool:
    """Whether SQLite says the file is not a database or is malformed (not busy, not full)."""
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return type(err) is sqlite3.DatabaseError


# --- the key --------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def provider_identity(provider: Provider, model: str) -> str:
    """What names the server behind ``model``: the provider's name and base URL, looked for
    through a :class:`~rlm_sdk.ModelRouter` and wrappers such as
    :class:`~rlm_sdk.RateLimitedProvider` (which name what they wrap ``provider``)."""
    target: Any = provider
    for _ in range(8):
        route = getattr(target, "route", None)
        inner = getattr(target, "provider", None)
        if callable(route):  # a ModelRouter: the provider the model string names
            target = route(model)[0]
        elif isinstance(inner, Provider):
            target = inner
        else:
            break
    name = getattr(target, "name", None) or type(target).__name__
    base_url = getattr(target, "base_url", None)
    return f"{name} {base_url}" if isinstance(base_url, str) else str(name)


def cache_key(provider: str, request: CompletionRequest) -> str:
    """The key of ``request`` sent through ``provider`` (see :func:`provider_identity`).

    A SHA-256 of canonical JSON (sorted keys, no spaces) holding every field of the
    request, message texts by their own digests.
    """
    messages = [_message_form(m) for m in request.messages]
    form = {
        "v": _KEY_VERSION,
        "provider": provider,
        "model": request.model,
        "messages": messages,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
        "tools": None if request.tools is None else [t.model_dump() for t in request.tools],
        "extra_body": request.extra_body,
    }
    canonical = json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _message_form(message: ChatMessage) -> dict[str, Any]:
    form: dict[str, Any] = {"role": message.role, "content": _digest(message.content)}
    if message.tool_calls:
        form["tool_calls"] = [c.model_dump() for c in message.tool_calls]
    if message.tool_call_id is not None:
        form["tool_call_id"] = message.tool_call_id
    return form


# --- the run loop's side ----------------------------------------------------------------------


class _Flight:
    """One request in flight for a key, and the reply it got (``None`` until it succeeds)."""

    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.response: CompletionResponse | None = None


class SubCallCache:
    """A store, read and filled for sub-calls, with one request per key in flight.

    One per :class:`~rlm_sdk.RecursiveLM`, shared by all its runs (so a batch's items share
    their requests too). Flights are kept per event loop: an ``anyio.Event`` belongs to the
    loop it was made in, and each sync call runs a loop of its own.
    """

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self._flights: dict[tuple[object, str], _Flight] = {}

    def __repr__(self) -> str:
        return f"SubCallCache({self.store!r})"

    async def complete(
        self, key: str, ask: Callable[[], Awaitable[CompletionResponse]]
    ) -> tuple[CompletionResponse, bool]:
        """The reply for ``key``: stored, another task's in flight, or ``ask()``'s.

        Returns the reply and whether it came without a request of this call's own.
        """
        slot = (anyio.lowlevel.current_token(), key)
        while True:
            flight = self._flights.get(slot)
            if flight is None:
                break
            await flight.done.wait()
            if flight.response is not None:
                return flight.response, True
            # that request failed or was cancelled: loop, to join a newer one or lead
        flight = self._flights[slot] = _Flight()
        try:
            stored = await self._get(key)
            if stored is not None:
                flight.response = stored
                return stored, True
            response = await ask()
            flight.response = response
            flight.done.set()  # waiters go on now; the flight stays until the store has it
            if _storable(response):
                await self._set(key, response)
            return response, False
        finally:
            flight.done.set()
            del self._flights[slot]

    async def _get(self, key: str) -> CompletionResponse | None:
        try:
            value = await self.store.get(key)
        except Exception as err:  # a user's store: a failure is a miss
            _log.warning("rlm.cache_failed", action="read", error=f"{type(err).__name__}: {err}")
            return None
        if value is None:
            return None
        try:
            return CompletionResponse.model_validate_json(value)
        except ValidationError as err:
            _log.warning("rlm.cache_unreadable", key=key, error=str(err).splitlines()[0])
            return None

    async def _set(self, key: str, response: CompletionResponse) -> None:
        try:
            await self.store.set(key, response.model_dump_json())
        except Exception as err:
            _log.warning("rlm.cache_failed", action="write", error=f"{type(err).__name__}: {err}")


def _storable(response: CompletionResponse) -> bool:
    """Whether a reply may be stored: not an empty one, which is most often a glitch.

    A reply cut at ``max_tokens`` is stored: the key holds ``max_tokens``, and the same
    cap would cut it again.
    """
    return bool(response.text.strip() or response.tool_calls)


class _Settings(Protocol):
    """The parts of a run's settings a sub-call's cache needs (``rlm_sdk._run.RunSettings``)."""

    @property
    def cache(self) -> SubCallCache | None: ...
    @property
    def provider(self) -> Provider: ...
    @property
    def temperature(self) -> float | None: ...
    @property
    def max_tokens(self) -> int | None: ...


async def through_cache(
    settings: _Settings,
    budget: Budget,
    model: str,
    messages: list[ChatMessage],
    ask: Callable[[], Awaitable[CompletionResponse]],
) -> tuple[CompletionResponse, bool]:
    """A sub-call's reply, from the cache when the run has one; and whether it was a hit.

    A hit makes no model call: it is not charged to the budget (calls, tokens, cost), and
    comes back with zero usage; the budget's usage counts it in ``cache_hits`` with the
    cost it saved. ``ask`` must send the same request this function keys (the model, the
    messages, the settings' temperature and ``max_tokens``, no tools).
    """
    cache = settings.cache
    if cache is None:
        return await ask(), False
    request = CompletionRequest(
        model=model,
        messages=messages,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
    key = cache_key(provider_identity(settings.provider, model), request)
    response, hit = await cache.complete(key, ask)
    if not hit:
        return response, False
    budget.record_hit(model, response)
    return response.model_copy(update={"usage": TokenUsage(cost=0.0), "latency_s": 0.0}), True


def make_cache(cache: bool | CacheStore | None) -> SubCallCache | None:
    """``RecursiveLM``'s ``cache`` argument, read: off, a fresh :class:`MemoryCache`, or a store.

    Raises:
        ConfigurationError: anything else.
    """
    if cache is None or cache is False:
        return None
    if cache is True:
        return SubCallCache(MemoryCache())
    if isinstance(cache, CacheStore):
        return SubCallCache(cache)
    raise ConfigurationError(
        "cache must be True, a MemoryCache, a SQLiteCache or another store with async get and "
        f"set, not {cache!r}"
    )
