"""Schemas for tests beside the default ones."""

from __future__ import annotations

from typing import Any

import pytest

from linkage.errors import SchemaError
from linkage.schema import Schema, load_schema, schema_from_dict

#: The child schema with the names and postcode salted with the full date of birth (one
#: filter each) and blocking on single filters: the salt of few records per value that the
#: salted-u, forms and published-filter salt-tag machinery serves.
DATE_SALTED: Schema = load_schema("child_date_salted")


def child_dict() -> dict[str, Any]:
    """The shipped child schema as the dict its TOML file parses to."""
    return load_schema("child").to_dict()


def problems_of(data: dict[str, Any]) -> tuple[str, ...]:
    """The problems a schema dict is refused with (it must be refused)."""
    with pytest.raises(SchemaError) as info:
        schema_from_dict(data)
    assert info.value.problems, "a SchemaError must list its problems"
    return info.value.problems


def field_index(data: dict[str, Any], name: str) -> int:
    """The position of field ``name`` in a schema dict's ``field`` list."""
    return next(i for i, f in enumerate(data["field"]) if f["name"] == name)


#: the combined fallback fields of the shipped child schema, each published in three views
VIEWED_FIELDS = ("full_name",)
#: the views' date parts
DATE_VIEWS = ("year_month", "year_day", "day_month")


def set_option(table: str, key: str, value: Any, index: int | None = None) -> Any:
    """A mutation setting ``key`` of ``table`` (its ``index``-th entry when a list) to
    ``value`` in a schema dict."""

    def apply(data: dict[str, Any]) -> None:
        target = data[table] if index is None else data[table][index]
        target[key] = value

    return apply


def mutated(mutate: Any) -> dict[str, Any]:
    """The shipped child schema's dict after ``mutate``."""
    data = child_dict()
    mutate(data)
    return data
