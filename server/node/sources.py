"""Sources: read an agency's CSV file or SQLite table, row by row, through its column mapping.

Role: the reading half of ingest (:mod:`server.node.ingest` checks, normalises and stores
what is read here). A reader yields one :class:`RawRow` per source row, with the line it
starts on (CSV; the header is line 1) or its ``rowid`` (SQLite), and either the raw value of
every mapping entry or the :class:`RowProblem` that rejects the whole row.

Invariants:

* a source that cannot be read at all (missing file, empty or malformed header, a mapped
  column missing, a bad table) raises :class:`SourceError` naming every missing column,
  before any row is yielded;
* a bad row (malformed, a runaway quote, the wrong number of columns, bytes that are not
  UTF-8) is yielded as a problem of its own line and never takes a good neighbour with it
  (:func:`read_csv`);
* no message or problem carries a value: only line numbers, column and field names.
"""

from __future__ import annotations

import collections
import csv
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from linkage.errors import JigsawError
from server.node.config import LOCAL_ID, SourceConfig


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


@dataclass
class RawRow:
    """One source row as read: its line, the raw value of each mapping entry, or its problem."""

    line: int
    values: dict[str, str | None]  # mapping entry (field, local_id, extra) -> raw value
    problem: RowProblem | None = None


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


def read_csv(source: SourceConfig) -> Iterator[RawRow]:
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
                yield RawRow(line, {}, _runaway_problem(taken[0][1], line, header, fields_at))
                continue
            if cells is None:
                yield RawRow(line, {}, RowProblem(line, "", "malformed CSV row", "malformed_row"))
                continue
            if not cells:
                continue  # a blank line
            if any(number in bad_lines for number, _ in taken):
                yield RawRow(line, {}, RowProblem(line, "", "not valid UTF-8", "not_utf8"))
                continue
            if len(cells) != width:
                yield RawRow(
                    line,
                    {},
                    RowProblem(
                        line, "", f"expected {width} columns, got {len(cells)}", "column_count"
                    ),
                )
                continue
            yield RawRow(line, {entry: cells[pos] for entry, pos in positions.items()})


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


def read_sqlite(source: SourceConfig) -> Iterator[RawRow]:
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
                yield RawRow(line, {}, RowProblem(line, "", "not valid UTF-8", "not_utf8"))
                continue
            yield RawRow(line, values)
    finally:
        conn.close()


def check_source_header(source_cfg: SourceConfig) -> None:
    """Open the source and check its header (CSV) or table (SQLite) against the mapping,
    reading nothing past the first row; SourceError naming every missing column."""
    reader = read_csv if source_cfg.kind == "csv" else read_sqlite
    rows = reader(source_cfg)
    try:
        next(rows, None)
    finally:
        getattr(rows, "close", lambda: None)()  # the generator's file, now
