"""Request bodies as JSON bytes, fast for the long prompts sub-calls carry.

The standard library's C encoder escapes a string one character at a time: about 0.3 ms for a
120 kB prompt, which a fan-out of 32 sub-calls pays on its critical path. Most prompts are
ASCII text whose only characters needing an escape are newlines; for those, ``bytes`` methods
that run at memory speed do the same work in half the time. Everything else (short strings,
other text, the rest of the body) goes through :func:`json.dumps` as before, and the output is
ASCII JSON either way: ``json.loads(encode_json(body)) == body``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

__all__ = ["encode_json"]

_FAST_MIN_CHARS = 8192
"""Strings shorter than this are left to the C encoder (the fast path's fixed cost)."""
_NEEDS_ESCAPE = bytes(b for b in range(32) if b != 0x0A) + b'"\\'
_NONCE = secrets.token_hex(8)
"""Part of every placeholder, so that no text a caller sends can look like one."""


def encode_json(body: dict[str, Any]) -> bytes:
    """``json.dumps(body, separators=(",", ":"), allow_nan=False).encode()``, faster."""
    long_texts: list[bytes] = []
    skeleton = _swap_long_texts(body, long_texts)
    data = json.dumps(skeleton, separators=(",", ":"), allow_nan=False).encode()
    for i, text in enumerate(long_texts):
        data = data.replace(_placeholder(i), text, 1)
    return data


def _placeholder(i: int) -> bytes:
    """How the encoder writes the string standing in for long text number ``i``."""
    return json.dumps(f"\x00{_NONCE}:{i}\x00").encode()


def _swap_long_texts(value: Any, out: list[bytes]) -> Any:
    """``value`` with each long ASCII string that only needs newlines escaped replaced by a
    placeholder string; the escaped text is appended to ``out``."""
    if isinstance(value, str):
        if len(value) >= _FAST_MIN_CHARS and value.isascii():
            raw = value.encode("ascii")
            if len(raw.translate(None, _NEEDS_ESCAPE)) == len(raw):
                out.append(b'"' + raw.replace(b"\n", b"\\n") + b'"')
                return f"\x00{_NONCE}:{len(out) - 1}\x00"
        return value
    if isinstance(value, dict):
        return {key: _swap_long_texts(item, out) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_swap_long_texts(item, out) for item in value]
    return value
