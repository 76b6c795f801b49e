"""The JSON Schema subset behind ``output_type={...}``: every supported keyword rejects what it
should and nothing more, unsupported keywords are refused up front, and a schema pydantic
writes agrees with pydantic on the values it accepts."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from rlm_sdk import ConfigurationError
from rlm_sdk._schema import SUPPORTED_KEYWORDS, check_schema, schema_errors


def errors(schema: Any, value: Any) -> list[str]:
    check_schema(schema)
    return schema_errors(schema, value)


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("object", {"a": 1}, [1, 2]),
        ("array", [1, "x"], {"a": 1}),
        ("string", "text", 3),
        ("integer", 3, 3.5),
        ("number", 3.5, "3.5"),
        ("boolean", False, 0),
        ("null", None, "null"),
    ],
)
def test_type_accepts_its_kind_only(kind: str, good: Any, bad: Any) -> None:
    """Each JSON type accepts its own values and refuses a look-alike of another type."""
    assert errors({"type": kind}, good) == []
    (problem,) = errors({"type": kind}, bad)
    assert problem.startswith(f"$: expected {kind}, got ")


def test_json_numbers_follow_the_standard() -> None:
    """1.0 is an integer, a bool is neither integer nor number, a type list takes either."""
    assert errors({"type": "integer"}, 1.0) == []
    assert errors({"type": "integer"}, True) != []
    assert errors({"type": "number"}, False) != []
    assert errors({"type": ["string", "null"]}, None) == []
    assert errors({"type": ["string", "null"]}, 1) == ["$: expected string or null, got number"]


def test_objects_required_properties_and_extras() -> None:
    """Missing required fields, wrong nested fields and forbidden extras are each reported."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array"}},
        "required": ["name", "total"],
        "additionalProperties": False,
    }
    found = errors(schema, {"name": 5, "tags": [], "other": 1, "two words": 2})
    assert sorted(found) == sorted(
        [
            "$.total: is required",
            "$.name: expected string, got number",
            "$.other: is not an allowed field",
            '$["two words"]: is not an allowed field',
        ]
    )
    assert errors(
        schema | {"additionalProperties": {"type": "integer"}}, {"name": "a", "total": 2, "x": "y"}
    ) == ["$.x: expected integer, got string"]
    assert errors({"patternProperties": {"^n_": {"type": "number"}}}, {"n_a": "x", "b": "x"}) == [
        "$.n_a: expected number, got string"
    ]
    assert errors({"minProperties": 2}, {"a": 1}) == ["$: must have at least 2 fields"]


def test_arrays_items_tuples_bounds_and_uniqueness() -> None:
    """items, prefixItems, minItems/maxItems and uniqueItems (1 and 1.0 are equal, True is not 1)."""
    assert errors({"items": {"type": "integer"}}, [1, "2", 3]) == [
        "$[1]: expected integer, got string"
    ]
    tuple_schema = {"prefixItems": [{"type": "string"}, {"type": "number"}], "items": False}
    assert errors(tuple_schema, ["a", 1]) == []
    assert errors(tuple_schema, ["a", 1, 2]) == ["$[2]: no value is allowed here"]
    assert errors({"minItems": 2, "maxItems": 3}, [1]) == ["$: must have at least 2 items"]
    assert errors({"maxItems": 1}, [1, 2]) == ["$: must have at most 1 items"]
    assert errors({"uniqueItems": True}, [1, 1.0]) == ["$: items must be unique"]
    assert errors({"uniqueItems": True}, [1, True, {"a": [1]}, {"a": [2]}]) == []


def test_strings_numbers_enum_and_const() -> None:
    """Lengths, patterns (searched, as the standard says), bounds, multiples, enum and const."""
    assert errors({"minLength": 2, "maxLength": 3}, "a") == ["$: must have at least 2 characters"]
    assert errors({"pattern": "^[A-Z]-\\d+$"}, "A-12") == []
    assert errors({"pattern": "\\d"}, "abc") == ["$: must match the pattern '\\\\d'"]
    assert errors({"minimum": 0, "exclusiveMaximum": 10}, 10) == ["$: must be less than 10"]
    assert errors({"exclusiveMinimum": 0}, 0) == ["$: must be greater than 0"]
    assert errors({"maximum": 5}, 6) == ["$: must be at most 5"]
    assert errors({"multipleOf": 0.01}, 12.34) == []
    assert errors({"multipleOf": 0.5}, 1.2) == ["$: must be a multiple of 0.5"]
    assert errors({"enum": ["EUR", "USD"]}, "GBP") == ['$: must be one of "EUR", "USD"']
    assert errors({"const": 1}, 1.0) == []
    assert errors({"const": {"a": 1}}, {"a": 2}) == ['$: must be {"a": 1}']


