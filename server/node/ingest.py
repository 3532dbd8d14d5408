"""Ingest: read an agency's records (CSV or a SQLite table) into the node's store.

Role: step 1 of the data flow. A source is read through its column mapping (``[[source]]``
in the node config) by :mod:`server.node.sources`, and every value is checked and
normalised here, once, with the source's own settings: dates, postcodes, NHS numbers and
sex are stored in canonical form, names and text as given (:func:`_stored_value`), so
publish encodes exactly what ingest read.

Invariants:

* good rows are never lost because a neighbour was bad, and never lost silently: every row
  read is stored, superseded by a later row of its local id, or rejected with its line
  (:class:`IngestReport` says how the counts add up); a stray CSV quote rejects only its own
  line (:func:`server.node.sources.read_csv`);
* a row with a failing value (:func:`_checked`: unsafe characters, too long; a date after
  today; a formula-like name) is rejected with one :class:`RowProblem` per failing field,
  except an invalid NHS number, which is stored as missing with a warning; a row without a
  local id is rejected; a repeated local id: the later row wins, a warning names both lines;
* no message or problem carries a value: only line numbers, field and column names. A line
  number is the physical line a CSV row starts on (the header is line 1), or a SQLite
  ``rowid``;
* rows are written in chunks of ``chunk_rows`` (the node's ``ingest_chunk_rows``, by default
  :data:`server.node.config.CHUNK_ROWS`) per store transaction, so an interrupted
  ingest keeps every committed chunk and a re-run upserts by local id without duplicating.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from linkage.errors import InvalidValueError
from linkage.normalise import NORMALISERS, YearRange
from linkage.schema import FieldSpec, Schema
from server.node.config import CHUNK_ROWS, LOCAL_ID, SourceConfig
from server.node.sources import (
    INVALID_NHS_NUMBER,
    PROBLEM_CATEGORIES,
    RawRow,
    RowProblem,
    SourceError,
    check_source_header,
    read_csv,
    read_sqlite,
)
from server.node.store import NodeStore

__all__ = [
    "CANONICAL_KINDS",
    "INVALID_NHS_NUMBER",
    "MAX_VALUE_CHARS",
    "PROBLEM_CATEGORIES",
    "IngestReport",
    "ProgressCallback",
    "RowProblem",
    "SourceError",
    "check_source_header",
    "ingest_all",
    "ingest_source",
]

logger = logging.getLogger(__name__)


ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did: rows read, store outcome counts, rejected rows and warnings.

    Every row read is counted once more: ``rows_read == inserted + updated + unchanged +
    superseded + rejected_rows`` (``superseded``: rows replaced by a later row of the same
    local id before they were written).
    """

    rows_read: int
    inserted: int
    updated: int
    unchanged: int
    superseded: int
    rejected: tuple[RowProblem, ...]
    warnings: tuple[RowProblem, ...]
    #: Of the rows stored, how many lack a value, per schema input field (an unmapped field
    #: is missing on every row; an invalid NHS number stored as missing counts here too).
    missing: Mapping[str, int] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        """Rows written to the store (inserted, updated or unchanged)."""
        return self.inserted + self.updated + self.unchanged

    @property
    def rejected_rows(self) -> int:
        """Number of distinct rows rejected (a row may have several problems)."""
        return len({problem.line for problem in self.rejected})


# --------------------------------------------------------------------------- ingest


#: The longest value stored, in characters (after tab, CR and LF became spaces): any local
#: id, schema field or extra field longer than this rejects its row. Real names, addresses
#: and ids are far shorter; the bound keeps pasted documents and padding out of the store.
MAX_VALUE_CHARS = 256

#: Schema field kinds stored in their canonical form (:func:`_stored_value`).
CANONICAL_KINDS = frozenset({"date", "postcode", "nhs_number", "sex"})
_NAME_KINDS = frozenset({"name", "family_name"})
_FORMULA_LEADS = ("=", "+", "-", "@")
_LINE_BREAKS_RE = re.compile(r"[\t\r\n]+")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs"})
_JOINERS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ: part of the spelling in some scripts


def _unsafe_character(text: str) -> bool:
    """Whether ``text`` holds a character that must not be stored: a control, format
    (bidirectional overrides, zero-width marks but ZWJ/ZWNJ), line or paragraph separator,
    private-use or surrogate character."""
    return any(
        unicodedata.category(char) in _UNSAFE_CATEGORIES and char not in _JOINERS for char in text
    )


