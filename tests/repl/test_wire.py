"""The wire format both sides share (``repl/_wire.py``), in-process: no worker is started."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from repl_helpers import wait_not_running

from rlm_sdk import WorkerProtocolError
from rlm_sdk.repl import _supervisor, _wire


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
    descriptor = _wire.write_context(memfd, context)
    loaded = _wire.load_context(memfd, descriptor)
    expected = bytes(context) if isinstance(context, bytearray) else context
    assert loaded == expected
    assert type(loaded) is type(expected)


def test_list_of_str_avoids_json(memfd: int) -> None:
    """A list of strings is laid out as joined text (no JSON escaping), with lengths if needed."""
    plain = _wire.write_context(memfd, ['a"b', "c\\d"])
    assert plain == {"kind": "lines", "nbytes": 7, "count": 2, "lengths": False}
    assert os.pread(memfd, 100, 0) == b'a"b\x00c\\d'


def test_frames_are_length_prefixed_json() -> None:
    """A frame is a 4-byte big-endian length and compact UTF-8 JSON; NaN is refused."""
    frame = _wire.encode_frame({"type": "x", "text": "é"})
    assert frame[:4] == (len(frame) - 4).to_bytes(4, "big")
    assert frame[4:] == '{"type":"x","text":"é"}'.encode()
    assert _wire.frame_size(frame[:4]) == len(frame) - 4
    with pytest.raises(ValueError, match="JSON"):
        _wire.encode_frame({"type": "x", "value": float("nan")})


def test_oversized_frames_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message larger than MAX_FRAME_SIZE cannot be encoded."""
    monkeypatch.setattr(_wire, "MAX_FRAME_SIZE", 64)
    with pytest.raises(_wire.FrameTooLargeError):
        _wire.encode_frame({"type": "x", "text": "y" * 100})


BIG = _wire.SEGMENT_MIN_CHARS


