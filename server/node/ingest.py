"""Ingest: read an agency's records (CSV or a SQLite table) into the node's store.

Role: step 1 of the data flow. A source is read through its column mapping (``[[source]]``
in the node config) and every value is checked and normalised here, once, with the source's
own settings: dates, postcodes, NHS numbers and sex are stored in canonical form, names and
text as given (:func:`_stored_value`), so publish encodes exactly what ingest read.

Invariants:

* good rows are never lost because a neighbour was bad, and never lost silently: every row
  read is stored, superseded by a later row of its local id, or rejected with its line
  (:class:`IngestReport` says how the counts add up); a stray CSV quote rejects only its own
  line (:func:`_read_csv`);
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

import collections
import csv
import json
import logging
import re
import sqlite3
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from linkage.errors import InvalidValueError, JigsawError
from linkage.normalise import NORMALISERS, YearRange
from linkage.schema import FieldSpec, Schema
from server.node.config import CHUNK_ROWS, LOCAL_ID, SourceConfig
from server.node.store import NodeStore

logger = logging.getLogger(__name__)


ProgressCallback = Callable[[int], None]


class SourceError(JigsawError):
    """A source cannot be read at all (missing file, missing mapped column, bad table)."""


@dataclass(frozen=True)
class RowProblem:
    """A problem with one source row: its line (CSV) or rowid (SQLite), field, and reason.

    ``field`` is a schema field, ``local_id``, or empty for a whole-row problem. ``reason`` is
    the sentence shown to the operator; ``category`` the reason's code, one of
    :data:`PROBLEM_CATEGORIES`, which the data-quality report counts (server.node.quality).
    """

    line: int
    field: str
    reason: str
    category: str = "other"


#: The codes of :attr:`RowProblem.category`: why a row was rejected (the first ten) or what a
#: warning says about a stored row (the last two). Categories, never values.
#: The warning category of an NHS number stored as missing.
INVALID_NHS_NUMBER = "invalid_nhs_number"
PROBLEM_CATEGORIES: tuple[str, ...] = (
    "malformed_row",  # a CSV row the csv module cannot parse
    "unterminated_quote",  # a quoted value that never closes properly
    "not_utf8",  # bytes that are not valid UTF-8
    "column_count",  # not the header's number of columns
    "missing_local_id",
    "too_long",  # longer than MAX_VALUE_CHARS
    "unsafe_character",  # a control, bidirectional or invisible character
    "invalid_value",  # a value its field's normaliser refuses (an impossible date, ...)
    "future_date",
    "not_a_name",  # a name that begins like a spreadsheet formula
    "invalid_nhs_number",  # warning: fails its check digit or format; stored as missing
    "duplicate_local_id",  # warning: a later row of the same local id wins
    "other",
)


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


@dataclass
class _RawRow:
    line: int
    values: dict[str, str | None]  # mapping entry (field, local_id, extra) -> raw value
    problem: RowProblem | None = None


# --------------------------------------------------------------------------- readers


def _check_mapping(source: SourceConfig, available: Sequence[str], what: str) -> dict[str, int]:
    """Index of each mapped column among ``available``; SourceError naming every missing one."""
    index: dict[str, int] = {}
    for position, name in enumerate(available):
        index.setdefault(name, position)
    mapping = {**source.columns, **source.extra}
    missing = [
        f"mapping entry {entry!r} -> column {column!r}"
        for entry, column in mapping.items()
        if column not in index
    ]
    if missing:
        raise SourceError(
            f"source {source.path.name}: {what} has no column for " + ", ".join(missing)
        )
    return {entry: index[column] for entry, column in mapping.items()}


def _decoded_lines(handle: Any, bad_lines: set[int]) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for the file's lines; remember the numbers of lines
    that are not UTF-8 (decoded with replacement characters)."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            yield number, raw.decode("utf-8", errors="replace")


class _LineFeed:
    """The lines a ``csv.reader`` reads, remembering those of the current record, with
    push-back so that the lines a runaway quoted field swallowed are read again."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self._back: collections.deque[tuple[int, str]] = collections.deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        item = self._back.popleft() if self._back else next(self._lines)
        self.taken.append(item)
        return item[1]

    def push_back(self, items: Sequence[tuple[int, str]]) -> None:
        self._back.extendleft(reversed(items))


def _cells_alone(text: str) -> list[str]:
    """The cells of one physical line parsed on its own, leniently."""
    return next(csv.reader([text], strict=False), [])


def _looks_like_a_row(text: str, width: int, id_at: int) -> bool:
    """Whether a line that a quoted value swallowed would be a row on its own: the header's
    width and a local id (a row without one could never be stored)."""
    cells = _cells_alone(text)
    return len(cells) == width and bool(cells[id_at].strip())


def _runaway_problem(
    line_text: str, line: int, header: Sequence[str], fields_at: dict[int, str]
) -> RowProblem:
    """The problem of a line whose quoted value runs away: the column the quote opened in."""
    column = max(len(_cells_alone(line_text)) - 1, 0)
    where = f"column {header[column]!r}" if column < len(header) else f"column {column + 1}"
    return RowProblem(
        line,
        fields_at.get(column, ""),
        f"unterminated quoted field in {where} (a stray double quote?); "
        "the lines after it were read as rows of their own",
        "unterminated_quote",
    )


