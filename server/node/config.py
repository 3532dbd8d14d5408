"""Agency node configuration: one strict TOML file read by ``jigsaw node serve``.

Role in the pipeline: tells a node which agency it is, which linkage schema and secret it
encodes with, where its SQLite store and audit log live, how to reach the matcher, which
certificates it presents, which sources it ingests (with their column mappings), which
fields each caller role may have disclosed, where the other agencies' nodes are (for
disclosures it relays), its lookup and disclosure limits, and the purpose codes its staff may
state for a lookup (:mod:`server.common.purposes`).

Parsing is strict, like the schema: an unknown key, a missing required key or a value of
the wrong type is a problem, and every problem in the file is reported at once in one
:class:`ConfigError`. Relative paths resolve against the directory of the config file.
The rules shared with the matcher config live in :mod:`server.common.config`.

File layout (``*`` = required)::

    [node]
    agency*            "police"               lowercase letters, digits, underscore
    schema*            "child"                shipped schema name, or a path to a schema TOML
    secret_file*       "secret.hex"           hex linkage secret (read by read_linkage_keys)
    key_version        1                      integer >= 1
    store*             "police.sqlite"
    audit_log*         "police-audit.jsonl"
    listen             "127.0.0.1:0"          host:port this node serves on
    matcher*           "127.0.0.1:50051"      host:port of the matcher
    publish_batch_size 1000                   rows per publish message (a record, or
                                              each form of one: linkage.forms)
    publish_form       "columns"              "columns" (EncodedColumns) or "records" (one
                                              EncodedRecord each: for a matcher older than
                                              columnar Publish, during an upgrade)
    purposes           [codes]                the purpose codes staff may state for a lookup
                                              (default purposes.DEFAULT_PURPOSE_CODES);
                                              the matcher's list must hold them too
    [tls]              ca_cert*, cert*, key*  PEM files (see server.common.pki)
                       crl                    revocation list checked on every call
                                              (default: crl.pem beside ca_cert)
    [[source]]         kind* ("csv" | "sqlite"), path*, table (required for sqlite),
                       day_first (default: the schema's), columns* (schema field or
                       "local_id" -> source column; local_id required), extra (disclosable
                       non-linkage field -> source column), values (the agency's
                       own codes: missing = [cells meaning no value, e.g. "UNKNOWN",
                       "01/01/1900"], and per mapped field a table code -> value meant,
                       e.g. sex = { "1" = "male", "2" = "female", "9" = "" }; "" = no
                       value; codes match trimmed and case-insensitively)
    [disclosure]       role -> list of schema or extra field names released by Disclose
    [peers]            agency -> "host:port" of that agency's node: where this node relays
                       its staff's disclosures of that agency's records
    [rate_limits]      lookups_per_minute (60), burst (10), enumeration_alert_per_hour (200),
                       disclosures_per_minute (10), disclosure_burst (5),
                       disclosure_alert_per_hour (30): per person, as for lookups;
                       disclosure_window_minutes (60): how long after a person's lookup
                       returned a reference that person may ask for its disclosure
    [console]          the agency's staff console (``jigsaw console serve``, server.console):
                       listen ("127.0.0.1:8443"), node (host:port of this node as the
                       console reaches it; default: node.listen), cert*, key* (PEM of a
                       "console" certificate of this agency; the CA and revocation list are
                       [tls]'s), activity ("console-activity.sqlite": staff's own activity,
                       no identifiers), session_minutes (15: idle sign-out)

Problem messages name the key and the expectation; a config file holds no identifier values,
but messages still never echo a value that failed validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from linkage.errors import KeyMaterialError
from linkage.keys import KeySet, LinkageSecret
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
from server.common.pki import ROLES
from server.common.purposes import DEFAULT_PURPOSE_CODES, read_purpose_codes
from server.common.tls import TlsFiles

__all__ = [
    "LOCAL_ID",
    "ConfigError",
    "ConsoleConfig",
    "NodeConfig",
    "RateLimitConfig",
    "SourceConfig",
    "load_node_config",
    "parse_node_config",
    "read_linkage_keys",
]

AGENCY_RE = re.compile(r"[a-z0-9_]+")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LOCAL_ID = "local_id"
SOURCE_KINDS = ("csv", "sqlite")

_NODE_KEYS = {
    "agency",
    "schema",
    "secret_file",
    "key_version",
    "store",
    "audit_log",
    "listen",
    "matcher",
    "publish_batch_size",
    "publish_form",
    "purposes",
}
#: Values of ``node.publish_form``: the form of the Publish messages a node sends.
PUBLISH_FORMS = ("columns", "records")
_SOURCE_KEYS = {"kind", "path", "table", "day_first", "columns", "extra", "values"}
_RATE_KEYS = {
    "lookups_per_minute",
    "burst",
    "enumeration_alert_per_hour",
    "disclosures_per_minute",
    "disclosure_burst",
    "disclosure_alert_per_hour",
    "disclosure_window_minutes",
}
_TOP_KEYS = {"node", "tls", "source", "disclosure", "peers", "rate_limits", "console"}
_CONSOLE_KEYS = {"listen", "node", "cert", "key", "activity", "session_minutes"}


@dataclass(frozen=True)
class ConsoleConfig:
    """The ``[console]`` section: where the agency's staff console listens, how it reaches
    the node, its own certificate (role "console"), its activity file and session expiry."""

    listen: str
    node: str
    cert: Path
    key: Path
    activity: Path
    session_minutes: int = 15


@dataclass(frozen=True)
class SourceConfig:
    """One ingest source. ``columns`` maps schema fields and ``local_id`` to source columns;
    ``extra`` maps disclosable non-linkage fields to source columns."""

    kind: str
    path: Path
    table: str
    day_first: bool
    columns: Mapping[str, str]
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: cells (trimmed, case-folded) that mean "no value" in any mapped field
    missing_values: frozenset[str] = frozenset()
    #: field -> {the agency's own code (trimmed, case-folded): the value it stands for, or
    #: None for "no value"}, applied before normalisation
    value_maps: Mapping[str, Mapping[str, str | None]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def own_value(self, entry: str, value: str | None) -> str | None:
        """``value`` of mapping entry ``entry`` after this source's value maps."""
        if value is None or entry == LOCAL_ID:
            return value
        key = value.strip().casefold()
        if key in self.missing_values:
            return None
        table = self.value_maps.get(entry)
        if table is not None and key in table:
            return table[key]
        return value


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-person lookup and disclosure limits (token buckets), their alert thresholds, and
    how long a lookup's answer entitles its person to ask for a disclosure."""

    lookups_per_minute: float = 60.0
    burst: int = 10
    enumeration_alert_per_hour: int = 200
    disclosures_per_minute: float = 10.0
    disclosure_burst: int = 5
    disclosure_alert_per_hour: int = 30
    disclosure_window_minutes: float = 60.0