def test_combinators_and_references() -> None:
    """anyOf, oneOf (exactly one), allOf, not, and $ref into $defs / definitions or to the root."""
    maybe = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert errors(maybe, None) == []
    (problem,) = errors(maybe, "x")
    assert problem.startswith("$: matches none of the allowed forms")
    one = {"oneOf": [{"type": "number"}, {"type": "integer"}]}
    assert errors(one, 1.5) == []
    assert errors(one, 2) == ["$: matches 2 of the forms of oneOf, not exactly one"]
    assert errors({"allOf": [{"minimum": 1}, {"maximum": 2}]}, 3) == ["$: must be at most 2"]
    assert errors({"not": {"type": "string"}}, "x") == ["$: matches a form that is not allowed"]
    tree = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            }
        },
        "$ref": "#/$defs/Node",
    }
    assert errors(tree, {"kids": [{"kids": []}, {"kids": [{"kids": 1}]}]}) == [
        "$.kids[1].kids[0].kids: expected array, got number"
    ]
    assert errors(
        {"definitions": {"N": {"type": "integer"}}, "items": {"$ref": "#/definitions/N"}}, [1, "a"]
    ) == ["$[1]: expected integer, got string"]
    loop = {"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}
    assert errors(loop, 1) == ["$: the schema's references loop without end"]


def test_every_problem_is_reported_at_once() -> None:
    """All the problems of a value come back together, so the model can fix them in one go."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    assert len(errors(schema, {"a": 1, "b": "x"})) == 2


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "if": {"type": "object"}}, "'if'"),
        ({"properties": {"a": {"dependentRequired": {}}}}, "'dependentRequired'"),
        ({"$ref": "https://example.invalid/schema.json"}, "only references inside the schema"),
        ({"$ref": "#/$defs/Missing"}, "points at nothing"),
        ({"type": "decimal"}, "is not a JSON type"),
        ({"pattern": "("}, "is invalid"),
        ({"minLength": -1}, "non-negative integer"),
        ({"anyOf": []}, "non-empty list"),
        ({"required": "name"}, "list of names"),
        ({"multipleOf": 0}, "greater than 0"),
        ({"enum": "a"}, "must be a list"),
        ("string", "is a dict"),
        ({"const": float("nan")}, "plain JSON"),
    ],
)
def test_schemas_outside_the_subset_are_refused_up_front(schema: Any, named: str) -> None:
    """An unsupported keyword or a malformed value is a ConfigurationError naming it, never ignored."""
    with pytest.raises(ConfigurationError, match=named.replace("(", r"\(")):
        check_schema(schema)


def test_annotations_are_accepted_and_not_checked() -> None:
    """title, description, default, format and examples are annotations: accepted, never enforced."""
    schema = {"title": "T", "description": "d", "default": 1, "format": "email", "examples": [1]}
    assert errors(schema | {"type": "string"}, "not an email") == []


class Line(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}$")
    qty: int = Field(ge=1)


class Invoice(BaseModel):
    number: str
    currency: Literal["EUR", "USD"]
    lines: list[Line] = Field(min_length=1)
    note: str | None = None
    paid: bool = False


_VALUES: list[Any] = [
    {"number": "A-1", "currency": "EUR", "lines": [{"sku": "ABC", "qty": 2}]},
    {"number": "A-1", "currency": "EUR", "lines": [{"sku": "ABC", "qty": 2}], "note": None},
    {"number": "A-1", "currency": "GBP", "lines": [{"sku": "ABC", "qty": 2}]},
    {"number": "A-1", "currency": "EUR", "lines": []},
    {"number": "A-1", "currency": "EUR", "lines": [{"sku": "abc", "qty": 2}]},
    {"number": "A-1", "currency": "EUR", "lines": [{"sku": "ABC", "qty": 0}]},
    {"number": 7, "currency": "EUR", "lines": [{"sku": "ABC", "qty": 1}]},
    {"currency": "USD", "lines": [{"sku": "XYZ", "qty": 1}], "paid": True},
    {"number": "B", "currency": "USD", "lines": [{"sku": "XYZ", "qty": 1}], "paid": "yes"},
    [],
]


@pytest.mark.parametrize("value", _VALUES)
def test_a_schema_pydantic_writes_agrees_with_pydantic(value: Any) -> None:
    """On JSON values, the subset accepts exactly what pydantic (strict, from JSON) accepts."""
    schema = Invoice.model_json_schema()
    assert set(_keywords(schema)) <= SUPPORTED_KEYWORDS | {"title", "default", "description"}
    try:
        TypeAdapter(Invoice).validate_json(json.dumps(value), strict=True)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    assert (errors(schema, value) == []) is pydantic_ok


def _keywords(schema: Any) -> list[str]:
    """Every keyword used anywhere in ``schema`` (property names excluded)."""
    found: list[str] = []
    if isinstance(schema, dict):
        for key, sub in schema.items():
            found.append(key)
            if key in ("properties", "$defs"):
                for inner in sub.values():
                    found += _keywords(inner)
            else:
                found += _keywords(sub)
    elif isinstance(schema, list):
        for sub in schema:
            found += _keywords(sub)
    return found
