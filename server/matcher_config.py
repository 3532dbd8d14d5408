"""Matcher configuration: one strict TOML file read by ``jigsaw matcher serve``.

Role in the pipeline: tells the matcher which linkage schema and key version it serves (it
refuses encodings made with anything else), where its SQLite store and audit log live, where
it listens, which certificates it presents, whether benchmark mode is on and how many records
one ``PublishRequest`` message may carry.

Parsing is strict, like the schema and the node config: an unknown key, a missing required
key or a value of the wrong type is a problem, and every problem in the file is reported at
once in one :class:`~server.config_parsing.ConfigError`. Relative paths resolve against the
directory of the config file. The rules shared with the node config live in
:mod:`server.config_parsing`.

File layout (``*`` = required)::

    [matcher]
    schema*            "child"                  shipped schema name, or a path to a schema TOML
    key_version        1                        integer >= 1
    store*             "matcher.sqlite"
    audit_log*         "matcher-audit.jsonl"
    listen             "127.0.0.1:0"            host:port the matcher serves on
    benchmark_mode     false                    operators (only) get raw probabilities
    max_publish_batch  5000                     records per PublishRequest message (1..100000)
    [tls]              ca_cert*, cert*, key*    PEM files (see server.pki)

Problem messages name the key and the expectation, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from linkage.schema import Schema
from server.config_parsing import (
    ConfigError,
    Problems,
    load_schema_ref,
    parse_toml,
    read_config_file,
    read_tls_section,
    resolve_path,
)
from server.tls import TlsFiles

__all__ = ["ConfigError", "MatcherConfig", "load_matcher_config", "parse_matcher_config"]

DEFAULT_MAX_PUBLISH_BATCH = 5000
MAX_PUBLISH_BATCH_LIMIT = 100_000

_TOP_KEYS = {"matcher", "tls"}
_MATCHER_KEYS = {
    "schema",
    "key_version",
    "store",
    "audit_log",
    "listen",
    "benchmark_mode",
    "max_publish_batch",
}


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
    schema = (
        load_schema_ref("matcher.schema", schema_ref, base_dir, problems)
        if schema_ref is not None
        else None
    )
    tls = read_tls_section(data, problems, check_keys=isinstance(data.get("tls"), dict))

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
    )


def load_matcher_config(path: Path | str) -> MatcherConfig:
    """Read and parse a matcher config file (see the module docstring for the layout)."""
    text, config_path = read_config_file(path)
    return parse_matcher_config(text, base_dir=config_path.parent, config_path=config_path)