@dataclass(frozen=True)
class NodeConfig:
    """A parsed, validated node config with every path resolved."""

    agency: str
    schema_source: str
    schema: Schema
    secret_file: Path
    key_version: int
    store: Path
    audit_log: Path
    listen: str
    matcher: str
    publish_batch_size: int
    publish_form: str
    tls: TlsFiles
    sources: tuple[SourceConfig, ...]
    disclosure: Mapping[str, tuple[str, ...]]
    rate_limits: RateLimitConfig
    config_path: Path
    peers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    purposes: tuple[str, ...] = DEFAULT_PURPOSE_CODES
    console: ConsoleConfig | None = None

    @property
    def extra_fields(self) -> tuple[str, ...]:
        """Every extra (non-linkage) field named by any source, in first-seen order."""
        seen: dict[str, None] = {}
        for source in self.sources:
            for name in source.extra:
                seen.setdefault(name, None)
        return tuple(seen)

    def released_fields(self, role: str) -> tuple[str, ...]:
        """The fields Disclose releases to ``role`` (empty when the role has no policy)."""
        return self.disclosure.get(role, ())


def _parse_mapping(where: str, value: Any, problems: Problems) -> dict[str, str]:
    table = problems.table(where, value)
    out: dict[str, str] = {}
    for name, column in table.items():
        if not isinstance(column, str) or not column:
            problems.add(f"{where}.{name}: expected a non-empty column name string")
            continue
        out[name] = column
    return out


