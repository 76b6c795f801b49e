"""Typed answers: ``acomplete(..., output_type=Invoice)``.

An output type is compiled once per call (:func:`output_shape`) into an :class:`OutputShape`:
the JSON Schema the model is shown and a validator. A pydantic model, a ``TypedDict`` or any
other type pydantic can validate goes through a :class:`pydantic.TypeAdapter`; a JSON Schema
(a ``dict``, or an OpenAI ``response_format``) through the subset validator of
:mod:`rlm_sdk._schema`, whose result is the JSON value itself.

An answer reaches the check as the text the run took plus, when it came from a Python value
in the REPL (``FINAL_VAR(d)`` with a dict or list), that value as JSON, which the worker sends
beside the text. The text of a ``FINAL(...)`` is read as JSON (inside a code fence or not),
then as a Python literal (what ``str()`` of a dict looks like), and last as the text itself,
so ``output_type=str`` and ``int`` work on plain answers too.

The root run holds one :class:`OutputCheck`. A rejected answer is not taken: the model is
told every problem (an :class:`~rlm_sdk.OutputRejected` event records them) and tries again,
up to ``output_retries`` times; one more rejection raises :class:`~rlm_sdk.OutputValidationError`
with the last value and its problems. Everything here is pure but the ``emit`` handed in.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import PydanticUserError, TypeAdapter, ValidationError

from . import _protocol as proto
from ._events import OutputRejected
from ._exceptions import ConfigurationError, OutputValidationError
from ._schema import check_schema, schema_errors

__all__ = [
    "DEFAULT_OUTPUT_RETRIES",
    "OutputCheck",
    "OutputShape",
    "output_json",
    "output_shape",
    "reply_format_shape",
    "response_format_schema",
]

DEFAULT_OUTPUT_RETRIES = 2
"""Rejected answers the model may replace before ``OutputValidationError`` (``output_retries``)."""
_LITERAL_MAX_CHARS = 1_000_000
"""Longest answer read as a Python literal (``ast`` on untrusted text stays bounded)."""
_SHOWN_CHARS = 2_000
"""Characters of a rejected answer kept in its event."""

Emit = Callable[..., None]
_ANY: TypeAdapter[Any] = TypeAdapter(Any)
"""Writes any value pydantic knows as JSON (models, dataclasses, plain data)."""


@dataclass(frozen=True)
class OutputShape:
    """An output type, ready to check answers: its name, its JSON Schema and its validator."""

    name: str
    schema: dict[str, Any]
    """What the model is shown."""
    adapter: TypeAdapter[Any] | None = None
    """The pydantic validator; ``None`` for a JSON Schema, checked by :mod:`._schema`."""

    def validate(self, value: Any) -> tuple[Any, list[str]]:
        """``(typed value, [])`` when ``value`` fits, else ``(None, problems)``."""
        if self.adapter is None:
            errors = schema_errors(self.schema, value)
            return (None, errors) if errors else (value, [])
        try:
            return self.adapter.validate_python(value), []
        except ValidationError as err:
            return None, [_pydantic_problem(e) for e in err.errors(include_url=False)]

    def read(self, text: str, value_json: str | None = None) -> tuple[Any, Any, list[str]]:
        """Check an answer: ``(typed value, value read, problems)``; no problems when it fits.

        ``value_json`` is the answer's REPL value as JSON, when it came from one.
        """
        candidates = _candidates(text, value_json)
        first: list[str] | None = None
        for candidate in candidates:
            typed, errors = self.validate(candidate)
            if not errors:
                return typed, candidate, []
            first = errors if first is None else first
        return None, candidates[0], first or []


def output_shape(output_type: Any) -> OutputShape:
    """Compile ``output_type`` (see the module docstring).

    Raises:
        ConfigurationError: pydantic cannot validate the type or make its JSON Schema, or
            the JSON Schema uses a keyword the subset does not implement.
    """
    if isinstance(output_type, OutputShape):
        return output_type
    if isinstance(output_type, Mapping):
        if _is_response_format(output_type):
            shape = reply_format_shape(output_type)
            if shape is None:
                raise ConfigurationError("a response_format of type text has no schema to match")
            return shape
        schema = dict(output_type)
        check_schema(schema)
        return OutputShape(name=str(schema.get("title") or "untitled"), schema=schema)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(output_type)
        schema = adapter.json_schema()
    except (PydanticUserError, TypeError, ValueError) as err:
        raise ConfigurationError(
            f"output_type must be a pydantic model, a TypedDict, a type pydantic can "
            f"validate, or a JSON schema dict; {output_type!r} is not: {err}"
        ) from err
    name = output_type.__name__ if isinstance(output_type, type) else _type_name(output_type)
    return OutputShape(name=name, schema=schema, adapter=adapter)


def reply_format_shape(response_format: Any) -> OutputShape | None:
    """The chat drop-in's ``response_format``: an OpenAI one (``json_schema``,
    ``json_object``, ``text``) or a type (as ``output_type``); ``None`` for plain text.

    Raises:
        ConfigurationError: as :func:`output_shape` and :func:`response_format_schema`.
    """
    if response_format is None:
        return None
    if isinstance(response_format, Mapping):
        schema = response_format_schema(response_format)
        return None if schema is None else output_shape(schema)
    return output_shape(response_format)


def _is_response_format(value: Mapping[str, Any]) -> bool:
    return value.get("type") in ("json_schema", "json_object", "text") and (
        "json_schema" in value or value.get("type") != "json_schema"
    )


def response_format_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON Schema an OpenAI ``response_format`` asks for; ``None`` for plain text.

    ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`` gives the
    schema (titled with the name); ``{"type": "json_object"}`` any JSON object;
    ``{"type": "text"}`` (or ``None``) nothing.

    Raises:
        ConfigurationError: another shape, or a schema outside the supported subset.
    """
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise ConfigurationError(
                "response_format of type json_schema needs json_schema.schema, a JSON Schema"
            )
        schema = dict(spec["schema"])
        if isinstance(spec.get("name"), str) and "title" not in schema:
            schema["title"] = spec["name"]
        check_schema(schema)
        return schema
    raise ConfigurationError(
        "response_format must be {'type': 'json_schema', 'json_schema': {'name': ..., "
        "'schema': {...}}}, {'type': 'json_object'} or {'type': 'text'}"
    )


