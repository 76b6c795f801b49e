"""The wire format and the worker's building blocks, in-process (no worker started)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

import rlm_sdk.repl
from rlm_sdk import WorkerProtocolError
from rlm_sdk.repl import _client, _worker
from rlm_sdk.repl._types import WORKER_FRAMES, CallFrame, ResultFrame


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = os.memfd_create("test-context", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    yield fd
    os.close(fd)


@pytest.mark.parametrize(
    "context",
    [
        None,
        "",
        "ascii",
        "ünïcödé ✓ \U0001f600 \ud800",
        "x" * (3 * 4 * 1024 * 1024 + 17),
        b"",
        b"\x00\x01\xff",
        bytearray(b"mutable"),
        [],
        [""],
        ["a", "", "b"],
        ["has\x00nul", "", "x\x00"],
        [f"line {i}" for i in range(10_000)],
        [1, "mixed", None],
        {"k": {"nested": [1.5, True]}},
    ],
)
def test_context_layouts_round_trip(memfd: int, context: object) -> None:
    """write_context and load_context agree on every kind (bytes-likes come back as bytes)."""
    descriptor = _worker.write_context(memfd, context)
    loaded = _worker.load_context(memfd, descriptor)
    expected = bytes(context) if isinstance(context, bytearray) else context
    assert loaded == expected
    assert type(loaded) is type(expected)


def test_list_of_str_avoids_json(memfd: int) -> None:
    """A list of strings is laid out as joined text (no JSON escaping), with lengths if needed."""
    plain = _worker.write_context(memfd, ['a"b', "c\\d"])
    assert plain == {"kind": "lines", "nbytes": 7, "count": 2, "lengths": False}
    assert os.pread(memfd, 100, 0) == b'a"b\x00c\\d'


def test_frames_are_length_prefixed_json() -> None:
    """A frame is a 4-byte big-endian length and compact UTF-8 JSON; NaN is refused."""
    frame = _worker.encode_frame({"type": "x", "text": "é"})
    assert frame[:4] == (len(frame) - 4).to_bytes(4, "big")
    assert frame[4:] == '{"type":"x","text":"é"}'.encode()
    assert _worker.frame_size(frame[:4]) == len(frame) - 4
    with pytest.raises(ValueError, match="JSON"):
        _worker.encode_frame({"type": "x", "value": float("nan")})


def test_oversized_frames_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message larger than MAX_FRAME_SIZE cannot be encoded."""
    monkeypatch.setattr(_worker, "MAX_FRAME_SIZE", 64)
    with pytest.raises(_worker.FrameTooLargeError):
        _worker.encode_frame({"type": "x", "text": "y" * 100})


def test_worker_frames_are_validated() -> None:
    """Frames from the worker must match a known type exactly; anything else is refused."""
    call = WORKER_FRAMES.validate_json(
        b'{"type":"call","id":1,"kind":"llm","prompts":["p"],"model":null,"batched":false}'
    )
    assert isinstance(call, CallFrame)
    for bad in (
        b"not json",
        b'{"type":"call","id":1}',
        b'{"type":"nope"}',
        b'{"type":"hello","protocol":1,"pid":2,"extra":3}',
        b'{"type":"call","id":1,"kind":"evil","prompts":[],"model":null,"batched":false}',
    ):
        with pytest.raises(ValidationError):
            WORKER_FRAMES.validate_json(bad)
    result = WORKER_FRAMES.validate_json(
        b'{"type":"result","id":3,"stdout":"","stdout_cut":0,"stderr":"","stderr_cut":0,'
        b'"error":{"type":"E","message":"m","traceback":"t"},"defined_names":[],"final_answer":null}'
    )
    assert isinstance(result, ResultFrame)
    assert result.error is not None


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
    sink = _worker._Sink(limit)
    for text in writes:
        sink.add(text)
    assert sink.take() == (kept, cut)
    assert sink.take() == ("", 0)


def test_utf8_decoder_joins_split_characters() -> None:
    """Multi-byte characters split across writes are decoded once they are complete."""
    decoder = _worker._Utf8Decoder()
    data = "é✓".encode()
    assert decoder.decode(data[:1]) == ""
    assert decoder.decode(data[1:3]) == "é"
    assert decoder.decode(memoryview(data[3:])) == "✓"


def test_public_names_are_exported_and_sorted() -> None:
    """rlm_sdk.repl.__all__ is sorted and every name in it exists."""
    names = rlm_sdk.repl.__all__
    assert names == sorted(names)
    assert all(hasattr(rlm_sdk.repl, name) for name in names)


BIG = _worker.SEGMENT_MIN_CHARS


