"""Matcher configuration: one strict TOML file read by ``jigsaw matcher serve``.

Role in the pipeline: tells the matcher which linkage schema and key version it serves (it
refuses encodings made with anything else), where its SQLite store and audit log live, where
it listens, which certificates it presents, whether benchmark mode is on, how many records
one ``PublishRequest`` message may carry, which purpose codes a ``Match`` may state
(:mod:`server.common.purposes`), and how many ``Match`` calls each calling node may
make (``[match_limits]``).

The match limits are the matcher's own, per calling node identity (the certificate's name):
a node's operator controls the node's code and config, so the node's per-staff limits do not
bind a node that holds the linkage secret and calls ``Match`` directly with guessed identities
(an insider probing). A token bucket (``matches_per_minute``, ``burst``) paces each node; an
"enumeration_alert" audit entry is written when a node's calls in the last hour go above
``enumeration_alert_per_hour``; ``max_matches_per_hour`` is a hard cap on a node's answered
calls in any hour (it must be at least the alert threshold, so the alert comes first).
Inside its node's budget, each person a node acts for (``MatchRequest.on_behalf_of``) has at
most ``person_share`` of it: of the bucket's rate and size and of the hourly cap (at least
one call each), so one person cannot starve colleagues. A call counts once whatever its query
rows, and a call refused by any of these limits is charged to none of them.

Parsing is strict, like the schema and the node config: an unknown key, a missing required
key or a value of the wrong type is a problem, and every problem in the file is reported at
once in one :class:`~server.common.config.ConfigError`. Relative paths resolve against the
directory of the config file. The rules shared with the node config live in
:mod:`server.common.config`.

File layout (``*`` = required)::

    [matcher]
    schema*            "child"                  shipped schema name, or a path to a schema TOML
    key_version        1                        integer >= 1
    store*             "matcher.sqlite"
    audit_log*         "matcher-audit.jsonl"
    listen             "127.0.0.1:0"            host:port the matcher serves on
    benchmark_mode     false                    operators (only) get raw probabilities
    max_publish_batch  5000                     records per PublishRequest message (1..100000)
    purposes           [codes]                  the purpose codes a Match may state (default
                                                server.common.purposes.DEFAULT_PURPOSE_CODES)
    [tls]              ca_cert*, cert*, key*    PEM files (see server.common.pki)
                       crl                      revocation list checked on every call
                                                (default: crl.pem beside ca_cert)
    [match_limits]                              optional; per calling node identity
    matches_per_minute         120              token-bucket refill, a finite number > 0
    burst                      60               token-bucket size, integer >= 1
    enumeration_alert_per_hour 300              integer >= 1; sliding hour
    max_matches_per_hour       1000             integer >= enumeration_alert_per_hour
    person_share               0.25             share of the node's bucket and cap one person
                                                may use: a number in (0, 1]

Problem messages name the key and the expectation, never a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from linkage.schema import Schema
from server.common.config import (
    ConfigError,
    Problems,
    load_schema_ref,
    parse_toml,
    read_config_file,
    read_tls_section,
    resolve_path,
)
from server.common.purposes import DEFAULT_PURPOSE_CODES, read_purpose_codes
from server.common.tls import TlsFiles

__all__ = [
    "ConfigError",
    "MatchLimitConfig",
    "MatcherConfig",
    "load_matcher_config",
    "parse_matcher_config",
]

DEFAULT_MAX_PUBLISH_BATCH = 5000
MAX_PUBLISH_BATCH_LIMIT = 100_000

_TOP_KEYS = {"matcher", "tls", "match_limits"}
_MATCHER_KEYS = {
    "schema",
    "key_version",
    "store",
    "audit_log",
    "listen",
    "benchmark_mode",
    "max_publish_batch",
    "purposes",
}
_LIMIT_KEYS = {
    "matches_per_minute",
    "burst",
    "enumeration_alert_per_hour",
    "max_matches_per_hour",
    "person_share",
}


@dataclass(frozen=True)
class MatchLimitConfig:
    """Per calling node: Match token bucket, enumeration alert threshold, hourly hard cap, and
    the share of the bucket and cap each person the node acts for may use."""

    matches_per_minute: float = 120.0
    burst: int = 60
    enumeration_alert_per_hour: int = 300
    max_matches_per_hour: int = 1000
    person_share: float = 0.25

    @property
    def person_matches_per_minute(self) -> float:
        return self.matches_per_minute * self.person_share

    @property
    def person_burst(self) -> int:
        return max(1, math.floor(self.burst * self.person_share))

    @property
    def person_matches_per_hour(self) -> int:
        return max(1, math.floor(self.max_matches_per_hour * self.person_share))


@dataclass(frozen=True)
class MatcherConfig:
    """A parsed, validated matcher config with every path resolved."""

    schema_source: str
    schema: Schema
    key_version: int
    store: Path
    audit_log: Path
    listen: str
    benchmark_mode: bool
    max_publish_batch: int
    tls: TlsFiles
    config_path: Path
    match_limits: MatchLimitConfig = MatchLimitConfig()
    purposes: tuple[str, ...] = DEFAULT_PURPOSE_CODES


def parse_matcher_config(
    text: str, *, base_dir: Path, config_path: Path | None = None
) -> MatcherConfig:
    """Parse config TOML text; relative paths resolve against ``base_dir``."""
    data = parse_toml(text)
    problems = Problems()
    problems.unknown("config", data, _TOP_KEYS)

    matcher = problems.required_table(data, "matcher", _MATCHER_KEYS)
    has_matcher = isinstance(data.get("matcher"), dict)
    schema_ref = problems.get("matcher", matcher, "schema", str) if has_matcher else None
    key_version = problems.get_int("matcher", matcher, "key_version", 1, minimum=1)
    store = problems.get("matcher", matcher, "store", str) if has_matcher else None
    audit_log = problems.get("matcher", matcher, "audit_log", str) if has_matcher else None
    listen = problems.get_address("matcher", matcher, "listen", "127.0.0.1:0")
    benchmark_mode = problems.get("matcher", matcher, "benchmark_mode", bool, False)
    max_batch = problems.get_int(
        "matcher",
        matcher,
        "max_publish_batch",
        DEFAULT_MAX_PUBLISH_BATCH,
        minimum=1,
        maximum=MAX_PUBLISH_BATCH_LIMIT,
    )
    purposes = read_purpose_codes("matcher", matcher, problems)
    schema = (
        load_schema_ref("matcher.schema", schema_ref, base_dir, problems)
        if schema_ref is not None
        else None
    )
    tls = read_tls_section(data, problems, check_keys=isinstance(data.get("tls"), dict))
    match_limits = _read_match_limits(data, problems)

    problems.raise_if_any()
    if (
        schema_ref is None
        or schema is None
        or key_version is None
        or store is None
        or audit_log is None
        or listen is None
        or benchmark_mode is None
        or max_batch is None
        or tls is None
        or match_limits is None
        or purposes is None
    ):
        raise ConfigError(["config: incomplete"])  # unreachable: each None added a problem
    return MatcherConfig(
        schema_source=schema_ref,
        schema=schema,
        key_version=key_version,
        store=resolve_path(base_dir, store),
        audit_log=resolve_path(base_dir, audit_log),
        listen=listen,
        benchmark_mode=benchmark_mode,
        max_publish_batch=max_batch,
        tls=tls.resolve(base_dir),
        config_path=config_path if config_path is not None else base_dir / "<text>",
        match_limits=match_limits,
        purposes=purposes,
    )


def _read_match_limits(data: dict[str, object], problems: Problems) -> MatchLimitConfig | None:
    """The optional ``[match_limits]`` table (defaults when absent); None after a problem."""
    where = "match_limits"
    limits = problems.table(where, data.get(where))
    problems.unknown(where, limits, _LIMIT_KEYS)
    defaults = MatchLimitConfig()
    per_minute = problems.get(
        where, limits, "matches_per_minute", (int, float), defaults.matches_per_minute
    )
    if per_minute is not None and not (math.isfinite(per_minute) and per_minute > 0):
        problems.add(f"{where}.matches_per_minute: expected a finite number > 0")
        per_minute = None
    burst = problems.get_int(where, limits, "burst", defaults.burst, minimum=1)
    alert = problems.get_int(
        where, limits, "enumeration_alert_per_hour", defaults.enumeration_alert_per_hour, minimum=1
    )
    cap = problems.get_int(
        where, limits, "max_matches_per_hour", defaults.max_matches_per_hour, minimum=1
    )
    if alert is not None and cap is not None and alert >= 1 and cap >= 1 and cap < alert:
        problems.add(
            f"{where}.max_matches_per_hour: expected an integer >= "
            f"{where}.enumeration_alert_per_hour (the alert must come before the cap)"
        )
    share = problems.get(where, limits, "person_share", (int, float), defaults.person_share)
    if share is not None and not (math.isfinite(share) and 0 < share <= 1):
        problems.add(f"{where}.person_share: expected a number > 0 and <= 1")
        share = None
    if per_minute is None or burst is None or alert is None or cap is None or share is None:
        return None
    return MatchLimitConfig(float(per_minute), burst, alert, cap, float(share))


def load_matcher_config(path: Path | str) -> MatcherConfig:
    """Read and parse a matcher config file (see the module docstring for the layout)."""
    text, config_path = read_config_file(path)
    return parse_matcher_config(text, base_dir=config_path.parent, config_path=config_path)