def _parse_values(
    where: str, raw: Any, mapped: set[str], problems: Problems
) -> tuple[frozenset[str], dict[str, Mapping[str, str | None]]]:
    """``[source.values]``: ``missing`` (cells meaning no value, any field) and one table
    per mapped field of the agency's own codes -> the value meant ("" = no value)."""
    table = problems.table(where, raw)
    missing: set[str] = set()
    maps: dict[str, Mapping[str, str | None]] = {}
    for name, value in table.items():
        if name == "missing":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.add(f"{where}.missing: expected an array of strings")
                continue
            missing = {v.strip().casefold() for v in value}
        elif name not in mapped:
            problems.add(
                f'{where}.{name}: not a field this source maps (or "missing"); map its column first'
            )
        elif not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            problems.add(f'{where}.{name}: expected a table of code = "value" strings')
        else:
            maps[name] = MappingProxyType(
                {code.strip().casefold(): (meant or None) for code, meant in value.items()}
            )
    return frozenset(missing), maps


def _parse_source(
    where: str,
    raw: Any,
    base: Path,
    schema: Schema | None,
    problems: Problems,
) -> SourceConfig | None:
    data = problems.table(where, raw)
    if not data:
        if isinstance(raw, dict):
            problems.add(f"{where}: expected keys kind, path and columns")
        return None
    problems.unknown(where, data, _SOURCE_KEYS)
    kind = problems.get(where, data, "kind", str)
    path = problems.get(where, data, "path", str)
    table = problems.get(where, data, "table", str, "")
    default_day_first = schema.day_first if schema is not None else True
    day_first = problems.get(where, data, "day_first", bool, default_day_first)
    columns = _parse_mapping(f"{where}.columns", data.get("columns"), problems)
    extra = _parse_mapping(f"{where}.extra", data.get("extra"), problems)
    if "columns" not in data:
        problems.add(f"{where}.columns: required table is missing")
    elif LOCAL_ID not in columns:
        problems.add(f"{where}.columns: a {LOCAL_ID!r} column mapping is required")
    if kind is not None and kind not in SOURCE_KINDS:
        problems.add(f"{where}.kind: expected one of {', '.join(SOURCE_KINDS)}")
    if kind == "sqlite" and not table:
        problems.add(f"{where}.table: required (a table name) when kind is 'sqlite'")
    if kind == "sqlite" and table and not NAME_RE.fullmatch(table):
        problems.add(f"{where}.table: expected a plain table name (letters, digits, _)")
    if kind == "csv" and table:
        problems.add(f"{where}.table: only allowed when kind is 'sqlite'")
    if schema is not None:
        allowed = set(schema.input_names) | {LOCAL_ID}
        for name in columns:
            if name not in allowed:
                problems.add(
                    f"{where}.columns.{name}: not a schema field or {LOCAL_ID!r} "
                    f"(schema fields: {', '.join(schema.input_names)})"
                )
        for name in extra:
            if name in allowed:
                problems.add(f"{where}.extra.{name}: already a schema field or {LOCAL_ID!r}")
            elif not NAME_RE.fullmatch(name):
                problems.add(f"{where}.extra.{name}: expected a name of letters, digits, _")
    missing, value_maps = _parse_values(
        f"{where}.values", data.get("values"), set(columns) | set(extra), problems
    )
    if kind is None or path is None or day_first is None or table is None:
        return None
    return SourceConfig(
        missing_values=missing,
        value_maps=MappingProxyType(value_maps),
        kind=kind,
        path=resolve_path(base, path),
        table=table,
        day_first=day_first,
        columns=MappingProxyType(columns),
        extra=MappingProxyType(extra),
    )


