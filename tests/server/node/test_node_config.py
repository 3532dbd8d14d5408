"""Tests of the strict node config parser (server.node.config)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from linkage.errors import KeyMaterialError
from linkage.keys import TEST_SECRET_HEX, LinkageSecret
from linkage.schema import load_schema
from server.common.purposes import DEFAULT_PURPOSE_CODES
from server.common.tls import TlsFiles
from server.node.config import ConfigError, NodeConfig, load_node_config, read_linkage_keys

VALID = """
[node]
agency = "police"
schema = "child"
secret_file = "secret.hex"
key_version = 2
store = "police.sqlite"
audit_log = "logs/police-audit.jsonl"
listen = "127.0.0.1:0"
matcher = "127.0.0.1:50051"
publish_batch_size = 500

[tls]
ca_cert = "pki/ca.pem"
cert = "pki/police-node.pem"
key = "pki/police-node.key"

[[source]]
kind = "csv"
path = "police.csv"
day_first = true
[source.columns]
local_id = "record_id"
given_name = "forename"
family_name = "surname"
date_of_birth = "dob"
[source.extra]
address = "address"

[[source]]
kind = "sqlite"
path = "/data/police.db"
table = "people"
[source.columns]
local_id = "id"
nhs_number = "nhs"

[disclosure]
staff = ["given_name", "family_name", "date_of_birth", "address"]

[rate_limits]
lookups_per_minute = 30
burst = 5
enumeration_alert_per_hour = 100
"""


def write_config(tmp_path: Path, text: str = VALID) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, "utf-8")
    (tmp_path / "secret.hex").write_text(TEST_SECRET_HEX + "\n", "ascii")
    return path


def problems_of(tmp_path: Path, text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        load_node_config(write_config(tmp_path, text))
    return info.value.problems


def test_valid_config_parses_with_resolved_paths(tmp_path: Path) -> None:
    config = load_node_config(write_config(tmp_path))
    base = tmp_path.resolve()
    assert config.agency == "police"
    assert config.schema == load_schema("child")
    assert config.secret_file == base / "secret.hex"
    assert config.store == base / "police.sqlite"
    assert config.audit_log == base / "logs" / "police-audit.jsonl"
    assert config.key_version == 2
    assert config.publish_batch_size == 500
    assert config.tls == TlsFiles(
        ca_cert=base / "pki" / "ca.pem",
        cert=base / "pki" / "police-node.pem",
        key=base / "pki" / "police-node.key",
    )
    csv_source, sqlite_source = config.sources
    assert csv_source.kind == "csv" and csv_source.path == base / "police.csv"
    assert dict(csv_source.columns)["given_name"] == "forename"
    assert dict(csv_source.extra) == {"address": "address"}
    assert sqlite_source.path == Path("/data/police.db") and sqlite_source.table == "people"
    assert sqlite_source.day_first is True  # the schema's default
    assert config.released_fields("staff") == (
        "given_name",
        "family_name",
        "date_of_birth",
        "address",
    )
    assert config.released_fields("operator") == ()
    assert config.extra_fields == ("address",)
    assert config.rate_limits.lookups_per_minute == 30.0
    assert config.rate_limits.burst == 5
    assert config.rate_limits.enumeration_alert_per_hour == 100


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_node_config(write_config(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.agency = "health"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.disclosure["staff"] = ()  # type: ignore[index]


def test_defaults_for_optional_keys(tmp_path: Path) -> None:
    text = """
