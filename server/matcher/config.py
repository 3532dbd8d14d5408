"""Matcher configuration: one strict TOML file read by ``jigsaw matcher serve``.

Role in the pipeline: tells the matcher which linkage schema and key version it serves (it
refuses encodings made with anything else), where its SQLite store and audit log live, where
it listens, which certificates it presents, whether benchmark mode is on, how many records
one ``PublishRequest`` message may carry, which purpose codes a ``Match`` may state
(:mod:`server.common.purposes`), how many ``Match`` calls each calling node may
make (``[match_limits]``), and how often each identity may have its audit head held
(``AnchorHead``, ``[anchor_limits]``).

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

The anchor limits pace each identity's ``AnchorHead`` calls (a token bucket,
``anchors_per_minute`` and ``burst``; an "anchor_alert" audit entry above ``alert_per_hour``):
a node anchors every five minutes when its head moved, at shutdown and on an operator's
demand, and each call writes to the matcher's audit log and witnessed file.

Parsing is strict, with the mechanism the schema and the node config use
(:mod:`linkage.strict`): the file's tables are the models below (:class:`MatcherFile`); an
unknown key, a missing required key or a value of the wrong type is a problem, and every
problem in the file is reported at once in one :class:`~server.common.config.ConfigError`.
Relative paths resolve against the directory of the config file. The rules shared with the
node config live in :mod:`server.common.config`; the parsed config is the frozen
:class:`MatcherConfig`.

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
    [anchor_limits]                             optional; per calling identity
    anchors_per_minute         6                token-bucket refill, a finite number > 0
    burst                      12               token-bucket size, integer >= 1
    alert_per_hour             60               integer >= 1; sliding hour

Problem messages name the key and the expectation, never a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from linkage.schema import Schema
from linkage.strict import Problems, StrictModel
from server.common.config import (
    Address,
    ConfigError,
    PositiveInt,
    TlsSection,
    int_from,
    load_schema_ref,
    parse_config,
    positive_number,
    read_ahead,
    read_config_file,
    read_toml,
    resolve_path,
)
from server.common.purposes import DEFAULT_PURPOSE_CODES, PurposeCodes
from server.common.tls import TlsFiles

__all__ = [
    "AnchorLimitConfig",
    "ConfigError",
    "MatchLimitConfig",
    "MatcherConfig",
    "load_matcher_config",
    "parse_matcher_config",
]

DEFAULT_MAX_PUBLISH_BATCH = 5000
MAX_PUBLISH_BATCH_LIMIT = 100_000


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
class AnchorLimitConfig:
    """Per calling identity: AnchorHead token bucket and alert threshold."""

    anchors_per_minute: float = 6.0
    burst: int = 12
    alert_per_hour: int = 60


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
    anchor_limits: AnchorLimitConfig = AnchorLimitConfig()
    purposes: tuple[str, ...] = DEFAULT_PURPOSE_CODES


class MatcherSection(StrictModel):
    """The ``[matcher]`` table."""

    schema_ref: str = Field(alias="schema")
    key_version: PositiveInt = 1
    store: str
    audit_log: str
    listen: Address = "127.0.0.1:0"
    benchmark_mode: bool = False
    max_publish_batch: Annotated[int, AfterValidator(int_from(1, MAX_PUBLISH_BATCH_LIMIT))] = (
        DEFAULT_MAX_PUBLISH_BATCH
    )
    purposes: PurposeCodes = DEFAULT_PURPOSE_CODES


class MatchLimitSection(StrictModel):
    """The ``[match_limits]`` table (see :class:`MatchLimitConfig`)."""

    matches_per_minute: Annotated[float, AfterValidator(positive_number(finite=True))] = 120.0
    burst: PositiveInt = 60
    enumeration_alert_per_hour: PositiveInt = 300
    max_matches_per_hour: PositiveInt = 1000
    person_share: Annotated[float, AfterValidator(positive_number(most=1))] = 0.25

    @classmethod
    def rules(cls, data: Mapping[str, Any], context: Mapping[str, Any]) -> list[tuple[str, str]]:
        defaults = MatchLimitConfig()
        alert = data.get("enumeration_alert_per_hour", defaults.enumeration_alert_per_hour)
        cap = data.get("max_matches_per_hour", defaults.max_matches_per_hour)
        counts = [value for value in (alert, cap) if type(value) is int and value >= 1]
        if len(counts) == 2 and cap < alert:
            return [
                (
                    "max_matches_per_hour",
                    "expected an integer >= match_limits.enumeration_alert_per_hour (the "
                    "alert must come before the cap)",
                )
            ]
        return []


class AnchorLimitSection(StrictModel):
    """The ``[anchor_limits]`` table (see :class:`AnchorLimitConfig`)."""

    anchors_per_minute: Annotated[float, AfterValidator(positive_number(finite=True))] = 6.0
    burst: PositiveInt = 12
    alert_per_hour: PositiveInt = 60


class MatcherFile(StrictModel):
    """A matcher config file: its tables."""

    matcher: MatcherSection
    tls: TlsSection
    match_limits: MatchLimitSection = MatchLimitSection()
    anchor_limits: AnchorLimitSection = AnchorLimitSection()


def parse_matcher_config(
    text: str, *, base_dir: Path, config_path: Path | None = None
) -> MatcherConfig:
    """Parse config TOML text; relative paths resolve against ``base_dir``."""
    data = read_toml(text, config_path)
    problems = Problems()
    ref = read_ahead(data, "matcher").get("schema")
    schema = load_schema_ref("matcher.schema", ref, base_dir, problems)
    parsed = parse_config(MatcherFile, data, problems, path=config_path)
    assert schema is not None  # a schema that failed to load is a problem, raised above
    matcher = parsed.matcher
    return MatcherConfig(
        schema_source=matcher.schema_ref,
        schema=schema,
        key_version=matcher.key_version,
        store=resolve_path(base_dir, matcher.store),
        audit_log=resolve_path(base_dir, matcher.audit_log),
        listen=matcher.listen,
        benchmark_mode=matcher.benchmark_mode,
        max_publish_batch=matcher.max_publish_batch,
        tls=parsed.tls.resolve(base_dir),
        config_path=config_path if config_path is not None else base_dir / "<text>",
        match_limits=MatchLimitConfig(**parsed.match_limits.model_dump()),
        anchor_limits=AnchorLimitConfig(**parsed.anchor_limits.model_dump()),
        purposes=matcher.purposes,
    )


def load_matcher_config(path: Path | str) -> MatcherConfig:
    """Read and parse a matcher config file (see the module docstring for the layout)."""
    text, config_path = read_config_file(path)
    return parse_matcher_config(text, base_dir=config_path.parent, config_path=config_path)