def parse_node_config(text: str, *, base_dir: Path, config_path: Path | None = None) -> NodeConfig:
    """Parse config TOML text; relative paths resolve against ``base_dir``."""
    problems = Problems()
    data = parse_toml(text)
    problems.unknown("config", data, _TOP_KEYS)

    node = problems.required_table(data, "node", _NODE_KEYS)
    has_node = "node" in data
    agency = problems.get("node", node, "agency", str) if has_node else None
    if agency is not None and not AGENCY_RE.fullmatch(agency):
        problems.add("node.agency: expected lowercase letters, digits and underscores")
    schema_ref = problems.get("node", node, "schema", str) if has_node else None
    secret_file = problems.get("node", node, "secret_file", str) if has_node else None
    key_version = problems.get_int("node", node, "key_version", 1, minimum=1)
    store = problems.get("node", node, "store", str) if has_node else None
    audit_log = problems.get("node", node, "audit_log", str) if has_node else None
    listen = problems.get_address("node", node, "listen", "127.0.0.1:0")
    matcher = problems.get_address("node", node, "matcher") if has_node else None
    batch = problems.get_int("node", node, "publish_batch_size", 1000, minimum=1, maximum=100_000)
    publish_form = problems.get("node", node, "publish_form", str, PUBLISH_FORMS[0])
    if publish_form is not None and publish_form not in PUBLISH_FORMS:
        problems.add('node.publish_form: expected "columns" or "records"')
    purposes = read_purpose_codes("node", node, problems)

    schema = (
        load_schema_ref("node.schema", schema_ref, base_dir, problems)
        if schema_ref is not None
        else None
    )

    tls = read_tls_section(data, problems, check_keys="tls" in data)

    raw_sources = data.get("source", [])
    sources: list[SourceConfig] = []
    if not isinstance(raw_sources, list):
        problems.add("source: expected an array of tables ([[source]])")
        raw_sources = []
    for index, raw in enumerate(raw_sources):
        parsed = _parse_source(f"source[{index}]", raw, base_dir, schema, problems)
        if parsed is not None:
            sources.append(parsed)

    extra_names = {name for source in sources for name in source.extra}
    disclosable = (set(schema.input_names) if schema is not None else set()) | extra_names
    disclosure: dict[str, tuple[str, ...]] = {}
    for role, fields in problems.table("disclosure", data.get("disclosure")).items():
        where = f"disclosure.{role}"
        if role not in ROLES:
            problems.add(f"disclosure: unknown role {role!r} (roles: {', '.join(sorted(ROLES))})")
            continue
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            problems.add(f"{where}: expected an array of field names")
            continue
        if schema is not None:
            for name in fields:
                if name not in disclosable:
                    problems.add(f"{where}: {name!r} is not a schema field or an extra field")
        disclosure[role] = tuple(dict.fromkeys(fields))

    rates = problems.table("rate_limits", data.get("rate_limits"))
    problems.unknown("rate_limits", rates, _RATE_KEYS)
    per_minute = problems.get("rate_limits", rates, "lookups_per_minute", (int, float), 60)
    burst = problems.get("rate_limits", rates, "burst", int, 10)
    alert = problems.get("rate_limits", rates, "enumeration_alert_per_hour", int, 200)
    if per_minute is not None and per_minute <= 0:
        problems.add("rate_limits.lookups_per_minute: expected a number > 0")
    if burst is not None and burst < 1:
        problems.add("rate_limits.burst: expected an integer >= 1")
    if alert is not None and alert < 1:
        problems.add("rate_limits.enumeration_alert_per_hour: expected an integer >= 1")
    defaults = RateLimitConfig()
    disclosure_rate = problems.get(
        "rate_limits", rates, "disclosures_per_minute", (int, float),
        defaults.disclosures_per_minute,
    )  # fmt: skip
    disclosure_burst = problems.get(
        "rate_limits", rates, "disclosure_burst", int, defaults.disclosure_burst
    )
    disclosure_alert = problems.get(
        "rate_limits", rates, "disclosure_alert_per_hour", int, defaults.disclosure_alert_per_hour
    )
    window = problems.get(
        "rate_limits", rates, "disclosure_window_minutes", (int, float),
        defaults.disclosure_window_minutes,
    )  # fmt: skip
    if disclosure_rate is not None and disclosure_rate <= 0:
        problems.add("rate_limits.disclosures_per_minute: expected a number > 0")
    if disclosure_burst is not None and disclosure_burst < 1:
        problems.add("rate_limits.disclosure_burst: expected an integer >= 1")
    if disclosure_alert is not None and disclosure_alert < 1:
        problems.add("rate_limits.disclosure_alert_per_hour: expected an integer >= 1")
    if window is not None and not 0 < window <= 24 * 60:
        problems.add("rate_limits.disclosure_window_minutes: expected a number in (0, 1440]")

    peers: dict[str, str] = {}
    raw_peers = problems.table("peers", data.get("peers"))
    for peer_agency in raw_peers:
        if not AGENCY_RE.fullmatch(peer_agency):
            problems.add("peers: expected agency ids of lowercase letters, digits, underscores")
            continue
        if peer_agency == agency:
            problems.add(f"peers.{peer_agency}: this node's own agency needs no peer address")
            continue
        address = problems.get_address("peers", raw_peers, peer_agency)
        if address is not None:
            peers[peer_agency] = address

    console = _parse_console(data, base_dir, listen, problems)
    problems.raise_if_any()
    # every value below was checked above; the narrowing is for the type checker
    if (
        agency is None
        or schema_ref is None
        or schema is None
        or secret_file is None
        or key_version is None
        or store is None
        or audit_log is None
        or listen is None
        or matcher is None
        or batch is None
        or per_minute is None
        or burst is None
        or alert is None
        or disclosure_rate is None
        or disclosure_burst is None
        or disclosure_alert is None
        or window is None
        or tls is None
        or purposes is None
    ):
        raise ConfigError(["config: incomplete"])  # unreachable: each None added a problem
    return NodeConfig(
        agency=agency,
        schema_source=schema_ref,
        schema=schema,
        secret_file=resolve_path(base_dir, secret_file),
        key_version=key_version,
        store=resolve_path(base_dir, store),
        audit_log=resolve_path(base_dir, audit_log),
        listen=listen,
        matcher=matcher,
        publish_batch_size=batch,
        publish_form=publish_form or PUBLISH_FORMS[0],
        tls=tls.resolve(base_dir),
        sources=tuple(sources),
        disclosure=MappingProxyType(disclosure),
        rate_limits=RateLimitConfig(
            float(per_minute),
            burst,
            alert,
            disclosures_per_minute=float(disclosure_rate),
            disclosure_burst=disclosure_burst,
            disclosure_alert_per_hour=disclosure_alert,
            disclosure_window_minutes=float(window),
        ),
        config_path=config_path if config_path is not None else base_dir / "<text>",
        peers=MappingProxyType(peers),
        purposes=purposes,
        console=console,
    )