def _checked(value: str | None, line: int, name: str, problems: list[RowProblem]) -> str | None:
    """A present value with tab, CR and LF made spaces, or None when missing; a problem is
    added (and None returned) when the value cannot be stored: longer than
    :data:`MAX_VALUE_CHARS`, or holding an unsafe character (:func:`_unsafe_character`).
    Every stored value passes here: local id, schema fields and extra fields."""
    if value is None or not value.strip():
        return None
    value = _LINE_BREAKS_RE.sub(" ", value)
    if len(value) > MAX_VALUE_CHARS:
        problems.append(
            RowProblem(line, name, f"longer than {MAX_VALUE_CHARS} characters", "too_long")
        )
        return None
    if _unsafe_character(value):
        problems.append(
            RowProblem(
                line,
                name,
                "contains a control, bidirectional or invisible character",
                "unsafe_character",
            )
        )
        return None
    return value


def _stored_value(
    spec: FieldSpec,
    value: str,
    line: int,
    day_first: bool,
    years: YearRange,
    today: str,
    problems: list[RowProblem],
    warnings: list[RowProblem],
) -> str | None:
    """The value stored for a checked present value of a schema field; a problem or warning
    is added when it fails.

    Kinds date, postcode, nhs_number and sex are stored in canonical form
    (``linkage.normalise``), normalised with the source's ``day_first``, so that no source
    setting is applied twice or forgotten (``day_first`` is the only per-source setting that
    changes a value; a schema's own ``day_first`` never re-reads a stored date); a date after
    today is a problem, an NHS number that fails normalisation a warning (stored as
    missing). Kinds name, family_name, text and exact are stored as given, because their
    normalisers read no source setting and their canonical form loses what a reader needs
    (accents, capitals, particles); a name beginning with ``=``, ``+``, ``-`` or ``@`` (a
    spreadsheet formula) is a problem."""
    name = spec.input_name
    try:
        canonical = NORMALISERS[spec.kind](value, field=name, day_first=day_first, years=years)
    except InvalidValueError as exc:
        if spec.kind == "nhs_number":
            warnings.append(
                RowProblem(line, name, f"{exc.reason}; stored as missing", INVALID_NHS_NUMBER)
            )
        else:
            problems.append(RowProblem(line, name, exc.reason, "invalid_value"))
        return None
    if canonical is None:
        return None
    if spec.kind == "date" and canonical > today:
        problems.append(RowProblem(line, name, "date in the future", "future_date"))
        return None
    if spec.kind in _NAME_KINDS and value.lstrip().startswith(_FORMULA_LEADS):
        problems.append(
            RowProblem(line, name, "not a name (begins with =, +, - or @)", "not_a_name")
        )
        return None
    return canonical if spec.kind in CANONICAL_KINDS else value


