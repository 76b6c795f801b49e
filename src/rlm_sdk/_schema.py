"""Validating a JSON value against a JSON Schema, for ``output_type={...schema...}``.

A documented subset of JSON Schema (draft 2020-12), written here rather than taken from the
``jsonschema`` package, which is not a dependency of the SDK: the schemas answers are checked
against are the ones tools generate (pydantic's ``model_json_schema()``, OpenAI's structured
outputs) and the ones people write by hand, and those use a small, stable set of keywords.

Every keyword of a schema is checked when the schema is given (:func:`check_schema`): one
the subset does not implement is a :class:`~rlm_sdk.ConfigurationError` naming it, never a
keyword silently ignored, so an answer said to be valid is valid for the whole schema.
Annotations (``title``, ``description``, ``default``, ``format``, ...) are accepted and not
checked, as the standard says of them.

Validation (:func:`schema_errors`) returns every problem, each as ``"$.path: message"``, so
the model gets them all at once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["SUPPORTED_KEYWORDS", "check_schema", "schema_errors"]

_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
_SCHEMA_KEYWORDS = ("additionalProperties", "items", "not")
"""Keywords whose value is one schema (``additionalProperties`` may also be a boolean)."""
_SCHEMA_LIST_KEYWORDS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions")
_COUNT_KEYWORDS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
)
_NUMBER_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "format",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",  # OpenAPI's hint beside oneOf; the oneOf itself is checked
        "contentMediaType",
        "contentEncoding",
    }
)
SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "pattern",
        "uniqueItems",
        "$ref",
        *_SCHEMA_KEYWORDS,
        *_SCHEMA_LIST_KEYWORDS,
        *_SCHEMA_MAP_KEYWORDS,
        *_COUNT_KEYWORDS,
        *_NUMBER_KEYWORDS,
    }
)
"""The keywords validated (annotations such as ``title`` and ``format`` are accepted too)."""

_MAX_NESTING = 64
"""``$ref`` hops without descending into the value: more means a reference loop."""


def check_schema(schema: Any) -> None:
    """Check that ``schema`` is a JSON Schema this module can validate fully.

    Raises:
        ConfigurationError: it is not a JSON object (or a boolean schema), it uses a keyword
            outside the subset, a keyword has a value of the wrong kind, or a ``$ref`` does
            not point into the schema's own ``$defs`` / ``definitions``.
    """
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise ConfigurationError(f"a JSON schema is a dict, not {type(schema).__name__}")
    try:
        json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"a JSON schema must be plain JSON: {err}") from err
    for path, node in _walk(schema, "#"):
        _check_node(schema, path, node)


def _walk(node: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, bool):
        return
    if not isinstance(node, Mapping):
        raise ConfigurationError(f"{path}: a schema is a dict or a boolean, not {node!r}")
    yield path, node
    for key in _SCHEMA_KEYWORDS:
        if key in node and not (key == "additionalProperties" and isinstance(node[key], bool)):
            yield from _walk(node[key], f"{path}/{key}")
    for key in _SCHEMA_LIST_KEYWORDS:
        if key in node:
            if not isinstance(node[key], list) or not node[key]:
                raise ConfigurationError(f"{path}/{key}: must be a non-empty list of schemas")
            for i, sub in enumerate(node[key]):
                yield from _walk(sub, f"{path}/{key}/{i}")
    for key in _SCHEMA_MAP_KEYWORDS:
        if key in node:
            if not isinstance(node[key], Mapping):
                raise ConfigurationError(f"{path}/{key}: must map names to schemas")
            for name, sub in node[key].items():
                yield from _walk(sub, f"{path}/{key}/{name}")


def _check_node(root: Mapping[str, Any], path: str, node: Mapping[str, Any]) -> None:
    unknown = sorted(set(node) - SUPPORTED_KEYWORDS - _ANNOTATIONS)
    if unknown:
        raise ConfigurationError(
            f"{path}: the JSON schema keyword(s) {', '.join(map(repr, unknown))} are not "
            "supported; use a pydantic model or TypedDict as output_type for such rules "
            f"(supported: {', '.join(sorted(SUPPORTED_KEYWORDS))})"
        )
    kinds = node.get("type")
    if kinds is not None:
        listed = kinds if isinstance(kinds, list) else [kinds]
        if not listed or any(k not in _TYPES for k in listed):
            raise ConfigurationError(f"{path}/type: {kinds!r} is not a JSON type (or a list)")
    if "enum" in node and not isinstance(node["enum"], list):
        raise ConfigurationError(f"{path}/enum: must be a list")
    if "required" in node and not (
        isinstance(node["required"], list) and all(isinstance(n, str) for n in node["required"])
    ):
        raise ConfigurationError(f"{path}/required: must be a list of names")
    for key in _COUNT_KEYWORDS:
        if key in node and (not _is_int(node[key]) or node[key] < 0):
            raise ConfigurationError(f"{path}/{key}: must be a non-negative integer")
    for key in _NUMBER_KEYWORDS:
        if key in node and not _is_number(node[key]):
            raise ConfigurationError(f"{path}/{key}: must be a number")
    if "multipleOf" in node and not node["multipleOf"] > 0:
        raise ConfigurationError(f"{path}/multipleOf: must be greater than 0")
    if "uniqueItems" in node and not isinstance(node["uniqueItems"], bool):
        raise ConfigurationError(f"{path}/uniqueItems: must be true or false")
    patterns = [node["pattern"]] if "pattern" in node else []
    for pattern in [*patterns, *node.get("patternProperties", {})]:
        try:
            re.compile(str(pattern))
        except re.error as err:
            raise ConfigurationError(f"{path}: the pattern {pattern!r} is invalid: {err}") from err
    if "$ref" in node:
        _resolve(root, node["$ref"], path)


def _resolve(root: Mapping[str, Any], ref: Any, path: str = "#") -> Any:
    """The schema a local ``$ref`` names (``#``, ``#/$defs/Name`` or ``#/definitions/Name``)."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        raise ConfigurationError(
            f"{path}/$ref: only references inside the schema are supported, not {ref!r}"
        )
    node: Any = root
    for part in ref[2:].split("/") if ref != "#" else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigurationError(f"{path}/$ref: {ref!r} points at nothing in the schema")
        node = node[part]
    return node


