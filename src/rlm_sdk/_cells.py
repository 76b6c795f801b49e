"""How a cell's result reads to the model: its output and its error as the prompt shows them."""

from __future__ import annotations

from typing import Any

from .repl import CellError, CellResult


def error_text(error: CellError) -> str:
    """The error as the model sees it: the traceback, ending with ``Type: message``."""
    text = f"{error.type}: {error.message}"
    if error.traceback:
        text = (
            f"{error.traceback.rstrip()}\n{text}"
            if error.type not in error.traceback
            else error.traceback
        )
    return text


def cell_view(cell: CellResult) -> dict[str, Any]:
    """A cell's result as the protocol's prompts take it."""
    return {
        "notice": cell.notice,
        "stdout": cell.stdout,
        "stderr": cell.stderr,
        "error": None if cell.error is None else error_text(cell.error),
        "restarted": cell.restarted,
    }
