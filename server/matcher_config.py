"""Matcher configuration: one strict TOML file read by ``jigsaw matcher serve``.

Role in the pipeline: tells the matcher which linkage schema and key version it serves (it
refuses encodings made with anything else), where its SQLite store and audit log live, where
it listens, which certificates it presents, whether benchmark mode is on and how many records
one ``PublishRequest`` message may carry.

Parsing is strict, like the schema and the node config: an unknown key, a missing required
key or a value of the wrong type is a problem, and every problem in the file is reported at
once in one :class:`~server.node_config.ConfigError`. Relative paths resolve against the
directory of the config file.

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

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkage.errors import SchemaError
from linkage.schema import Schema, load_schema, parse_schema, shipped_schema_names
from server.node_config import ConfigError
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
_TLS_KEYS = {"ca_cert", "cert", "key"}

_TYPE_WORDS: Mapping[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    float: "a number",
    list: "an array",
    dict: "a table",
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


class _Problems:
    """Collects problems so the whole file is reported at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def table(self, where: str, data: Mapping[str, Any], allowed: set[str]) -> Mapping[str, Any]:
        if where not in data:
            self.add(f"{where}: required table is missing")
            return {}
        value = data[where]
        if not isinstance(value, dict):
            self.add(f"{where}: expected a table")
            return {}
        for key in sorted(set(value) - allowed):
            self.add(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        return value

    def get(
        self, where: str, data: Mapping[str, Any], key: str, kind: type, default: Any = ...
    ) -> Any:
        """``data[key]`` checked against ``kind``; a problem and ``None`` when wrong."""
        if key not in data:
            if default is ...:
                self.add(f"{where}.{key}: required key is missing")
                return None
            return default
        value = data[key]
        # bool is an int subclass: never accept it where an integer is expected
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            got = _TYPE_WORDS.get(type(value), type(value).__name__)
            self.add(f"{where}.{key}: expected {_TYPE_WORDS[kind]}, got {got}")
            return None
        return value


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _address_ok(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


def _load_schema(base: Path, ref: str, problems: _Problems) -> Schema | None:
    try:
        if ref in shipped_schema_names():
            return load_schema(ref)
        path = _resolve(base, ref)
        if not path.is_file():
            problems.add(
                "matcher.schema: expected a shipped schema name "
                f"({', '.join(shipped_schema_names())}) or an existing schema file"
            )
            return None
        return parse_schema(path.read_text("utf-8"))
    except SchemaError as exc:
        for item in exc.problems:
            problems.add(f"matcher.schema: {item}")
        return None


def parse_matcher_config(
    text: str, *, base_dir: Path, config_path: Path | None = None
) -> MatcherConfig:
    """Parse config TOML text; relative paths resolve against ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"]) from None
    problems = _Problems()
    for key in sorted(set(data) - _TOP_KEYS):
        problems.add(f"config: unknown key {key!r} (allowed: {', '.join(sorted(_TOP_KEYS))})")

    matcher = problems.table("matcher", data, _MATCHER_KEYS)
    has_matcher = isinstance(data.get("matcher"), dict)
    schema_ref = problems.get("matcher", matcher, "schema", str) if has_matcher else None
    key_version = problems.get("matcher", matcher, "key_version", int, 1)
    if key_version is not None and key_version < 1:
        problems.add("matcher.key_version: expected an integer >= 1")
    store = problems.get("matcher", matcher, "store", str) if has_matcher else None
    audit_log = problems.get("matcher", matcher, "audit_log", str) if has_matcher else None
    listen = problems.get("matcher", matcher, "listen", str, "127.0.0.1:0")
    if listen is not None and not _address_ok(listen):
        problems.add("matcher.listen: expected host:port")
    benchmark_mode = problems.get("matcher", matcher, "benchmark_mode", bool, False)
    max_batch = problems.get(
        "matcher", matcher, "max_publish_batch", int, DEFAULT_MAX_PUBLISH_BATCH
    )
    if max_batch is not None and not 1 <= max_batch <= MAX_PUBLISH_BATCH_LIMIT:
        problems.add(
            f"matcher.max_publish_batch: expected an integer from 1 to {MAX_PUBLISH_BATCH_LIMIT}"
        )
    schema = _load_schema(base_dir, schema_ref, problems) if schema_ref is not None else None

    tls = problems.table("tls", data, _TLS_KEYS)
    has_tls = isinstance(data.get("tls"), dict)
    tls_paths = {
        key: problems.get("tls", tls, key, str) if has_tls else None for key in sorted(_TLS_KEYS)
    }

    if problems.items:
        raise ConfigError(problems.items)
    if (
        schema_ref is None
        or schema is None
        or key_version is None
        or store is None
        or audit_log is None
        or listen is None
        or benchmark_mode is None
        or max_batch is None
        or any(value is None for value in tls_paths.values())
    ):
        raise ConfigError(["config: incomplete"])  # unreachable: each None added a problem
    return MatcherConfig(
        schema_source=schema_ref,
        schema=schema,
        key_version=key_version,
        store=_resolve(base_dir, store),
        audit_log=_resolve(base_dir, audit_log),
        listen=listen,
        benchmark_mode=benchmark_mode,
        max_publish_batch=max_batch,
        tls=TlsFiles(
            ca_cert=_resolve(base_dir, str(tls_paths["ca_cert"])),
            cert=_resolve(base_dir, str(tls_paths["cert"])),
            key=_resolve(base_dir, str(tls_paths["key"])),
        ),
        config_path=config_path if config_path is not None else base_dir / "<text>",
    )


def load_matcher_config(path: Path | str) -> MatcherConfig:
    """Read and parse a matcher config file (see the module docstring for the layout)."""
    config_path = Path(path).resolve()
    try:
        text = config_path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(["config file: not valid UTF-8"]) from None
    return parse_matcher_config(text, base_dir=config_path.parent, config_path=config_path)