def test_big_strings_travel_as_raw_segments() -> None:
    """Long string lists and strings become segments after a small JSON header, and round-trip."""
    prompts = ["ünï ✓ " * (BIG // 4), "", "plain"]
    message = {"type": "call", "id": 7, "prompts": prompts, "text": "t" * BIG, "small": "s"}
    frame = _wire.encode_frame(message)
    header = frame[:4]
    assert _wire.is_segmented(header)
    assert _wire.frame_size(header) == len(frame) - 4
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
    assert _wire.decode_segmented(frame[4:]) == message


def test_small_messages_stay_plain_json() -> None:
    """Below SEGMENT_MIN_CHARS, and for lists that are not all strings, frames are plain JSON."""
    for message in (
        {"type": "call", "prompts": ["a" * (BIG - 1)]},
        {"type": "tool", "args": ["a" * BIG, 1]},
    ):
        frame = _wire.encode_frame(message)
        assert not _wire.is_segmented(frame[:4])
        assert json.loads(frame[4:]) == message


def test_segmented_frames_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A segmented message larger than MAX_FRAME_SIZE cannot be encoded either."""
    monkeypatch.setattr(_wire, "MAX_FRAME_SIZE", BIG)
    with pytest.raises(_wire.FrameTooLargeError):
        _wire.encode_frame({"type": "call", "prompts": ["y" * BIG]})


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
        _wire.decode_segmented(payload)
    with pytest.raises(WorkerProtocolError, match="invalid frame"):
        _supervisor.parse_frame(True, payload)


def test_write_parts_survives_partial_writes_and_many_parts() -> None:
    """writev may take part of a part: every byte still arrives, in order, past IOV_MAX parts."""
    parts = [bytes([i % 251]) * (i % 7) for i in range(3000)] + [b"x" * 300_000, b""]
    expected = b"".join(parts)
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 4096):  # slow reads: the pipe fills, writes are partial
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    _wire.write_parts(write_fd, parts)
    os.close(write_fd)
    reader.join(timeout=10)
    os.close(read_fd)
    assert bytes(received) == expected
    assert _wire.encode_frame({"a": 1}) == b"".join(_wire.encode_frame_parts({"a": 1}))


def _read_frames(data: bytes, count: int, piece: int) -> list[tuple[bool, bytes]]:
    """Drive a FrameReader over ``data``, handing it at most ``piece`` bytes per read."""
    reader = _wire.FrameReader()
    frames: list[tuple[bool, bytes]] = []
    position = 0
    for _ in range(count):
        steps = reader.read_frame()
        try:
            target = next(steps)
            while True:
                size = min(len(target), piece, len(data) - position)
                assert size > 0, "the reader asked for more than the stream holds"
                target[:size] = data[position : position + size]
                position += size
                target = steps.send(size)
        except StopIteration as done:
            segmented, payload = done.value
            frames.append((segmented, bytes(payload)))
    assert position == len(data)
    return frames


@pytest.mark.parametrize("piece", [1, 3, 4096, _wire.READ_AHEAD, 10**9])
def test_the_frame_reader_cuts_a_stream_however_it_arrives(piece: int) -> None:
    """Small, big and segmented frames come out whole and in order, whatever the read sizes."""
    messages = [
        {"type": "a"},
        {"type": "big", "text": "é" * (3 * _wire.READ_AHEAD)},
        *({"type": "small", "n": n} for n in range(50)),
        {"type": "call", "prompts": ["p" * BIG, "q"]},
        {"type": "plain", "blob": "x" * (2 * _wire.READ_AHEAD)},  # over READ_AHEAD, not a list
    ]
    if piece == 1:  # byte by byte: small frames only, or the test takes seconds
        messages = messages[2:10]
    stream = b"".join(_wire.encode_frame(message) for message in messages)
    frames = _read_frames(stream, len(messages), piece)
    decoded = [
        _wire.decode_segmented(payload) if segmented else json.loads(payload)
        for segmented, payload in frames
    ]
    assert decoded == messages


def test_the_frame_reader_refuses_an_oversized_announcement() -> None:
    """A header announcing more than MAX_FRAME_SIZE stops the reader before the payload."""
    steps = _wire.FrameReader().read_frame()
    target = next(steps)
    target[:4] = (_wire.MAX_FRAME_SIZE + 1).to_bytes(4, "big")
    with pytest.raises(_wire.FrameTooLargeError, match="-byte frame"):
        steps.send(4)


def test_workdirs_are_private_and_only_they_are_recognised(tmp_path: Path) -> None:
    """make_workdir makes a fresh 0700 directory with the prefix; is_workdir accepts no other."""
    first, second = _wire.make_workdir(str(tmp_path)), _wire.make_workdir(str(tmp_path))
    assert first != second
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o700
    assert _wire.is_workdir(first)
    for other in (str(tmp_path), "relative/" + os.path.basename(first), None, 3):
        assert not _wire.is_workdir(other)


def test_small_directories_are_removed_inline_and_others_left(tmp_path: Path) -> None:
    """A directory of a few files goes at once; one with a subdirectory is left for rmtree."""
    small = Path(_wire.make_workdir(str(tmp_path)))
    for name in ("a", "b"):
        (small / name).write_text(name)
    nested = Path(_wire.make_workdir(str(tmp_path)))
    (nested / "sub").mkdir()
    assert _wire.remove_small_directory(str(small))
    assert not small.exists()
    assert not _wire.remove_small_directory(str(nested))
    assert nested.exists()
    assert _wire.remove_small_directory(str(tmp_path / "missing"))


def test_kill_group_kills_the_leader_and_what_it_started() -> None:
    """kill_group takes the whole process group down, and a gone group is not an error."""
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    _wire.kill_group(leader.pid)
    assert leader.wait(timeout=5) == -signal.SIGKILL
    assert wait_not_running(child)
    leader.stdout.close()
    _wire.kill_group(leader.pid)  # reaped, and its group is empty: nothing happens
