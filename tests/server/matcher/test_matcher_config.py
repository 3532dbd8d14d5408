"""Tests of the strict matcher config parser (server.matcher.config).

The parsing rules it shares with the node config (server.common.config) are checked here
through both parsers: the same mistake in the same section gets the same message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.schema import load_schema
from server.common.purposes import DEFAULT_PURPOSE_CODES
from server.common.tls import TlsFiles
from server.matcher.config import (
    AnchorLimitConfig,
    ConfigError,
    MatcherConfig,
    MatchLimitConfig,
    load_matcher_config,
    parse_matcher_config,
)
from server.node.config import ConfigError as NodeConfigError
from server.node.config import parse_node_config

VALID = """
[matcher]
schema = "child"
key_version = 2
store = "matcher.sqlite"
audit_log = "logs/matcher-audit.jsonl"
listen = "0.0.0.0:50051"
benchmark_mode = true
max_publish_batch = 250

[tls]
ca_cert = "pki/ca.pem"
cert = "pki/matcher.pem"
key = "/etc/jigsaw/matcher.key"
"""

MINIMAL = """
[matcher]
schema = "child"
store = "m.sqlite"
audit_log = "m.jsonl"
[tls]
ca_cert = "ca.pem"
cert = "m.pem"
key = "m.key"
"""

NODE_MINIMAL = """
[node]
agency = "police"
schema = "child"
secret_file = "secret.hex"
store = "p.sqlite"
audit_log = "p.jsonl"
matcher = "127.0.0.1:50051"
[tls]
ca_cert = "ca.pem"
cert = "p.pem"
key = "p.key"
"""

CANARY = "Zebulonqx-canary"


def problems_of(text: str, base_dir: Path) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_matcher_config(text, base_dir=base_dir)
    return info.value.problems


def test_valid_config_parses_with_resolved_paths(tmp_path: Path) -> None:
    path = tmp_path / "matcher.toml"
    path.write_text(VALID, "utf-8")
    config = load_matcher_config(path)
    base = tmp_path.resolve()
    assert config.schema == load_schema("child")
    assert config.schema_source == "child"
    assert config.key_version == 2
    assert config.store == base / "matcher.sqlite"
    assert config.audit_log == base / "logs" / "matcher-audit.jsonl"
    assert config.listen == "0.0.0.0:50051"
    assert config.benchmark_mode is True
    assert config.max_publish_batch == 250
    assert config.tls == TlsFiles(
        ca_cert=base / "pki" / "ca.pem",
        cert=base / "pki" / "matcher.pem",
        key=Path("/etc/jigsaw/matcher.key"),
    )
    assert config.config_path == path.resolve()


def test_defaults_for_optional_keys(tmp_path: Path) -> None:
    config = parse_matcher_config(MINIMAL, base_dir=tmp_path)
    assert config.key_version == 1
    assert config.listen == "127.0.0.1:0"
    assert config.benchmark_mode is False
    assert config.max_publish_batch == 5000
    assert config.config_path == tmp_path / "<text>"


def test_config_is_frozen(tmp_path: Path) -> None:
    config: MatcherConfig = parse_matcher_config(MINIMAL, base_dir=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_schema_from_a_relative_path(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(load_schema("febrl").to_toml(), "utf-8")
    config = parse_matcher_config(
        MINIMAL.replace('schema = "child"', 'schema = "mine.toml"'), base_dir=tmp_path
    )
    assert config.schema == load_schema("febrl")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[tls]", "[tsl]", "config: unknown key (key "),
        ('store = "m', 'stor = "m', "matcher: unknown key (key "),
        ('key = "m.key"', 'keyfile = "m.key"', "tls: unknown key (key "),
    ],
)
def test_a_misspelt_name_is_unknown_and_missing(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    problems = problems_of(MINIMAL.replace(old, new, 1), tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith(expected), problems
    assert "required" in problems[1], problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('schema = "child"\n', "", "matcher.schema: required key is missing"),
        ('store = "m.sqlite"\n', "", "matcher.store: required key is missing"),
        ('audit_log = "m.jsonl"\n', "", "matcher.audit_log: required key is missing"),
        ('cert = "m.pem"\n', "", "tls.cert: required key is missing"),
        ('schema = "child"', "schema = 3", "matcher.schema: expected a string, got an integer"),
        ('schema = "child"', 'schema = "no.toml"', "matcher.schema: expected a shipped schema"),
        ('store = "m.sqlite"', "store = true", "matcher.store: expected a string, got a boolean"),
        ('key = "m.key"', "key = []", "tls.key: expected a string, got an array"),
        ("[tls]", 'listen = "nowhere"\n[tls]', "matcher.listen: expected host:port"),
        ("[tls]", 'listen = "h:70000"\n[tls]', "matcher.listen: expected host:port"),
        ("[tls]", "key_version = 0\n[tls]", "matcher.key_version: expected an integer >= 1"),
        ("[tls]", "key_version = true\n[tls]", "matcher.key_version: expected an integer, got"),
        ("[tls]", "benchmark_mode = 1\n[tls]", "matcher.benchmark_mode: expected a boolean"),
        ("[tls]", "max_publish_batch = 0\n[tls]", "matcher.max_publish_batch: expected an integ"),
        ("[tls]", "max_publish_batch = 100001\n[tls]", "matcher.max_publish_batch: expected an"),
    ],
)
def test_each_mistake_is_one_problem(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in MINIMAL
    problems = problems_of(MINIMAL.replace(old, new, 1), tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_range_messages_name_the_range(tmp_path: Path) -> None:
    text = MINIMAL.replace("[tls]", "max_publish_batch = 0\n[tls]")
    assert problems_of(text, tmp_path) == (
        "matcher.max_publish_batch: expected an integer from 1 to 100000",
    )


def test_all_problems_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('schema = "child"\n', "")
        .replace('store = "m.sqlite"', 'stor = "m.sqlite"')
        .replace("[tls]", "key_version = 0\nlisten = 5\n[tls]")
        .replace('cert = "m.pem"\n', "")
    )
    assert problems_of(text, tmp_path) == (
        "matcher: unknown key (key 1 of the table), expected one of: audit_log, benchmark_mode, "
        'key_version, listen, max_publish_batch, purposes, schema, store (did you mean "store"?)',
        "matcher.schema: required key is missing",
        "matcher.key_version: expected an integer >= 1",
        "matcher.store: required key is missing",
        "matcher.listen: expected a string, got an integer",
        "tls.cert: required key is missing",
    )


def test_missing_or_malformed_tables(tmp_path: Path) -> None:
    assert problems_of("", tmp_path) == (
        "matcher: required table is missing",
        "tls: required table is missing",
    )
    # a section that is not a table is one problem, not one per key it lacks
    text = 'matcher = 5\ntls = "pki"\n'
    assert problems_of(text, tmp_path) == ("matcher: expected a table", "tls: expected a table")
    assert problems_of("[matcher\n", tmp_path)[0].startswith("not valid TOML")


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_matcher_config(tmp_path / "absent.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.encode("utf-8") + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_matcher_config(path)


def test_both_configs_raise_one_error_class() -> None:
    assert ConfigError is NodeConfigError


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('cert = "', 'cerd = "'),
        ('key = "', "key = 1 #"),
        ("[tls]", '[tls]\nca_cert_x = "x"'),
        ("[tls]", "key_version = -1\n[tls]"),
        ("[tls]", 'listen = "localhost"\n[tls]'),
        ("[tls]", 'listen = ":80"\n[tls]'),
    ],
)
def test_node_and_matcher_report_shared_keys_alike(tmp_path: Path, old: str, new: str) -> None:
    matcher_text = MINIMAL.replace("m.pem", "p.pem").replace("m.key", "p.key")
    node_text = NODE_MINIMAL
    assert (
        parse_matcher_config(matcher_text, base_dir=tmp_path).tls
        == parse_node_config(node_text, base_dir=tmp_path).tls
    )
    with pytest.raises(ConfigError) as matcher_error:
        parse_matcher_config(matcher_text.replace(old, new, 1), base_dir=tmp_path)
    with pytest.raises(ConfigError) as node_error:
        parse_node_config(node_text.replace(old, new, 1), base_dir=tmp_path)
    as_node = [p.replace("matcher", "node", 1) for p in matcher_error.value.problems]
    assert as_node == list(node_error.value.problems)


_KEYS = ("schema", "key_version", "store", "audit_log", "listen", "benchmark_mode")


@settings(deadline=None, max_examples=60)
@given(
    key=st.sampled_from((*_KEYS, "max_publish_batch", "ca_cert", "cert", "key", "extra_key")),
    decoration=st.sampled_from(["{}", "{}:99", "~/{}", "[{}]", "{}\u00e9", "../{}"]),
)
def test_no_message_echoes_a_value(key: str, decoration: str) -> None:
    value = decoration.format(CANARY).replace('"', "")
    section = "[matcher]" if key in _KEYS or key == "max_publish_batch" else "[tls]"
    lines = [line for line in MINIMAL.splitlines() if not line.startswith(f"{key} =")]
    at = lines.index(section) + 1
    lines.insert(at, f'{key} = "{value}"')
    text = "\n".join(lines) + "\n"
    try:
        parse_matcher_config(text, base_dir=Path(__file__).parent)
    except ConfigError as exc:
        assert CANARY not in str(exc)
        assert all(CANARY not in problem for problem in exc.problems)
        return
    # the only keys that take any string: paths and a free host name
    assert key in ("store", "audit_log", "listen", "ca_cert", "cert", "key")


def test_a_path_under_an_unknown_home_is_a_config_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('schema = "child"', 'schema = "~no-such-user-here/s.toml"')
    assert problems_of(text, tmp_path)[0].startswith("matcher.schema: ")


# ------------------------------------------------------------------------------ [match_limits]


def with_limits(*lines: str) -> str:
    return MINIMAL + "[match_limits]\n" + "".join(f"{line}\n" for line in lines)


def test_match_limits_default_when_absent(tmp_path: Path) -> None:
    limits = parse_matcher_config(MINIMAL, base_dir=tmp_path).match_limits
    assert limits == MatchLimitConfig(
        matches_per_minute=120.0,
        burst=60,
        enumeration_alert_per_hour=300,
        max_matches_per_hour=1000,
        person_share=0.25,
    )
    assert isinstance(limits.matches_per_minute, float)
    assert parse_matcher_config(with_limits(), base_dir=tmp_path).match_limits == limits
    # a person's share: a quarter of the node's pace, burst and hourly cap
    assert (limits.person_matches_per_minute, limits.person_burst) == (30.0, 15)
    assert limits.person_matches_per_hour == 250


def test_match_limits_explicit_values(tmp_path: Path) -> None:
    text = with_limits(
        "matches_per_minute = 30",
        "burst = 5",
        "enumeration_alert_per_hour = 40",
        "max_matches_per_hour = 40",  # equal to the threshold is allowed
    )
    limits = parse_matcher_config(text, base_dir=tmp_path).match_limits
    assert limits == MatchLimitConfig(30.0, 5, 40, 40)
    tiny = parse_matcher_config(with_limits("person_share = 0.01"), base_dir=tmp_path)
    assert tiny.match_limits.person_share == 0.01
    assert tiny.match_limits.person_burst == 1  # at least one call each
    assert tiny.match_limits.person_matches_per_hour == 10
    whole = parse_matcher_config(with_limits("person_share = 1"), base_dir=tmp_path)
    assert whole.match_limits.person_share == 1.0
    assert isinstance(whole.match_limits.person_share, float)
    assert isinstance(limits.matches_per_minute, float)
    half = parse_matcher_config(with_limits("matches_per_minute = 0.5"), base_dir=tmp_path)
    assert half.match_limits.matches_per_minute == 0.5


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('matches_per_minute = "fast"', "match_limits.matches_per_minute: expected an integer or"),
        ("matches_per_minute = true", "match_limits.matches_per_minute: expected an integer or"),
        ("matches_per_minute = 0", "match_limits.matches_per_minute: expected a finite number > 0"),
        ("matches_per_minute = -1.5", "match_limits.matches_per_minute: expected a finite number"),
        ("matches_per_minute = inf", "match_limits.matches_per_minute: expected a finite number"),
        ("matches_per_minute = nan", "match_limits.matches_per_minute: expected a finite number"),
        ("burst = 2.5", "match_limits.burst: expected an integer, got a number"),
        ("burst = 0", "match_limits.burst: expected an integer >= 1"),
        ("enumeration_alert_per_hour = 0", "match_limits.enumeration_alert_per_hour: expected an"),
        ('enumeration_alert_per_hour = "x"', "match_limits.enumeration_alert_per_hour: expected"),
        ("max_matches_per_hour = 0", "match_limits.max_matches_per_hour: expected an integer >= 1"),
        ("max_matches_per_hour = false", "match_limits.max_matches_per_hour: expected an integer"),
        # below the default alert threshold (300)
        ("max_matches_per_hour = 299", "match_limits.max_matches_per_hour: expected an integer "
         ">= match_limits.enumeration_alert_per_hour"),
        ("person_share = 0", "match_limits.person_share: expected a number > 0 and <= 1"),
        ("person_share = 1.5", "match_limits.person_share: expected a number > 0 and <= 1"),
        ("person_share = nan", "match_limits.person_share: expected a number > 0 and <= 1"),
        ('person_share = "all"', "match_limits.person_share: expected an integer or"),
        ("maches_per_minute = 5", "match_limits: unknown key (key 1 of the table), expected "
         'one of: burst, enumeration_alert_per_hour, matches_per_minute, max_matches_per_hour, '
         'person_share (did you mean "matches_per_minute"?)'),
    ],
)  # fmt: skip
def test_each_match_limit_mistake_is_one_problem(tmp_path: Path, line: str, expected: str) -> None:
    problems = problems_of(with_limits(line), tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_cap_below_an_explicit_alert_threshold(tmp_path: Path) -> None:
    text = with_limits("enumeration_alert_per_hour = 50", "max_matches_per_hour = 49")
    assert problems_of(text, tmp_path) == (
        "match_limits.max_matches_per_hour: expected an integer >= "
        "match_limits.enumeration_alert_per_hour (the alert must come before the cap)",
    )


def test_match_limit_problems_reported_with_the_rest(tmp_path: Path) -> None:
    text = with_limits("burst = 0", "max_matches_per_hour = 0").replace('store = "m.sqlite"\n', "")
    assert problems_of(text, tmp_path) == (
        "matcher.store: required key is missing",
        "match_limits.burst: expected an integer >= 1",
        "match_limits.max_matches_per_hour: expected an integer >= 1",
    )
    assert problems_of("match_limits = 5\n" + MINIMAL, tmp_path) == (
        "match_limits: expected a table",
    )


@pytest.mark.parametrize(
    "key",
    ["matches_per_minute", "burst", "enumeration_alert_per_hour", "max_matches_per_hour"],
)
def test_match_limit_messages_echo_no_value(tmp_path: Path, key: str) -> None:
    for value in (f'"{CANARY}"', "987654321", "-987654321"):
        text = with_limits(f"{key} = {value}", "enumeration_alert_per_hour = 987654322")
        if key == "enumeration_alert_per_hour":
            text = with_limits(f"{key} = {value}", "max_matches_per_hour = 5")
        try:
            parse_matcher_config(text, base_dir=tmp_path)
        except ConfigError as exc:
            assert CANARY not in str(exc) and "98765432" not in str(exc)
            continue
        raise AssertionError(f"{key} = {value}: expected a problem")


def test_demo_matcher_config_writes_the_defaults(tmp_path: Path) -> None:
    from server.launcher import write_matcher_config

    path = write_matcher_config(tmp_path)
    text = path.read_text("utf-8")
    assert "[match_limits]" in text
    for key in ("matches_per_minute", "burst", "enumeration_alert_per_hour"):
        assert f"\n{key} = " in text
    assert "\nmax_matches_per_hour = " in text
    config = load_matcher_config(path)
    assert config.match_limits == MatchLimitConfig()


def test_purpose_codes_default_and_per_federation(tmp_path: Path) -> None:
    assert parse_matcher_config(MINIMAL, base_dir=tmp_path).purposes == DEFAULT_PURPOSE_CODES
    assert "s47_enquiry" in DEFAULT_PURPOSE_CODES
    text = MINIMAL.replace("[tls]", 'purposes = ["s47_enquiry", "court_order"]\n[tls]')
    assert parse_matcher_config(text, base_dir=tmp_path).purposes == (
        "s47_enquiry",
        "court_order",
    )


@pytest.mark.parametrize(
    "value",
    ["[]", '"s47_enquiry"', '["s47 enquiry"]', f'["{CANARY}"]', '["a", "a"]', "[1]", '["x" ]'],
)
def test_bad_purpose_lists_are_one_problem_without_the_value(tmp_path: Path, value: str) -> None:
    if value == '["x" ]':
        value = '["' + "x" * 49 + '"]'  # over the length bound
    text = MINIMAL.replace("[tls]", f"purposes = {value}\n[tls]")
    (problem,) = problems_of(text, tmp_path)
    assert problem.startswith(
        "matcher.purposes: expected a non-empty list of distinct purpose codes"
    )
    assert CANARY not in problem and "enquiry" not in problem


# ------------------------------------------------------------------------------ [anchor_limits]


def test_anchor_limits_default_and_explicit(tmp_path: Path) -> None:
    assert parse_matcher_config(MINIMAL, base_dir=tmp_path).anchor_limits == AnchorLimitConfig(
        anchors_per_minute=6.0, burst=12, alert_per_hour=60
    )
    text = MINIMAL + "[anchor_limits]\nanchors_per_minute = 2\nburst = 3\nalert_per_hour = 9\n"
    limits = parse_matcher_config(text, base_dir=tmp_path).anchor_limits
    assert limits == AnchorLimitConfig(2.0, 3, 9)
    assert isinstance(limits.anchors_per_minute, float)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("anchors_per_minute = 0", "anchor_limits.anchors_per_minute: expected a finite number"),
        ("anchors_per_minute = inf", "anchor_limits.anchors_per_minute: expected a finite number"),
        ("burst = 0", "anchor_limits.burst: expected an integer >= 1"),
        ('alert_per_hour = "x"', "anchor_limits.alert_per_hour: expected an integer"),
    ],
)
def test_each_anchor_limit_mistake_is_one_problem(tmp_path: Path, line: str, expected: str) -> None:
    problems = problems_of(MINIMAL + f"[anchor_limits]\n{line}\n", tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems
