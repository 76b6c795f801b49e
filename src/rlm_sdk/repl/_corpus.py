"""Files on disk as a run's context: listed here, read only by the worker, and only as needed.

A corpus can be far larger than memory (a folder of 100,000 documents, a 1 GB dump). Reading
it into this process, or copying it into the worker's memfd, would cost its whole size twice
before the model has looked at anything. So this process only lists the files (names, paths,
sizes: one ``stat`` each); the list travels in the memfd, the sandbox lets the worker read
exactly those files (or the folder given), and the worker's ``context`` reads a document when
the model's code touches it (``_documents.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_sdk._exceptions import ConfigurationError

__all__ = ["Corpus", "CorpusFile", "is_paths"]

_SAMPLE_NAMES = 5


@dataclass(frozen=True, slots=True)
class CorpusFile:
    """One file of a corpus: its name for the model, its absolute path, and its size in bytes."""

    name: str
    path: str
    size: int


class Corpus:
    """Files given as a context: one file, a folder (read recursively) or a list of files.

    In the REPL, one file is a ``str``-like view of it, and anything else a list-like
    collection of documents, each read when the model's code asks for it (see
    ``docs/concepts/repl.md``). Pass a :class:`pathlib.Path` (or a list of them) as the
    context and the run makes one; build one yourself to check what a run will see.

    Raises:
        ConfigurationError: a path that does not exist, or a folder with no file in it.
    """

    def __init__(self, source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> None:
        if isinstance(source, str | os.PathLike):
            path = Path(source).resolve()
            if path.is_dir():
                self.files = tuple(_walk(path))
                self.roots: tuple[str, ...] = (str(path),)
                self.single = False
                if not self.files:
                    raise ConfigurationError(f"the folder {path} holds no file")
                return
            self.files = (_file(path, path.name),)
            self.roots = (str(path),)
            self.single = True
            return
        paths = [Path(p).resolve() for p in source]
        if not paths:
            raise ConfigurationError("an empty list of paths is not a context")
        self.files = tuple(_file(p, str(p)) for p in paths)
        self.roots = tuple(f.path for f in self.files)
        self.single = False

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"Corpus({len(self.files):,} files, {self.total_bytes:,} bytes)"

    def describe(self) -> str:
        """What the model is told about the context: shape and size, a few names, never text."""
        if self.single:
            file = self.files[0]
            return (
                f"a str-like view of the file {file.name!r}, {_size(file.size)}: slice it, "
                "len() it (bytes), .find() in it, iterate .lines(), or .grep(pattern); "
                "str(context) reads all of it"
            )
        names = ", ".join(repr(f.name) for f in self.files[:_SAMPLE_NAMES])
        more = (
            f", ... ({len(self.files) - _SAMPLE_NAMES:,} more)" if len(self) > _SAMPLE_NAMES else ""
        )
        return (
            f"a list-like collection of {len(self.files):,} documents, {_size(self.total_bytes)} "
            f"in all, each read from disk when used: `doc.name`, `doc.size` (bytes), "
            f"`doc.text`; `context.grep(pattern)` searches them all; names: {names}{more}"
        )

    def manifest(self) -> dict[str, Any]:
        """The list the worker rebuilds ``context`` from (``_wire.write_context``)."""
        return {
            "names": [f.name for f in self.files],
            "paths": [f.path for f in self.files],
            "sizes": [f.size for f in self.files],
            "single": self.single,
        }

    @property
    def largest(self) -> int:
        return max((f.size for f in self.files), default=0)


def is_paths(context: object) -> bool:
    """Whether ``context`` names files: a path, or a non-empty list of paths only."""
    if isinstance(context, os.PathLike):
        return True
    return (
        isinstance(context, list | tuple)
        and bool(context)
        and all(isinstance(item, os.PathLike) for item in context)
    )


def _file(path: Path, name: str) -> CorpusFile:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the context file {path}: {exc.strerror}") from exc
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder: pass it alone, not in a list of files")
    return CorpusFile(name=name, path=str(path), size=stat.st_size)


def _walk(root: Path) -> Iterator[CorpusFile]:
    """Every regular file below ``root``, in name order; symbolic links are not followed."""
    stack = [root]
    found: list[CorpusFile] = []
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    name = os.path.relpath(entry.path, root)
                    found.append(CorpusFile(name, entry.path, entry.stat().st_size))
    found.sort(key=lambda f: f.name)
    return iter(found)


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"