def test_big_strings_travel_as_raw_segments() -> None:
    """Long string lists and strings become segments after a small JSON header, and round-trip."""
    prompts = ["ünï ✓ " * (BIG // 4), "", "plain"]
    message = {"type": "call", "id": 7, "prompts": prompts, "text": "t" * BIG, "small": "s"}
    frame = _worker.encode_frame(message)
    header = frame[:4]
    assert _worker.is_segmented(header)
    assert _worker.frame_size(header) == len(frame) - 4
    head_size = int.from_bytes(frame[4:8], "big")
    head = json.loads(frame[8 : 8 + head_size])
    sizes = [len(p.encode()) for p in prompts]
    assert head == {
        "type": "call",
        "id": 7,
        "small": "s",
        "$segments": {"prompts": sizes, "text": BIG},
    }
    assert frame[8 + head_size :] == "".join(prompts).encode() + b"t" * BIG
    assert _worker.decode_segmented(frame[4:]) == message


def test_small_messages_stay_plain_json() -> None:
    """Below SEGMENT_MIN_CHARS, and for lists that are not all strings, frames are plain JSON."""
    for message in (
        {"type": "call", "prompts": ["a" * (BIG - 1)]},
        {"type": "tool", "args": ["a" * BIG, 1]},
    ):
        frame = _worker.encode_frame(message)
        assert not _worker.is_segmented(frame[:4])
        assert json.loads(frame[4:]) == message


def test_segmented_frames_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A segmented message larger than MAX_FRAME_SIZE cannot be encoded either."""
    monkeypatch.setattr(_worker, "MAX_FRAME_SIZE", BIG)
    with pytest.raises(_worker.FrameTooLargeError):
        _worker.encode_frame({"type": "call", "prompts": ["y" * BIG]})


def _segmented(head: object, body: bytes) -> bytes:
    raw = json.dumps(head).encode()
    return len(raw).to_bytes(4, "big") + raw + body


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x00", id="no-header-length"),
        pytest.param(b"\x00\x00\x00\xff{}", id="header-overrun"),
        pytest.param(_segmented([1], b""), id="header-not-an-object"),
        pytest.param(_segmented({"type": "call"}, b"abc"), id="no-table"),
        pytest.param(_segmented({"type": "call", "$segments": {"p": [2]}}, b"abc"), id="short"),
        pytest.param(_segmented({"type": "call", "$segments": {"p": [4]}}, b"abc"), id="long"),
        pytest.param(_segmented({"type": "call", "$segments": {"p": [-1, 4]}}, b"abc"), id="neg"),
        pytest.param(_segmented({"type": "call", "$segments": {"p": [True]}}, b"a"), id="bool"),
        pytest.param(_segmented({"type": "x", "p": 1, "$segments": {"p": 1}}, b"a"), id="clash"),
        pytest.param(_segmented({"type": "x", "$segments": {"p": [2]}}, b"\xff\xfe"), id="utf8"),
    ],
)
def test_malformed_segmented_frames_are_refused(payload: bytes) -> None:
    """Segment tables that do not add up exactly, or bytes that are not UTF-8, raise ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - every kind of malformation
        _worker.decode_segmented(payload)
    header = (len(payload) | 0x8000_0000).to_bytes(4, "big")
    with pytest.raises(WorkerProtocolError, match="invalid frame"):
        _client._parse_frame(header, payload)


def test_the_parent_validates_segmented_frames_like_json_ones() -> None:
    """A segmented call frame becomes a CallFrame; one with a wrong field type is refused."""
    good = _worker.encode_frame(
        {"type": "call", "id": 1, "kind": "llm", "prompts": ["p" * BIG], "model": None,
         "batched": True}
    )  # fmt: skip
    frame = _client._parse_frame(good[:4], good[4:])
    assert isinstance(frame, CallFrame)
    assert frame.prompts == ["p" * BIG]
    bad = _worker.encode_frame({"type": "call", "id": 1, "kind": "llm", "prompts": "p" * BIG})
    with pytest.raises(WorkerProtocolError):
        _client._parse_frame(bad[:4], bad[4:])


def test_the_worker_reads_segmented_frames() -> None:
    """The worker's channel reassembles a big segmented reply read from its socket."""
    parent, child = socket.socketpair()
    with parent, child:
        message = {"type": "call_result", "id": 3, "results": ["r" * 3_000_000, "é" * BIG]}
        frame = _worker.encode_frame(message)
        sender = threading.Thread(target=parent.sendall, args=(frame,))
        sender.start()
        channel = _worker._Channel(child.fileno(), child.fileno(), -1)
        assert channel.read() == message
        sender.join()


def test_write_parts_survives_partial_writes_and_many_parts() -> None:
    """writev may take part of a part: every byte still arrives, in order, past IOV_MAX parts."""
    import os
    import threading

    from rlm_sdk.repl import _worker

    parts = [bytes([i % 251]) * (i % 7) for i in range(3000)] + [b"x" * 300_000, b""]
    expected = b"".join(parts)
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 4096):  # slow reads: the pipe fills, writes are partial
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    _worker.write_parts(write_fd, parts)
    os.close(write_fd)
    reader.join(timeout=10)
    os.close(read_fd)
    assert bytes(received) == expected
    assert _worker.encode_frame({"a": 1}) == b"".join(_worker.encode_frame_parts({"a": 1}))
