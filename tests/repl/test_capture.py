"""Output capture (``repl/_capture.py``) in-process: the bounded sink and the UTF-8 decoder."""

from __future__ import annotations

import pytest

from rlm_sdk.repl import _capture


@pytest.mark.parametrize(
    ("limit", "writes", "kept", "cut"),
    [
        (10, ["abc"], "abc", 0),
        (10, ["0123456789"], "0123456789", 0),
        (10, ["0123456789x"], "01234\n... [1 characters cut] ...\n6789x", 1),
        (10, ["a"] * 30, "aaaaa\n... [20 characters cut] ...\naaaaa", 20),
        (4, ["ab", "cd", "ef" * 100, "gh"], "ab\n... [202 characters cut] ...\ngh", 202),
        (0, ["anything"], "\n... [8 characters cut] ...\n", 8),
    ],
)
def test_sink_keeps_head_and_tail(limit: int, writes: list[str], kept: str, cut: int) -> None:
    """The output sink keeps limit characters (head and tail) and counts the ones cut."""
    sink = _capture.Sink(limit)
    for text in writes:
        sink.add(text)
    assert sink.take() == (kept, cut)
    assert sink.take() == ("", 0)


def test_utf8_decoder_joins_split_characters() -> None:
    """Multi-byte characters split across writes are decoded once they are complete."""
    decoder = _capture.Utf8Decoder()
    data = "é✓".encode()
    assert decoder.decode(data[:1]) == ""
    assert decoder.decode(data[1:3]) == "é"
    assert decoder.decode(memoryview(data[3:])) == "✓"