def _parse_console(
    data: Mapping[str, Any], base_dir: Path, node_listen: str | None, problems: Problems
) -> ConsoleConfig | None:
    """The optional ``[console]`` section (None when absent or after a problem)."""
    if "console" not in data:
        return None
    section = problems.table("console", data.get("console"))
    problems.unknown("console", section, _CONSOLE_KEYS)
    listen = problems.get_address("console", section, "listen", "127.0.0.1:8443")
    node = problems.get_address("console", section, "node", node_listen or "127.0.0.1:0")
    cert = problems.get("console", section, "cert", str)
    key = problems.get("console", section, "key", str)
    activity = problems.get("console", section, "activity", str, "console-activity.sqlite")
    minutes = problems.get_int("console", section, "session_minutes", 15, minimum=1, maximum=480)
    if node is not None and node.endswith(":0"):
        problems.add("console.node: expected this node's address with a fixed port")
    if (
        listen is None
        or node is None
        or cert is None
        or key is None
        or activity is None
        or minutes is None
    ):
        return None
    return ConsoleConfig(
        listen=listen,
        node=node,
        cert=resolve_path(base_dir, cert),
        key=resolve_path(base_dir, key),
        activity=resolve_path(base_dir, activity),
        session_minutes=minutes,
    )


def load_node_config(path: Path | str) -> NodeConfig:
    """Read and parse a node config file (see the module docstring for the layout)."""
    text, config_path = read_config_file(path)
    return parse_node_config(text, base_dir=config_path.parent, config_path=config_path)


def read_linkage_keys(config: NodeConfig) -> KeySet:
    """Read the node's linkage secret file and return its :class:`KeySet`.

    Raises :class:`KeyMaterialError` naming the file (never its content) when unusable.
    """
    try:
        text = config.secret_file.read_text("ascii")
    except (OSError, UnicodeDecodeError):
        raise KeyMaterialError(
            f"linkage secret file {config.secret_file}: cannot be read as hex text"
        ) from None
    return KeySet(LinkageSecret.from_hex(text), config.key_version)
