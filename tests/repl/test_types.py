"""The parent's models (``repl/_types.py``): options, and what it accepts from the worker."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

import rlm_sdk.repl
from rlm_sdk import WorkerProtocolError
from rlm_sdk._constants import MAX_OUTPUT_LIMIT
from rlm_sdk.repl import IsolationMode, REPLOptions, _sandbox, _supervisor, _wire
from rlm_sdk.repl._types import WORKER_FRAMES, CallFrame, ResultFrame

BIG = _wire.SEGMENT_MIN_CHARS


def test_options_are_frozen_and_refuse_unknown_fields() -> None:
    """REPLOptions cannot be changed in place, only copied; a misspelt field is an error."""
    options = REPLOptions(cell_timeout=5)
    with pytest.raises(ValidationError):
        options.cell_timeout = 6  # type: ignore[misc]
    assert options.model_copy(update={"cell_timeout": 6}).cell_timeout == 6
    assert options.cell_timeout == 5
    with pytest.raises(ValidationError, match="cel_timeout"):
        REPLOptions(cel_timeout=5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cell_timeout", 0),
        ("cell_timeout", float("nan")),
        ("start_timeout", -1),
        ("memory_limit", 0),
        ("output_limit", -1),
        ("output_limit", MAX_OUTPUT_LIMIT + 1),
        ("isolation", "lenient"),
        ("readable_paths", ("relative/path",)),
        ("readable_paths", "/etc"),
    ],
)
def test_bad_option_values_name_the_field(field: str, value: object) -> None:
    """Each out-of-range or ill-typed option raises a ValidationError naming the field."""
    with pytest.raises(ValidationError, match=field):
        REPLOptions(**{field: value})  # type: ignore[arg-type]


def test_the_worker_knows_every_isolation_mode() -> None:
    """The sandbox's runtime list of modes is exactly the IsolationMode literal."""
    assert get_args(IsolationMode) == _sandbox.MODES


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
        b'{"type":"ready","protocol":3,"load_s":0.1,"isolation":[],"extra":3}',
        b'{"type":"hello","protocol":2,"pid":2}',
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


def test_public_names_are_exported_and_sorted() -> None:
    """rlm_sdk.repl.__all__ is sorted and every name in it exists."""
    names = rlm_sdk.repl.__all__
    assert names == sorted(names)
    assert all(hasattr(rlm_sdk.repl, name) for name in names)


def test_the_parent_validates_segmented_frames_like_json_ones() -> None:
    """A segmented call frame becomes a CallFrame; one with a wrong field type is refused."""
    good = _wire.encode_frame(
        {"type": "call", "id": 1, "kind": "llm", "prompts": ["p" * BIG], "model": None,
         "batched": True}
    )  # fmt: skip
    frame = _supervisor.parse_frame(True, good[4:])
    assert isinstance(frame, CallFrame)
    assert frame.prompts == ["p" * BIG]
    bad = _wire.encode_frame({"type": "call", "id": 1, "kind": "llm", "prompts": "p" * BIG})
    with pytest.raises(WorkerProtocolError):
        _supervisor.parse_frame(True, bad[4:])
