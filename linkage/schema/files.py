"""Schema files: TOML text to a :class:`~linkage.schema.Schema`, and the shipped schemas.

Contract: :func:`parse_schema` decodes TOML (errors without quoting the text) and validates
it strictly; :func:`load_schema` takes a shipped schema's name or TOML text. The shipped
schemas are package data (``linkage/schemas/*.toml``), read with :mod:`importlib.resources`.
"""

from __future__ import annotations

import tomllib
from importlib import resources

from linkage.errors import SchemaError
from linkage.schema.model import Schema, schema_from_dict
from linkage.strict import toml_error_text


def parse_schema(text: str) -> Schema:
    """Parse TOML text into a :class:`Schema`; raise :class:`SchemaError` listing all problems."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError([f"not valid TOML: {toml_error_text(exc)}"]) from None
    return schema_from_dict(data)


def load_schema(name_or_text: str) -> Schema:
    """A shipped schema by name (``"child"``, ``"febrl"``) — see :func:`shipped_schema_names`."""
    return parse_schema(shipped_schema_text(name_or_text))


def shipped_schema_names() -> tuple[str, ...]:
    return ("child", "child_date_salted", "febrl")


def shipped_schema_text(name: str) -> str:
    if name not in shipped_schema_names():
        # The asked name is not echoed: an operator may have pasted a path or a record here.
        raise SchemaError(
            [f"unknown shipped schema name: expected one of {', '.join(shipped_schema_names())}"]
        )
    return resources.files("linkage").joinpath("schemas", f"{name}.toml").read_text("utf-8")


def default_child_schema() -> Schema:
    return load_schema("child")


def febrl_schema() -> Schema:
    return load_schema("febrl")
