"""The items of a batch file, as both batch engines read them.

One JSON object per line: ``context`` (text) or ``context_file`` (a path relative to the
file), with optional ``id`` (the line number by default), ``query`` and ``options``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_batch_file(src: Path, query: str | None) -> list[dict[str, Any]]:
    """Each line's item: ``id``, ``query``, and ``context`` or ``path`` (resolved), plus
    ``options`` when the line has them. A bad line is a ``SystemExit`` naming it."""
    try:
        lines = src.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise SystemExit(f"rlm-sdk: cannot read {src}: {err.strerror}") from err
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"rlm-sdk: {src}:{n}: not JSON ({err.msg})") from err
        if not isinstance(raw, dict) or not ("context" in raw or "context_file" in raw):
            raise SystemExit(f"rlm-sdk: {src}:{n}: an item needs 'context' or 'context_file'")
        item: dict[str, Any] = {"id": str(raw.get("id", n)), "query": raw.get("query", query)}
        if "context_file" in raw:
            item["path"] = str((src.parent / str(raw["context_file"])).resolve())
        else:
            item["context"] = raw["context"]
        if raw.get("options") is not None:
            item["options"] = raw["options"]
        items.append(item)
    return items