# --- validating --------------------------------------------------------------------------------


def schema_errors(schema: Any, value: Any) -> list[str]:
    """Every way ``value`` (a JSON value) breaks ``schema`` (checked by :func:`check_schema`).

    An empty list means the value is valid. Each problem reads ``"$.field[0]: message"``.
    """
    errors: list[str] = []
    _validate(schema, schema, value, "$", errors, 0)
    return errors


def _validate(root: Any, schema: Any, value: Any, at: str, errors: list[str], hops: int) -> None:
    """Append to ``errors`` what ``value`` breaks, keyword by keyword; ``hops`` counts the
    ``$ref`` followed at this place in the value."""
    if schema is True:
        return
    if schema is False:
        errors.append(f"{at}: no value is allowed here")
        return
    if "$ref" in schema:
        if hops > _MAX_NESTING:
            errors.append(f"{at}: the schema's references loop without end")
            return
        _validate(root, _resolve(root, schema["$ref"]), value, at, errors, hops + 1)
    kinds = schema.get("type")
    if kinds is not None:
        listed = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is_type(value, k) for k in listed):
            errors.append(f"{at}: expected {' or '.join(listed)}, got {_json_type(value)}")
            return  # the other keywords would only repeat it
    if "const" in schema and not _equal(value, schema["const"]):
        errors.append(f"{at}: must be {_show(schema['const'])}")
    if "enum" in schema and not any(_equal(value, v) for v in schema["enum"]):
        errors.append(f"{at}: must be one of {', '.join(_show(v) for v in schema['enum'])}")
    if isinstance(value, str):
        _string(schema, value, at, errors)
    elif _is_number(value):
        _number(schema, value, at, errors)
    elif isinstance(value, list):
        _array(root, schema, value, at, errors)
    elif isinstance(value, dict):
        _object(root, schema, value, at, errors)
    for sub in schema.get("allOf", ()):
        _validate(root, sub, value, at, errors, hops)
    if "anyOf" in schema:
        tries = [_errors_of(root, sub, value, at, hops) for sub in schema["anyOf"]]
        if all(tries):
            errors.append(f"{at}: matches none of the allowed forms ({_closest(tries)})")
    if "oneOf" in schema:
        tries = [_errors_of(root, sub, value, at, hops) for sub in schema["oneOf"]]
        matched = sum(not t for t in tries)
        if matched == 0:
            errors.append(f"{at}: matches none of the allowed forms ({_closest(tries)})")
        elif matched > 1:
            errors.append(f"{at}: matches {matched} of the forms of oneOf, not exactly one")
    if "not" in schema and not _errors_of(root, schema["not"], value, at, hops):
        errors.append(f"{at}: matches a form that is not allowed")