def _read_csv(source: SourceConfig) -> Iterator[_RawRow]:
    """The rows of a CSV source, each with the line it starts on.

    A quoted value may span lines. A quote that opens a value and never closes properly (a
    stray double quote) would swallow the rows after it, so a record read over several lines
    is taken only when the CSV is well formed (``strict``: a closing quote is followed by a
    delimiter or the end of the line, and the file does not end inside quotes), it has the
    header's number of columns, and no line it swallowed would be a row on its own (the
    header's width and a local id). Otherwise its first line is rejected as an unterminated
    quoted field (naming the column the quote opened, and its schema field when mapped) and
    reading resumes on the next line, so every row after it is read again. A quoted value is
    also bounded by the ``csv`` module's field size limit. A row written on one line is never
    taken into a neighbour's value this way; a runaway that closes inside a later row's own
    multi-line quoted value can still take that row's first line (the rest is then reported
    as malformed). A row with the wrong number of columns, or bytes that are not valid
    UTF-8, is rejected (``field`` empty: a whole-row problem).
    """
    bad_lines: set[int] = set()
    try:
        handle = source.path.open("rb")
    except OSError as exc:
        raise SourceError(f"source {source.path}: cannot open ({exc.strerror})") from None
    with handle:
        feed = _LineFeed(_decoded_lines(handle, bad_lines))
        reader = csv.reader(feed, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"source {source.path.name}: empty file (no header line)") from None
        except csv.Error:
            raise SourceError(f"source {source.path.name}: malformed header line") from None
        if 1 in bad_lines:
            raise SourceError(f"source {source.path.name}: header line is not valid UTF-8")
        header = [h.strip() for h in header]
        positions = _check_mapping(source, header, "the header")
        fields_at = {pos: entry for entry, pos in reversed(positions.items())}
        id_at = positions[LOCAL_ID]
        width = len(header)
        while True:
            feed.taken = []
            try:
                cells: list[str] | None = next(reader)
            except StopIteration:
                break
            except csv.Error:
                cells = None
            taken = feed.taken
            if not taken:
                break
            line = taken[0][0]
            if len(taken) > 1 and (
                cells is None
                or len(cells) != width
                or any(_looks_like_a_row(text, width, id_at) for _, text in taken[1:])
            ):
                feed.push_back(taken[1:])
                yield _RawRow(line, {}, _runaway_problem(taken[0][1], line, header, fields_at))
                continue
            if cells is None:
                yield _RawRow(line, {}, RowProblem(line, "", "malformed CSV row", "malformed_row"))
                continue
            if not cells:
                continue  # a blank line
            if any(number in bad_lines for number, _ in taken):
                yield _RawRow(line, {}, RowProblem(line, "", "not valid UTF-8", "not_utf8"))
                continue
            if len(cells) != width:
                yield _RawRow(
                    line,
                    {},
                    RowProblem(
                        line, "", f"expected {width} columns, got {len(cells)}", "column_count"
                    ),
                )
                continue
            yield _RawRow(line, {entry: cells[pos] for entry, pos in positions.items()})


def _sqlite_text(value: object) -> str | None:
    """A SQLite cell as text (numbers in their plain form); ValueError when not UTF-8."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_sqlite(source: SourceConfig) -> Iterator[_RawRow]:
    if not source.path.is_file():
        raise SourceError(f"source {source.path}: file not found")
    conn = sqlite3.connect(f"{source.path.resolve().as_uri()}?mode=ro", uri=True)
    conn.text_factory = bytes  # decode ourselves, so bad UTF-8 is a row problem
    try:
        try:
            info = conn.execute(f"PRAGMA table_info({_quote(source.table)})").fetchall()
        except sqlite3.DatabaseError as exc:
            raise SourceError(f"source {source.path.name}: cannot read ({exc})") from None
        if not info:
            raise SourceError(f"source {source.path.name}: no table {source.table!r}")
        names = [bytes(row[1]).decode("utf-8", "replace") for row in info]
        positions = _check_mapping(source, names, f"table {source.table!r}")
        entries = list(positions)
        select = ", ".join(_quote(names[positions[e]]) for e in entries)
        try:
            cursor = conn.execute(f"SELECT rowid, {select} FROM {_quote(source.table)}")
        except sqlite3.DatabaseError as exc:
            raise SourceError(
                f"source {source.path.name}: cannot select rows of {source.table!r} "
                f"(a table needs a rowid) ({type(exc).__name__})"
            ) from None
        for row in cursor:
            line = int(row[0])
            try:
                values = {e: _sqlite_text(v) for e, v in zip(entries, row[1:], strict=True)}
            except UnicodeDecodeError:
                yield _RawRow(line, {}, RowProblem(line, "", "not valid UTF-8", "not_utf8"))
                continue
            yield _RawRow(line, values)
    finally:
        conn.close()


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


def check_source_header(source_cfg: SourceConfig) -> None:
    """Open the source and check its header (CSV) or table (SQLite) against the mapping,
    reading nothing past the first row; SourceError naming every missing column."""
    reader = _read_csv if source_cfg.kind == "csv" else _read_sqlite
    rows = reader(source_cfg)
    try:
        next(rows, None)
    finally:
        getattr(rows, "close", lambda: None)()  # the generator's file, now


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
        rows = _read_csv(source_cfg)
    elif source_cfg.kind == "sqlite":
        rows = _read_sqlite(source_cfg)
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
                _RawRow(
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

    def accept(self, raw: _RawRow) -> tuple[str, dict[str, str | None]] | None:
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
