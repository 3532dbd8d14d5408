"""Agency node configuration: one strict TOML file read by ``jigsaw node serve``.

Role in the pipeline: tells a node which agency it is, which linkage schema and secret it
encodes with, where its SQLite store and audit log live, how to reach the matcher, which
certificates it presents, which sources it ingests (with their column mappings), which
fields each caller role may have disclosed, where the other agencies' nodes are (for
disclosures it relays), its lookup and disclosure limits, and the purpose codes its staff may
state for a lookup (:mod:`server.common.purposes`).

Parsing is strict, with the mechanism the schema uses (:mod:`linkage.strict`): the file's
tables are the models below (:class:`NodeFile`); an unknown key, a missing required key or a
value of the wrong type is a problem, and every problem in the file is reported at once in
one :class:`ConfigError`. Rules that need another table (a source's columns name schema
fields, a disclosure names mapped fields, a peer is not this agency) read it ahead from the
document and the schema, passed to the validators as context. Relative paths resolve against
the directory of the config file. The rules shared with the matcher config live in
:mod:`server.common.config`; the parsed config is the frozen :class:`NodeConfig`.

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
                                              each form of one: linkage.forms), 1..100000
    ingest_chunk_rows  5000                   rows per store transaction of ingest, 1..1000000
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

Problem messages name the table and key and the expectation; a config file holds no
identifier values, but messages never echo a value, nor a key that is not one of our words
(a schema field, a role, ``local_id``): such a key is named by its position in its table.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
)

from linkage.errors import KeyMaterialError
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema
from linkage.strict import Problems, StrictModel, did_you_mean, rule
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
from server.common.pki import ROLES
from server.common.purposes import DEFAULT_PURPOSE_CODES, PurposeCodes
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
#: Rows ingest writes per store transaction, unless ``node.ingest_chunk_rows`` says otherwise.
CHUNK_ROWS = 5000


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
    tls: TlsFiles
    sources: tuple[SourceConfig, ...]
    disclosure: Mapping[str, tuple[str, ...]]
    rate_limits: RateLimitConfig
    config_path: Path
    peers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    purposes: tuple[str, ...] = DEFAULT_PURPOSE_CODES
    console: ConsoleConfig | None = None
    ingest_chunk_rows: int = CHUNK_ROWS

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


# ------------------------------------------------------------------------ the file's tables


def _context(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context or {}


def _agency(text: str) -> str:
    if not AGENCY_RE.fullmatch(text):
        raise rule("expected lowercase letters, digits and underscores")
    return text


def _column(text: str) -> str:
    if not text:
        raise rule("expected a non-empty column name string")
    return text


def _column_key(name: str, info: ValidationInfo) -> str:
    """A key of ``[source.columns]``: a schema input field or ``local_id``."""
    schema: Schema | None = _context(info).get("schema")
    if schema is not None and name not in {*schema.input_names, LOCAL_ID}:
        raise rule(
            f"not a schema field or {LOCAL_ID!r} (schema fields: "
            f"{', '.join(schema.input_names)}){did_you_mean(name, schema.input_names)}"
        )
    return name


def _extra_key(name: str, info: ValidationInfo) -> str:
    """A key of ``[source.extra]``: a disclosable field that is not a linkage field."""
    schema: Schema | None = _context(info).get("schema")
    if schema is not None and name in {*schema.input_names, LOCAL_ID}:
        raise rule(f"already a schema field or {LOCAL_ID!r}")
    if not NAME_RE.fullmatch(name):
        raise rule("expected a name of letters, digits, _")
    return name


def _values_key(name: str, info: ValidationInfo) -> str:
    """A key of ``[source.values]``: ``missing`` or a field this source maps."""
    mapped = {*info.data.get("columns", {}), *info.data.get("extra", {})}
    if name != "missing" and name not in mapped:
        raise rule('not a field this source maps (or "missing"); map its column first')
    return name


def _values_entry(value: object) -> list[str] | dict[str, str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return value
    raise rule('expected an array of strings (missing) or a table of code = "value" strings')


Column = Annotated[str, AfterValidator(_column)]


class SourceSection(StrictModel):
    """One ``[[source]]`` table."""

    kind: Literal["csv", "sqlite"]
    path: str
    table: str = ""
    #: None: the schema's ``day_first``
    day_first: bool | None = None
    columns: dict[Annotated[str, AfterValidator(_column_key)], Column]
    extra: dict[Annotated[str, AfterValidator(_extra_key)], Column] = Field(default_factory=dict)
    values: dict[
        Annotated[str, AfterValidator(_values_key)],
        Annotated[list[str] | dict[str, str], PlainValidator(_values_entry)],
    ] = Field(default_factory=dict)

    @field_validator("values")
    @classmethod
    def _values_kinds(
        cls, values: dict[str, list[str] | dict[str, str]]
    ) -> dict[str, list[str] | dict[str, str]]:
        if not isinstance(values.get("missing", []), list):
            raise rule("expected an array of strings", at="missing")
        if any(isinstance(v, list) for k, v in values.items() if k != "missing"):
            raise rule('expected a table of code = "value" strings per mapped field')
        return values

    @classmethod
    def rules(cls, data: Mapping[str, Any], context: Mapping[str, Any]) -> list[tuple[str, str]]:
        broken = []
        columns, kind, table = data.get("columns"), data.get("kind"), data.get("table", "")
        if isinstance(columns, dict) and LOCAL_ID not in columns:
            broken.append(("columns", f"a {LOCAL_ID!r} column mapping is required"))
        if isinstance(table, str) and kind == "sqlite" and not table:
            broken.append(("table", "required (a table name) when kind is 'sqlite'"))
        elif isinstance(table, str) and kind == "sqlite" and not NAME_RE.fullmatch(table):
            broken.append(("table", "expected a plain table name (letters, digits, _)"))
        elif isinstance(table, str) and kind == "csv" and table:
            broken.append(("table", "only allowed when kind is 'sqlite'"))
        return broken


class NodeSection(StrictModel):
    """The ``[node]`` table."""

    agency: Annotated[str, AfterValidator(_agency)]
    schema_ref: str = Field(alias="schema")
    secret_file: str
    key_version: PositiveInt = 1
    store: str
    audit_log: str
    listen: Address = "127.0.0.1:0"
    matcher: Address
    publish_batch_size: Annotated[int, AfterValidator(int_from(1, 100_000))] = 1000
    ingest_chunk_rows: Annotated[int, AfterValidator(int_from(1, 1_000_000))] = CHUNK_ROWS
    purposes: PurposeCodes = DEFAULT_PURPOSE_CODES


class RateLimitSection(StrictModel):
    """The ``[rate_limits]`` table (see :class:`RateLimitConfig`)."""

    lookups_per_minute: Annotated[float, AfterValidator(positive_number())] = 60.0
    burst: PositiveInt = 10
    enumeration_alert_per_hour: PositiveInt = 200
    disclosures_per_minute: Annotated[float, AfterValidator(positive_number())] = 10.0
    disclosure_burst: PositiveInt = 5
    disclosure_alert_per_hour: PositiveInt = 30
    disclosure_window_minutes: Annotated[float, AfterValidator(positive_number(most=24 * 60))] = (
        60.0
    )


class ConsoleSection(StrictModel):
    """The ``[console]`` table (see :class:`ConsoleConfig`)."""

    listen: Address = "127.0.0.1:8443"
    node: Address | None = None
    cert: str
    key: str
    activity: str = "console-activity.sqlite"
    session_minutes: Annotated[int, AfterValidator(int_from(1, 480))] = 15

    @classmethod
    def rules(cls, data: Mapping[str, Any], context: Mapping[str, Any]) -> list[tuple[str, str]]:
        # the console reaches the node at ``node``, else at the node's own listen address
        node = data["node"] if "node" in data else context.get("node_listen") or "127.0.0.1:0"
        if isinstance(node, str) and node.endswith(":0"):
            return [("node", "expected this node's address with a fixed port")]
        return []

    def node_address(self, node_listen: object) -> str:
        """Where the console reaches the node: ``node``, else the node's own ``listen``."""
        if self.node is not None:
            return self.node
        return node_listen if isinstance(node_listen, str) else "127.0.0.1:0"


