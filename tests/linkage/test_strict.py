"""The one strict-parsing mechanism (linkage.strict) under the schema and both configs.

Every kind of bad value is tried at every position of a valid document: a string, an array
and a table holding a canary in place of each value, a canary key in each table, and a canary
in place of each key. Whatever the document becomes, no message may hold the canary (pydantic
keeps the input in its errors; it must never be rendered).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import ValidationError

from linkage.errors import JigsawError
from linkage.schema import load_schema, schema_from_dict
from linkage.strict import Problems, StrictModel, render_errors, validate
from server.common.config import ConfigError
from server.matcher.config import parse_matcher_config
from server.node.config import parse_node_config

#: Not a valid field name or agency: a name the schema validated is its own vocabulary and may
#: be listed in an expectation, so the canary is one that never validates as a name.
CANARY = "Zebulonqx-canary"

NODE = """
[node]
agency = "police"
schema = "child"
secret_file = "secret.hex"
store = "police.sqlite"
audit_log = "police-audit.jsonl"
matcher = "127.0.0.1:50051"
purposes = ["mash_referral"]

[tls]
ca_cert = "ca.pem"
cert = "node.pem"
key = "node.key"

[[source]]
kind = "sqlite"
path = "police.db"
table = "people"
[source.columns]
local_id = "id"
given_name = "forename"
sex = "gender"
[source.extra]
address = "address"
[source.values]
missing = ["UNKNOWN"]
[source.values.sex]
"1" = "male"

[disclosure]
staff = ["given_name", "address"]

[peers]
health = "10.0.0.2:7001"

[rate_limits]
burst = 5
disclosure_window_minutes = 30

[console]
node = "127.0.0.1:7000"
cert = "console.pem"
key = "console.key"
"""

MATCHER = """
[matcher]
schema = "child"
store = "m.sqlite"
audit_log = "m.jsonl"
purposes = ["mash_referral"]
[tls]
ca_cert = "ca.pem"
cert = "m.pem"
key = "m.key"
[match_limits]
burst = 5
person_share = 0.5
"""


def _mutations(document: Any) -> Iterator[Any]:
    """Copies of ``document`` with one canary each, at every position and of every kind."""
    bad_values: list[Any] = [
        CANARY,
        f"{CANARY}.{CANARY}",
        f"{CANARY}:99",
        [CANARY],
        [f"{CANARY}.value", f"{CANARY}.year"],
        {CANARY: CANARY},
        {"name": CANARY},
    ]
    if isinstance(document, dict):
        yield {**document, CANARY: 1}  # an unknown key
        yield {**document, CANARY.lower(): CANARY}
        for key, value in document.items():
            renamed = {(f"{CANARY}{key}" if k == key else k): v for k, v in document.items()}
            yield renamed  # a key misspelt with the canary in it
            for bad in bad_values:
                yield {**document, key: bad}
            for changed in _mutations(value):
                yield {**document, key: changed}
    elif isinstance(document, list):
        for index, value in enumerate(document):
            for bad in bad_values:
                yield [*document[:index], bad, *document[index + 1 :]]
            for changed in _mutations(value):
                yield [*document[:index], changed, *document[index + 1 :]]


def _problems_hold_no_canary(parse: Callable[[Any], object], document: Any) -> int:
    refused = 0
    for mutated in _mutations(document):
        try:
            parse(mutated)
        except JigsawError as exc:
            refused += 1
            problems = getattr(exc, "problems", ())
            assert problems, exc
            text = str(exc) + "\n".join(problems)
            assert CANARY not in text and CANARY.lower() not in text, text
    return refused


def test_no_node_config_message_holds_a_canary(tmp_path: Path) -> None:
    def parse(data: Any) -> object:
        return parse_node_config(tomli_w.dumps(data), base_dir=tmp_path)

    assert _problems_hold_no_canary(parse, tomllib.loads(NODE)) > 100


def test_no_matcher_config_message_holds_a_canary(tmp_path: Path) -> None:
    def parse(data: Any) -> object:
        return parse_matcher_config(tomli_w.dumps(data), base_dir=tmp_path)

    assert _problems_hold_no_canary(parse, tomllib.loads(MATCHER)) > 50


def test_no_schema_message_holds_a_canary() -> None:
    data = load_schema("child_date_salted").to_dict()
    data["field"] = data["field"][:4]  # every kind of value, in less time
    data["blocking"] = data["blocking"][:2]
    assert _problems_hold_no_canary(schema_from_dict, data) > 200


def test_a_config_error_names_the_file_and_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(NODE.replace("burst = 5", "burst = 0").replace("agency =", "agenc ="))
    from server.node.config import load_node_config

    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert str(path) in str(info.value)
    assert info.value.problems == (
        "node: unknown key (key 1 of the table), expected one of: agency, audit_log, "
        "ingest_chunk_rows, key_version, listen, matcher, publish_batch_size, purposes, schema, "
        'secret_file, store (did you mean "agency"?)',
        "node.agency: required key is missing",
        "rate_limits.burst: expected an integer >= 1",
    )


class _Inner(StrictModel):
    count: int = 0


class _Outer(StrictModel):
    inner: _Inner
    named: dict[str, int] = {}  # noqa: RUF012 - pydantic copies defaults


def test_render_errors_never_uses_pydantic_input_or_messages() -> None:
    data = {"inner": {"count": CANARY, CANARY: 1}, "named": {CANARY: CANARY}}
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(data)
    assert any(error.get("input") == CANARY for error in info.value.errors())  # what is hidden
    assert render_errors(info.value, _Outer, data, printable={"ok"}) == [
        "inner: unknown key (key 2 of the table), expected one of: count",
        "inner.count: expected an integer, got a string",
        "named (key 1 of the table): expected an integer, got a string",
    ]
    problems = Problems()
    assert validate(_Outer, data, problems) is None
    assert len(problems.items) == 3


def test_rules_across_keys_are_reported_with_the_keys_own_problems(tmp_path: Path) -> None:
    text = (
        NODE.replace('kind = "sqlite"', 'kind = "xlsx"')
        .replace('local_id = "id"\n', "")
        .replace('table = "people"', 'table = ""')
        .replace('node = "127.0.0.1:7000"', 'node = "127.0.0.1:0"\nsession_minutes = 0')
    )
    with pytest.raises(ConfigError) as info:
        parse_node_config(text, base_dir=tmp_path)
    assert info.value.problems == (
        "source[0].kind: expected one of csv, sqlite",
        "source[0].columns: a 'local_id' column mapping is required",
        "console.node: expected this node's address with a fixed port",
        "console.session_minutes: expected an integer from 1 to 480",
    )
    limits = MATCHER.replace("burst = 5", "burst = 0\nmax_matches_per_hour = 200")
    with pytest.raises(ConfigError) as info:
        parse_matcher_config(limits, base_dir=tmp_path)
    assert info.value.problems == (
        "match_limits.burst: expected an integer >= 1",
        "match_limits.max_matches_per_hour: expected an integer >= "
        "match_limits.enumeration_alert_per_hour (the alert must come before the cap)",
    )
