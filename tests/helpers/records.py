"""Records for encoding tests: one child's values, as columns, under the published test keys."""

from __future__ import annotations

from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema

_CHILD = load_schema("child")


def published_keys(key_version: int = 1) -> KeySet:
    """The keys of the published test secret."""
    return KeySet(LinkageSecret.for_tests(), key_version=key_version)


def columns_of(records: list[dict[str, str | None]]) -> dict[str, list[str | None]]:
    """Records as the child schema's input columns."""
    return {f: [r.get(f) for r in records] for f in _CHILD.input_names}


def child(**values: str | None) -> dict[str, str | None]:
    """One child's values (Olivia Rose Okafor, 14/03/2015, F, LS6 2AB), changed by ``values``."""
    base: dict[str, str | None] = {
        "given_name": "Olivia",
        "middle_names": "Rose",
        "family_name": "Okafor",
        "date_of_birth": "14/03/2015",
        "sex": "F",
        "postcode": "LS6 2AB",
        "nhs_number": None,
    }
    return base | values
