"""Starting workers and talking to them (``repl/_process.py``), below the session."""

from __future__ import annotations

import json
import os
import threading

import anyio
import pytest
from repl_helpers import process_state

from rlm_sdk.repl import _process, _wire


def _writer(fd: int, data: bytes, piece: int) -> threading.Thread:
    """A thread writing ``data`` to ``fd`` in pieces of ``piece`` bytes, then closing it."""

    def write() -> None:
        for start in range(0, len(data), piece):
            os.write(fd, data[start : start + piece])
        os.close(fd)

    return threading.Thread(target=write)


async def test_the_channel_reads_whole_frames_and_ends_at_eof() -> None:
    """Frames written in odd pieces come out whole (a big one too); EOF mid-frame is EOFError."""
    messages = [{"type": "a"}, {"type": "big", "text": "x" * 300_000}, {"type": "b"}]
    data = b"".join(map(_wire.encode_frame, messages)) + _wire.encode_frame({"type": "c"})[:7]
    read_end, write_end = os.pipe()
    spare_read, spare_write = os.pipe()  # the channel's other direction, unused here
    channel = _process.WorkerChannel(read_end, spare_write)
    writer = _writer(write_end, data, 4099)
    writer.start()
    try:
        with anyio.fail_after(10):
            got = []
            for _ in messages:
                segmented, payload = await channel.receive_frame()
                got.append(_wire.decode_segmented(payload) if segmented else json.loads(payload))
            with pytest.raises(EOFError):
                await channel.receive_frame()
        assert got == messages
    finally:
        writer.join()
        channel.close()
        os.close(spare_read)


async def test_spawn_direct_starts_a_group_leader_and_reaps_it(tmp_path: os.PathLike[str]) -> None:
    """A directly started worker leads its own process group; kill takes the group down, and
    wait reaps it through its pidfd."""
    process = _process.spawn_direct(
        _process.WORKER_PATH, env=_process.scrubbed_environ(), cwd=str(tmp_path), memfd=None
    )
    try:
        assert os.getpgid(process.pid) == process.pid
        assert process_state(process.pid) not in (None, "Z")
        process.kill()
        with anyio.fail_after(10):
            assert await process.wait() == -9
        assert process_state(process.pid) is None
    finally:
        process.close()
