"""``context`` for files on disk, inside the worker: read when the model's code asks, not before.

Part of the worker program (standard library only). The parent sends only a list of files
(``_corpus.py``); the sandbox lets the worker read exactly those. A collection of documents is
a sequence whose items read their file on each access to ``.text``, so scanning 10 GB holds
one document at a time; one file is a ``str``-like view over a read-only ``mmap``, so slicing
and searching it touch only the pages they need, and the kernel can drop them again.

Sizes and positions in a file are in bytes, and text is decoded as UTF-8 (invalid bytes
become U+FFFD): a view cannot know character offsets without reading everything before them.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator, Sequence

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Document", "Documents", "FileText", "from_manifest"]

_GREP_LIMIT = 1000
"""Matches ``grep`` returns by default, so one broad pattern cannot flood the output."""


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _pattern(pattern: str | re.Pattern[str]) -> re.Pattern[bytes]:
    text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    flags = pattern.flags & re.IGNORECASE if isinstance(pattern, re.Pattern) else 0
    return re.compile(text.encode("utf-8"), flags)


def _grep_bytes(data: bytes | mmap.mmap, pattern: re.Pattern[bytes], limit: int) -> list[str]:
    """The lines of ``data`` that contain a match, in order, at most ``limit``."""
    lines: list[str] = []
    for match in pattern.finditer(data):
        start = data.rfind(b"\n", 0, match.start()) + 1
        end = data.find(b"\n", match.end())
        line = _decode(data[start : end if end != -1 else len(data)])
        if not lines or lines[-1] != line:
            lines.append(line)
        if len(lines) >= limit:
            break
    return lines


class Document:
    """One file of the context: ``name``, ``size`` (bytes), and ``text``, read on each access."""

    __slots__ = ("name", "path", "size")

    def __init__(self, name: str, path: str, size: int) -> None:
        self.name = name
        self.path = path
        self.size = size

    @property
    def text(self) -> str:
        """The file's text (UTF-8), read now; keep it in a variable to use it twice."""
        with open(self.path, "rb") as f:
            return _decode(f.read())

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def grep(self, pattern: str | re.Pattern[str], limit: int = _GREP_LIMIT) -> list[str]:
        """The lines of this document that match ``pattern`` (a regular expression)."""
        return _grep_bytes(self.read_bytes(), _pattern(pattern), limit)

    def __str__(self) -> str:
        return self.text

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"<Document {self.name!r}, {self.size:,} bytes>"


class Documents(Sequence[Document]):
    """The documents of the context, in name order; each is read only when used."""

    def __init__(self, documents: list[Document]) -> None:
        self._documents = documents
        self._by_name = {d.name: d for d in documents}

    def __len__(self) -> int:
        return len(self._documents)

    def __getitem__(self, index: Any) -> Any:  # an int, a slice, or a document's name
        if isinstance(index, str):
            return self._by_name[index]
        if isinstance(index, slice):
            return Documents(self._documents[index])
        return self._documents[index]

    def __iter__(self) -> Iterator[Document]:
        return iter(self._documents)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._by_name
        return item in self._documents

    @property
    def names(self) -> list[str]:
        return [d.name for d in self._documents]

    @property
    def total_size(self) -> int:
        return sum(d.size for d in self._documents)

    def grep(
        self, pattern: str | re.Pattern[str], limit: int = _GREP_LIMIT
    ) -> list[tuple[str, str]]:
        """``(name, line)`` for every line of every document that matches ``pattern``."""
        compiled = _pattern(pattern)
        found: list[tuple[str, str]] = []
        for doc in self._documents:
            for line in _grep_bytes(doc.read_bytes(), compiled, limit - len(found)):
                found.append((doc.name, line))
            if len(found) >= limit:
                break
        return found

    def __repr__(self) -> str:
        return f"<Documents: {len(self):,} documents, {self.total_size:,} bytes>"


class FileText:
    """A ``str``-like, read-only view of one file, mapped into memory rather than read.

    ``len()``, indexes and slices count bytes; a slice gives a ``str``. ``find``,
    ``count``, ``in``, ``lines()`` and ``grep()`` search the mapping without a copy of the file;
    iterating it gives lines, as iterating a file does. ``str(view)`` (or ``view.read()``)
    reads all of it.
    """

    def __init__(self, name: str, path: str, size: int) -> None:
        self.name = name
        self.path = path
        self._size = size
        self._map: mmap.mmap | None = None
        if size:
            with open(path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)

    def _data(self) -> mmap.mmap | bytes:
        return b"" if self._map is None else self._map

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int | slice) -> str:
        data = self._data()
        if isinstance(index, slice):
            return _decode(data[index])
        if not -self._size <= index < self._size:
            raise IndexError("index out of range")
        at = index % self._size
        return _decode(data[at : at + 1])

    def __iter__(self) -> Iterator[str]:
        """The file's lines, as iterating a file gives them (not its characters)."""
        return self.lines()

    def find(self, sub: str, start: int = 0, end: int | None = None) -> int:
        """The byte offset of ``sub``, or -1."""
        return self._data().find(sub.encode("utf-8"), start, self._size if end is None else end)

    def rfind(self, sub: str, start: int = 0, end: int | None = None) -> int:
        return self._data().rfind(sub.encode("utf-8"), start, self._size if end is None else end)

    def count(self, sub: str) -> int:
        needle, data, found, at = sub.encode("utf-8"), self._data(), 0, 0
        if not needle:
            return self._size + 1
        while (at := data.find(needle, at)) != -1:
            found += 1
            at += len(needle)
        return found

    def __contains__(self, sub: str) -> bool:
        return self.find(sub) != -1

    def lines(self) -> Iterator[str]:
        """The file's lines, one at a time, without their newline."""
        data, at = self._data(), 0
        while at < self._size:
            end = data.find(b"\n", at)
            if end == -1:
                end = self._size
            yield _decode(data[at:end])
            at = end + 1

    def grep(self, pattern: str | re.Pattern[str], limit: int = _GREP_LIMIT) -> list[str]:
        """The lines that match ``pattern`` (a regular expression), in order."""
        return _grep_bytes(self._data(), _pattern(pattern), limit)

    def read(self) -> str:
        return _decode(self._data()[:])

    def __str__(self) -> str:
        return self.read()

    def __repr__(self) -> str:
        return f"<FileText {self.name!r}, {self._size:,} bytes>"


def from_manifest(manifest: dict[str, object]) -> Documents | FileText:
    """``context`` for the list of files the parent sent."""
    names, paths, sizes = manifest["names"], manifest["paths"], manifest["sizes"]
    assert isinstance(names, list) and isinstance(paths, list) and isinstance(sizes, list)
    if manifest.get("single"):
        return FileText(str(names[0]), str(paths[0]), int(sizes[0]))
    return Documents(
        [Document(str(n), str(p), int(s)) for n, p, s in zip(names, paths, sizes, strict=True)]
    )