def _role(name: str) -> str:
    if name not in ROLES:
        raise rule(f"unknown role, expected one of: {', '.join(sorted(ROLES))}"
                   f"{did_you_mean(name, ROLES)}")  # fmt: skip
    return name


def _disclosed(name: str, info: ValidationInfo) -> str:
    disclosable: Collection[str] | None = _context(info).get("disclosable")
    schema: Schema | None = _context(info).get("schema")
    if disclosable is not None and schema is not None and name not in disclosable:
        raise rule(
            "not a schema field or an extra field of a source (schema fields: "
            f"{', '.join(schema.input_names)}){did_you_mean(name, schema.input_names)}"
        )
    return name


def _peer(agency: str, info: ValidationInfo) -> str:
    if not AGENCY_RE.fullmatch(agency):
        raise rule("expected an agency id of lowercase letters, digits, underscores")
    if agency == _context(info).get("agency"):
        raise rule("this node's own agency needs no peer address")
    return agency


class NodeFile(StrictModel):
    """A node config file: its tables."""

    node: NodeSection
    tls: TlsSection
    source: list[SourceSection] = Field(default_factory=list)
    disclosure: dict[
        Annotated[str, AfterValidator(_role)],
        list[Annotated[str, AfterValidator(_disclosed)]],
    ] = Field(default_factory=dict)
    peers: dict[Annotated[str, AfterValidator(_peer)], Address] = Field(default_factory=dict)
    rate_limits: RateLimitSection = RateLimitSection()
    console: ConsoleSection | None = None


