"""encode_json: byte for byte what json.dumps gives, whichever path a string takes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from rlm_sdk.providers._json import _NONCE, encode_json

LONG = "line of text\n" * 2000  # long ASCII with newlines: the fast path


def _reference(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


@pytest.mark.parametrize(
    "text",
    [
        LONG,
        LONG + 'a "quote"',  # needs more than newline escapes: the C encoder
        LONG + "back\\slash",
        LONG + "tab\there",
        LONG + "\x00nul",
        LONG + "é non-ASCII",
        LONG + "\ud800 lone surrogate",
        "short\ntext",
        f"\x00{_NONCE}:0\x00" + LONG,  # text that looks like a placeholder stays text
    ],
)
def test_same_bytes_as_json_dumps(text: str) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": LONG},
            {"role": "user", "content": text},
            {"role": "user", "content": [LONG, {"nested": (LONG, 1, 2.5, None, True)}]},
        ],
        "temperature": 0.2,
    }
    assert encode_json(body) == _reference(body)
    assert json.loads(encode_json(body)) == json.loads(_reference(body))


def test_non_finite_numbers_are_refused_as_before() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_json({"temperature": math.nan, "messages": [{"content": LONG}]})