def output_json(value: Any) -> str:
    """A typed answer as JSON text (a pydantic model, a TypedDict's dict, a JSON value)."""
    return _ANY.dump_json(value).decode()


class OutputCheck:
    """The root run's check of its answers, and how many it rejected.

    Args:
        shape: the compiled output type.
        retries: rejected answers the model may replace; one more rejection ends the run.
    """

    def __init__(self, shape: OutputShape, retries: int) -> None:
        self.shape = shape
        self.retries = retries
        self.rejected = 0
        self.value: Any = None
        """The typed value of the answer last accepted."""

    def instructions(self, protocol: Literal["fenced", "tools"]) -> str:
        """What the query is followed by: the schema, and how to answer with a value."""
        return proto.output_format_prompt(self.shape.name, _schema_text(self.shape), protocol)

    def final_note(self) -> str:
        """What the last call's prompt adds, at the iteration limit."""
        return proto.output_final_note(self.shape.name)

    def review(
        self,
        answer: str,
        value_json: str | None,
        iteration: int,
        emit: Emit,
        protocol: Literal["fenced", "tools"] = "fenced",
        *,
        last: bool = False,
    ) -> list[str]:
        """``[]`` when ``answer`` fits (its typed value kept in :attr:`value`); else what the
        model is told, after an :class:`OutputRejected` event.

        Raises:
            OutputValidationError: the answer does not fit and no retry is left (``last``:
                none is, the run is at its final call).
        """
        typed, read, errors = self.shape.read(answer, value_json)
        if not errors:
            self.value = typed
            return []
        self.rejected += 1
        left = 0 if last else max(0, self.retries + 1 - self.rejected)
        emit(
            OutputRejected,
            iteration=iteration,
            answer=proto.truncate_middle(answer, _SHOWN_CHARS),
            errors=errors,
            attempt=self.rejected,
            retries_left=left,
        )
        if left == 0:
            raise OutputValidationError(
                f"the answer does not match the output type ({self.shape.name}) after "
                f"{self.rejected} "
                f"tr{'y' if self.rejected == 1 else 'ies'}: " + "; ".join(errors[:5]),
                value=read,
                errors=errors,
                answer=answer,
            )
        return [proto.output_rejected_feedback(errors, left, protocol)]


def _candidates(text: str, value_json: str | None) -> list[Any]:
    """The values an answer may stand for, the likeliest first (see the module docstring)."""
    if value_json is not None:
        try:  # the text stays a candidate: any answer is a valid ``str``
            return [json.loads(value_json), text]
        except ValueError:
            pass
    body = _unfenced(text.strip())
    try:
        return [json.loads(body), text]
    except ValueError:
        pass
    if body[:1] in ("{", "[", "(") and len(body) <= _LITERAL_MAX_CHARS:
        try:
            return [ast.literal_eval(body), text]
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    return [text]


def _unfenced(text: str) -> str:
    """The inside of a code fence wrapping the whole text (```json ... ```), else the text."""
    if not (text.startswith("```") and text.endswith("```") and len(text) >= 6):
        return text
    first_line, _, rest = text[3:-3].partition("\n")
    return rest.strip() if first_line.strip().isalnum() or not first_line.strip() else text


def _pydantic_problem(error: Mapping[str, Any]) -> str:
    at = "$"
    for part in error.get("loc", ()):
        at += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{at}: {error.get('msg', 'invalid')}"


def _type_name(output_type: Any) -> str:
    """``list[Item]`` for ``list[app.models.Item]``: a type's spelling without module paths."""
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(output_type))


def _schema_text(shape: OutputShape) -> str:
    return json.dumps(shape.schema, ensure_ascii=False)