# ---------------------------------------------------------------------------------- parsing


def parse_node_config(text: str, *, base_dir: Path, config_path: Path | None = None) -> NodeConfig:
    """Parse config TOML text; relative paths resolve against ``base_dir``."""
    data = read_toml(text, config_path)
    problems = Problems()
    node = read_ahead(data, "node")
    schema = load_schema_ref("node.schema", node.get("schema"), base_dir, problems)
    sources = data.get("source")
    extra_names = {
        name
        for source in (sources if isinstance(sources, list) else [])
        if isinstance(source, dict) and isinstance(source.get("extra"), dict)
        for name in source["extra"]
    }
    context = {
        "schema": schema,
        "agency": node.get("agency"),
        "node_listen": node.get("listen"),
        "disclosable": None if schema is None else {*schema.input_names, *extra_names},
    }
    printable = {*ROLES, LOCAL_ID, "missing", *(schema.input_names if schema else ())}
    parsed = parse_config(
        NodeFile, data, problems, path=config_path, printable=printable, context=context
    )
    assert schema is not None  # a schema that failed to load is a problem, raised above
    return _node_config(parsed, schema, base_dir, config_path)


def _source_config(source: SourceSection, schema: Schema, base_dir: Path) -> SourceConfig:
    missing = source.values.get("missing", [])
    return SourceConfig(
        kind=source.kind,
        path=resolve_path(base_dir, source.path),
        table=source.table,
        day_first=schema.day_first if source.day_first is None else source.day_first,
        columns=MappingProxyType(dict(source.columns)),
        extra=MappingProxyType(dict(source.extra)),
        missing_values=frozenset(v.strip().casefold() for v in missing),
        value_maps=MappingProxyType(
            {
                name: MappingProxyType(
                    {code.strip().casefold(): (meant or None) for code, meant in codes.items()}
                )
                for name, codes in source.values.items()
                if isinstance(codes, dict)
            }
        ),
    )


def _node_config(
    parsed: NodeFile, schema: Schema, base_dir: Path, config_path: Path | None
) -> NodeConfig:
    node = parsed.node
    console = parsed.console
    return NodeConfig(
        agency=node.agency,
        schema_source=node.schema_ref,
        schema=schema,
        secret_file=resolve_path(base_dir, node.secret_file),
        key_version=node.key_version,
        store=resolve_path(base_dir, node.store),
        audit_log=resolve_path(base_dir, node.audit_log),
        listen=node.listen,
        matcher=node.matcher,
        publish_batch_size=node.publish_batch_size,
        ingest_chunk_rows=node.ingest_chunk_rows,
        tls=parsed.tls.resolve(base_dir),
        sources=tuple(_source_config(source, schema, base_dir) for source in parsed.source),
        disclosure=MappingProxyType(
            {role: tuple(dict.fromkeys(names)) for role, names in parsed.disclosure.items()}
        ),
        rate_limits=RateLimitConfig(**parsed.rate_limits.model_dump()),
        config_path=config_path if config_path is not None else base_dir / "<text>",
        peers=MappingProxyType(dict(parsed.peers)),
        purposes=node.purposes,
        console=None
        if console is None
        else ConsoleConfig(
            listen=console.listen,
            node=console.node_address(node.listen),
            cert=resolve_path(base_dir, console.cert),
            key=resolve_path(base_dir, console.key),
            activity=resolve_path(base_dir, console.activity),
            session_minutes=console.session_minutes,
        ),
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