[node]
agency = "health"
schema = "child"
secret_file = "secret.hex"
store = "h.sqlite"
audit_log = "h.jsonl"
matcher = "localhost:50051"
[tls]
ca_cert = "ca.pem"
cert = "h.pem"
key = "h.key"
"""
    config = load_node_config(write_config(tmp_path, text))
    assert config.key_version == 1
    assert config.listen == "127.0.0.1:0"
    assert config.publish_batch_size == 1000
    assert config.ingest_chunk_rows == 5000
    assert config.sources == ()
    assert dict(config.disclosure) == {}
    assert (config.rate_limits.lookups_per_minute, config.rate_limits.burst) == (60.0, 10)


def test_ingest_chunk_rows_is_read_within_its_range(tmp_path: Path) -> None:
    line = "publish_batch_size = 500"
    config = load_node_config(
        write_config(tmp_path, VALID.replace(line, f"{line}\ningest_chunk_rows = 7"))
    )
    assert config.ingest_chunk_rows == 7
    problems = problems_of(tmp_path, VALID.replace(line, f"{line}\ningest_chunk_rows = 0"))
    assert any(p.startswith("node.ingest_chunk_rows") for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[rate_limits]", "[rate_limit]", "config: unknown key (key "),
        ('listen = "127.0.0.1:0"', 'listne = "127.0.0.1:0"', "node: unknown key (key "),
        ('key = "pki/police-node.key"', 'keyfile = "k"', "tls: unknown key (key "),
        ("day_first = true", "dayfirst = true", "source[0]: unknown key (key "),
        ("burst = 5", "bursts = 5", "rate_limits: unknown key (key "),
    ],
)
def test_unknown_key_is_an_error(tmp_path: Path, old: str, new: str, expected: str) -> None:
    problems = problems_of(tmp_path, VALID.replace(old, new, 1))
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('agency = "police"', "node.agency: required key is missing"),
        ('schema = "child"', "node.schema: required key is missing"),
        ('secret_file = "secret.hex"', "node.secret_file: required key is missing"),
        ('matcher = "127.0.0.1:50051"', "node.matcher: required key is missing"),
        ('ca_cert = "pki/ca.pem"', "tls.ca_cert: required key is missing"),
        ('local_id = "record_id"', "source[0].columns: a 'local_id' column mapping is required"),
        ('path = "police.csv"', "source[0].path: required key is missing"),
        ('table = "people"', "source[1].table: required"),
    ],
)
def test_missing_key_is_an_error(tmp_path: Path, line: str, expected: str) -> None:
    problems = problems_of(tmp_path, VALID.replace(line + "\n", "", 1))
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("key_version = 2", 'key_version = "2"', "node.key_version: expected an integer"),
        ("key_version = 2", "key_version = true", "node.key_version: expected an integer"),
        ("key_version = 2", "key_version = 0", "node.key_version: expected an integer >= 1"),
        ("day_first = true", 'day_first = "yes"', "source[0].day_first: expected a boolean"),
        ("burst = 5", "burst = 2.5", "rate_limits.burst: expected an integer"),
        ('agency = "police"', 'agency = "Police!"', "node.agency: expected lowercase"),
        ('matcher = "127.0.0.1:50051"', 'matcher = "nowhere"', "node.matcher: expected host:port"),
        ('kind = "csv"', 'kind = "xlsx"', "source[0].kind: expected one of csv, sqlite"),
        ('schema = "child"', 'schema = "nope.toml"', "node.schema: expected a shipped schema"),
        (
            'given_name = "forename"',
            'given = "forename"',
            "source[0].columns (key 2 of the table): not a",
        ),
        ('staff = ["given_name"', 'staff = ["shoe_size"', "disclosure.staff[0]: not a schema"),
        ("[disclosure]\nstaff = [", "[disclosure]\nstaff = 3 #[", "disclosure.staff: expected an"),
        (
            "[disclosure]\nstaff = [",
            "[disclosure]\nsaff = [",
            "disclosure (key 1 of the table): unkn",
        ),
    ],
)
def test_bad_values_are_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in VALID
    problems = problems_of(tmp_path, VALID.replace(old, new, 1))
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = (
        VALID.replace("key_version = 2", 'key_version = "two"')
        .replace('listen = "127.0.0.1:0"', 'lisen = "127.0.0.1:0"')
        .replace('cert = "pki/police-node.pem"\n', "")
        .replace("burst = 5", "burst = 0")
        .replace('table = "people"', "")
    )
    problems = problems_of(tmp_path, text)
    expected = [
        "node.key_version: expected an integer",
        "node: unknown key (key ",
        "tls.cert: required key is missing",
        "rate_limits.burst: expected an integer >= 1",
        "source[1].table: required",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert len(problems) == len(expected)


def test_missing_tables_and_bad_toml(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[rate_limits]\nburst = 3\n")
    assert "node: required table is missing" in problems
    assert "tls: required table is missing" in problems
    assert len(problems) == 2
    assert problems_of(tmp_path, "[node\n")[0].startswith("not valid TOML")


def test_schema_from_a_relative_path(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "mine.toml").write_text(load_schema("febrl").to_toml(), "utf-8")
    text = VALID.replace('schema = "child"', 'schema = "schemas/mine.toml"')
    text = text.split("[[source]]")[0] + "[disclosure]\nstaff = []\n"
    config = load_node_config(write_config(tmp_path, text))
    assert config.schema == load_schema("febrl")
    assert config.schema_source == "schemas/mine.toml"


def test_a_broken_schema_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[schema]\nname = 1\n", "utf-8")
    problems = problems_of(tmp_path, VALID.replace('schema = "child"', 'schema = "bad.toml"'))
    assert any(p.startswith("node.schema: ") for p in problems)


def test_read_linkage_keys(tmp_path: Path) -> None:
    config: NodeConfig = load_node_config(write_config(tmp_path))
    keys = read_linkage_keys(config)
    assert keys.secret == LinkageSecret.for_tests()
    assert keys.key_version == 2


def test_unreadable_secret_names_the_file_not_the_content(tmp_path: Path) -> None:
    config = load_node_config(write_config(tmp_path))
    canary = "zz-canary-secret-zz"
    config.secret_file.write_text(canary, "ascii")
    with pytest.raises(KeyMaterialError) as info:
        read_linkage_keys(config)
    assert canary not in str(info.value)
    config.secret_file.unlink()
    with pytest.raises(KeyMaterialError, match=r"secret\.hex"):
        read_linkage_keys(config)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_node_config(tmp_path / "absent.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(VALID.encode("utf-8") + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_node_config(path)


@pytest.mark.parametrize(
    "line",
    [
        'agency = "police"',
        'schema = "child"',
        "key_version = 2",
        'listen = "127.0.0.1:0"',
        'matcher = "127.0.0.1:50051"',
        "publish_batch_size = 500",
        "lookups_per_minute = 30",
        'kind = "csv"',
        "day_first = true",
        "burst = 5",
    ],
)
def test_no_problem_echoes_a_value(tmp_path: Path, line: str) -> None:
    canary = "Zebulonqx-canary"
    key = line.split(" = ")[0]
    problems = problems_of(tmp_path, VALID.replace(line, f'{key} = "{canary}:x"', 1))
    assert problems[0].startswith(("node.", "source[0]", "rate_limits.")), problems
    assert all(canary not in p for p in problems), problems


def test_invalid_toml_is_reported_without_quoting_the_file(tmp_path: Path) -> None:
    # tomllib's own message would quote the repeated table name.
    problems = problems_of(tmp_path, "[AMELIA_BAKER]\n[AMELIA_BAKER]\n")
    assert problems == ("not valid TOML: a table is declared twice (line 2, column 14)",)
    assert "AMELIA" not in " ".join(problems)


def test_the_removed_publish_form_key_is_an_unknown_key(tmp_path: Path) -> None:
    text = VALID.replace(
        "publish_batch_size = 500", 'publish_batch_size = 500\npublish_form = "records"'
    )
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith("node: unknown key (key 10 of the table), expected one of: ")
    assert "publish_form" not in problem and "records" not in problem


def test_peers_and_disclosure_limits(tmp_path: Path) -> None:
    config = load_node_config(write_config(tmp_path, VALID))
    assert config.peers == {}
    assert config.rate_limits.disclosure_window_minutes == 60.0
    assert config.rate_limits.disclosures_per_minute == 10.0
    text = VALID + (
        "disclosure_window_minutes = 15\ndisclosures_per_minute = 2\ndisclosure_burst = 3\n"
        'disclosure_alert_per_hour = 9\n[peers]\nhealth = "10.0.0.2:7001"\n'
    )
    config = load_node_config(write_config(tmp_path, text))
    assert dict(config.peers) == {"health": "10.0.0.2:7001"}
    limits = config.rate_limits
    assert (limits.disclosure_window_minutes, limits.disclosures_per_minute) == (15.0, 2.0)
    assert (limits.disclosure_burst, limits.disclosure_alert_per_hour) == (3, 9)


def test_bad_peers_and_disclosure_limits_are_reported_together(tmp_path: Path) -> None:
    text = VALID + (
        "disclosure_window_minutes = 0\ndisclosure_burst = 0\n"
        '[peers]\npolice = "10.0.0.1:1"\nHealth = "x:1"\nschool = "nowhere"\n'
    )
    problems = problems_of(tmp_path, text)
    assert any("disclosure_window_minutes" in p for p in problems)
    assert any("disclosure_burst" in p for p in problems)
    assert any("own agency" in p for p in problems)
    assert any("peers (key 2 of the table): expected an agency id" in p for p in problems)
    assert "peers (key 3 of the table): expected host:port" in problems
    assert not any("school" in p or "Health" in p for p in problems)


def test_purpose_codes_default_and_per_federation(tmp_path: Path) -> None:
    assert load_node_config(write_config(tmp_path)).purposes == DEFAULT_PURPOSE_CODES
    text = VALID.replace(
        "publish_batch_size = 500", 'publish_batch_size = 500\npurposes = ["mash_referral"]'
    )
    assert load_node_config(write_config(tmp_path, text)).purposes == ("mash_referral",)
    canary = "s47 re Zebulonqx"
    text = VALID.replace(
        "publish_batch_size = 500", f'publish_batch_size = 500\npurposes = ["{canary}"]'
    )
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith("node.purposes: expected a non-empty list of distinct purpose")
    assert "Zebulonqx" not in problem