def _errors_of(root: Any, schema: Any, value: Any, at: str, hops: int) -> list[str]:
    found: list[str] = []
    _validate(root, schema, value, at, found, hops)
    return found


def _closest(tries: list[list[str]]) -> str:
    """The problems of the alternative that came closest, for the message."""
    best = min(tries, key=len)
    return "; ".join(best[:3]) + ("; ..." if len(best) > 3 else "")


def _string(schema: Mapping[str, Any], value: str, at: str, errors: list[str]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{at}: must have at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{at}: must have at most {schema['maxLength']} characters")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{at}: must match the pattern {schema['pattern']!r}")


def _number(schema: Mapping[str, Any], value: float, at: str, errors: list[str]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{at}: must be at least {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{at}: must be at most {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{at}: must be greater than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{at}: must be less than {schema['exclusiveMaximum']}")
    if "multipleOf" in schema:
        quotient = value / schema["multipleOf"]
        if not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
            errors.append(f"{at}: must be a multiple of {schema['multipleOf']}")


def _array(
    root: Any, schema: Mapping[str, Any], value: list[Any], at: str, errors: list[str]
) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{at}: must have at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{at}: must have at most {schema['maxItems']} items")
    if schema.get("uniqueItems") and len({_key(v) for v in value}) < len(value):
        errors.append(f"{at}: items must be unique")
    prefix = schema.get("prefixItems", ())
    for i, (item, sub) in enumerate(zip(value, prefix, strict=False)):
        _validate(root, sub, item, f"{at}[{i}]", errors, 0)
    if "items" in schema:
        for i in range(len(prefix), len(value)):
            _validate(root, schema["items"], value[i], f"{at}[{i}]", errors, 0)


def _object(
    root: Any,
    schema: Mapping[str, Any],
    value: dict[str, Any],
    at: str,
    errors: list[str],
) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            errors.append(f"{_field(at, name)}: is required")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(f"{at}: must have at least {schema['minProperties']} fields")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{at}: must have at most {schema['maxProperties']} fields")
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        where = _field(at, name)
        matched = name in properties
        if matched:
            _validate(root, properties[name], item, where, errors, 0)
        for pattern, sub in patterns.items():
            if re.search(pattern, name) is not None:
                matched = True
                _validate(root, sub, item, where, errors, 0)
        if not matched:
            if extra is False:
                errors.append(f"{where}: is not an allowed field")
            elif extra is not True:
                _validate(root, extra, item, where, errors, 0)


# --- JSON's view of Python values ----------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return _is_int(value) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return _is_number(value)
    return _json_type(value) == kind


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _key(value: Any) -> str:
    """A canonical form for comparing JSON values (``1 == 1.0``, ``True != 1``)."""
    return json.dumps(_canonical(value), sort_keys=True)


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if _is_number(value):
        return float(value) if not (isinstance(value, float) and math.isnan(value)) else "NaN"
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return repr(value)


def _equal(a: Any, b: Any) -> bool:
    return _key(a) == _key(b)


def _show(value: Any) -> str:
    return json.dumps(value)


def _field(at: str, name: str) -> str:
    return f"{at}.{name}" if name.isidentifier() else f"{at}[{json.dumps(name)}]"