def ingest_source(
    store: NodeStore,
    source_cfg: SourceConfig,
    schema: Schema,
    *,
    progress: ProgressCallback | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> IngestReport:
    """Read one source into ``store`` (see the module docstring for the row rules), committing
    every ``chunk_rows`` rows."""
    if source_cfg.kind == "csv":
        rows = read_csv(source_cfg)
    elif source_cfg.kind == "sqlite":
        rows = read_sqlite(source_cfg)
    else:
        raise SourceError(f"source kind {source_cfg.kind!r}: expected 'csv' or 'sqlite'")

    reading = _Reading(
        field_specs=[
            spec for spec in schema.comparison_specs if spec.input_name in source_cfg.columns
        ],
        unmapped=[name for name in schema.input_names if name not in source_cfg.columns],
        extra_names=list(source_cfg.extra),
        day_first=source_cfg.day_first,
        years=schema.date_range,
        today=date.today().isoformat(),
    )
    chunk: dict[str, dict[str, str | None]] = {}
    rows_read = inserted = updated = unchanged = superseded = 0
    missing = dict.fromkeys(schema.input_names, 0)

    def flush() -> None:
        nonlocal inserted, updated, unchanged
        if chunk:
            for fields in chunk.values():
                for name in missing:
                    missing[name] += fields.get(name) is None
            counts = store.upsert_many(chunk.items())
            inserted += counts.inserted
            updated += counts.updated
            unchanged += counts.unchanged
            chunk.clear()
        if progress is not None:
            progress(rows_read)

    for raw in rows:
        rows_read += 1
        if raw.problem is not None:
            reading.rejected.append(raw.problem)
        elif (
            accepted := reading.accept(
                RawRow(
                    raw.line,
                    {entry: source_cfg.own_value(entry, v) for entry, v in raw.values.items()},
                )
            )
        ) is not None:
            local_id, fields = accepted
            if chunk.pop(local_id, None) is not None:  # a later row of the id wins: file order
                superseded += 1
            chunk[local_id] = fields
        if len(chunk) >= chunk_rows:
            flush()
    flush()
    logger.info(
        "ingested %s: %d rows read, %d inserted, %d updated, %d unchanged, %d superseded, "
        "%d problems, %d warnings",
        source_cfg.path.name, rows_read, inserted, updated, unchanged, superseded,
        len(reading.rejected), len(reading.warnings),
    )  # fmt: skip
    report = IngestReport(
        rows_read=rows_read,
        inserted=inserted,
        updated=updated,
        unchanged=unchanged,
        superseded=superseded,
        rejected=tuple(reading.rejected),
        warnings=tuple(reading.warnings),
        missing=missing,
    )
    _record_quality(store, source_cfg.path.name, report)
    return report


@dataclass
class _Reading:
    """One source's ingest state: what its rows are checked against, and what was found."""

    field_specs: Sequence[FieldSpec]
    unmapped: Sequence[str]
    extra_names: Sequence[str]
    day_first: bool
    years: YearRange  # the schema's plausible years of a date
    today: str  # ISO date: a date after it is in the future
    rejected: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)
    first_line: dict[str, int] = field(default_factory=dict)

    def accept(self, raw: RawRow) -> tuple[str, dict[str, str | None]] | None:
        """The local id and stored fields of one read row, or None (and its problems
        recorded) when it is rejected."""
        line = raw.line
        problems: list[RowProblem] = []
        row_warnings: list[RowProblem] = []
        local_id = _checked(raw.values.get(LOCAL_ID), line, LOCAL_ID, problems)
        if local_id is None and not problems:
            problems.append(RowProblem(line, LOCAL_ID, "missing local id", "missing_local_id"))
        fields: dict[str, str | None] = dict.fromkeys(self.unmapped)
        for spec in self.field_specs:
            name = spec.input_name  # a field published in views is read and stored once
            value = _checked(raw.values.get(name), line, name, problems)
            if value is not None:
                value = _stored_value(
                    spec,
                    value,
                    line,
                    self.day_first,
                    self.years,
                    self.today,
                    problems,
                    row_warnings,
                )
            fields[name] = value
        for name in self.extra_names:
            fields[name] = _checked(raw.values.get(name), line, name, problems)
        if problems or local_id is None:
            self.rejected.extend(problems)
            return None
        self.warnings.extend(row_warnings)
        earlier = self.first_line.get(local_id)
        if earlier is not None:
            self.warnings.append(
                RowProblem(
                    line,
                    LOCAL_ID,
                    f"duplicate local id (also on line {earlier}); this row wins",
                    "duplicate_local_id",
                )
            )
        self.first_line[local_id] = line
        return local_id, fields


def ingest_all(
    store: NodeStore,
    sources: Sequence[SourceConfig],
    schema: Schema,
    *,
    progress: ProgressCallback | None = None,
) -> list[IngestReport]:
    """Ingest every configured source in order; one report per source."""
    return [ingest_source(store, source, schema, progress=progress) for source in sources]


def _record_quality(store: NodeStore, source: str, report: IngestReport) -> None:
    """Keep the data-quality summary of one source's ingest in ``store`` (replacing that
    source's previous one), read back by :mod:`server.node.quality`: counts and field names,
    never a value."""
    reasons_by_row: dict[int, set[tuple[str, str]]] = {}
    for problem in report.rejected:
        reasons_by_row.setdefault(problem.line, set()).add((problem.category, problem.field))
    rejected = Counter(reason for reasons in reasons_by_row.values() for reason in reasons)
    summary = {
        "rows_read": report.rows_read,
        "stored": report.stored,
        "superseded": report.superseded,
        "rejected_rows": report.rejected_rows,
        "rejected": [
            {"reason": reason, "field": field, "rows": rows}
            for (reason, field), rows in sorted(rejected.items())
        ],
        "invalid_nhs_numbers": sum(p.category == INVALID_NHS_NUMBER for p in report.warnings),
        "missing": dict(report.missing),
    }
    store.save_source_quality(source, json.dumps(summary, sort_keys=True))
