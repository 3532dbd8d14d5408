"""Ingest: read an agency's records (CSV or a SQLite table) into the node's store.

Role in the pipeline: step 1 of the data flow. A source is read through its column mapping
(``[[source]]`` in the node config); every schema field value is normalised once to validate
it, but the *raw* value is what is stored (encoding normalises again, so a normaliser upgrade
needs no re-ingest). Good rows are never lost because a neighbour was bad:

* a row whose value of some field fails normalisation is rejected, with one
  :class:`RowProblem` per failing field (line, field, the normaliser's reason);
* except an NHS-number field (kind ``nhs_number``): an invalid NHS number is stored as missing
  and counted as a warning (the rule is "an invalid NHS number counts as missing");
* a row without a local id is rejected; when a local id repeats within one source the later
  row wins and a warning names both lines;
* CSV only: a row with the wrong number of columns, or with bytes that are not valid UTF-8,
  is rejected (``field`` is empty for a whole-row problem).

Line numbers: for CSV, the physical line on which the row starts (the header is line 1, data
starts on line 2; a quoted value may span lines); for SQLite, the row's ``rowid``.

Rows are written in chunks of :data:`CHUNK_ROWS` per store transaction, so an interrupted
ingest keeps every committed chunk and a re-run upserts by local id without duplicating.
No message or problem ever carries a value, only line numbers, field and column names.
"""

from __future__ import annotations

import csv
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from linkage.errors import InvalidValueError, JigsawError
from linkage.normalise import NORMALISERS
from linkage.schema import Schema
from server.node_config import LOCAL_ID, SourceConfig
from server.node_store import NodeStore

logger = logging.getLogger(__name__)

CHUNK_ROWS = 5000

ProgressCallback = Callable[[int], None]


class SourceError(JigsawError):
    """A source cannot be read at all (missing file, missing mapped column, bad table)."""


@dataclass(frozen=True)
class RowProblem:
    """A problem with one source row: its line (CSV) or rowid (SQLite), field, and reason.

    ``field`` is a schema field, ``local_id``, or empty for a whole-row problem.
    """

    line: int
    field: str
    reason: str


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did: rows read, store outcome counts, rejected rows and warnings."""

    rows_read: int
    inserted: int
    updated: int
    unchanged: int
    rejected: tuple[RowProblem, ...]
    warnings: tuple[RowProblem, ...]

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


def _decoded_lines(handle: Any, bad_lines: set[int]) -> Iterator[str]:
    """Yield the file's lines as text; remember the numbers of lines that are not UTF-8."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            yield raw.decode("utf-8", errors="replace")


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


def _read_csv(source: SourceConfig) -> Iterator[_RawRow]:
    bad_lines: set[int] = set()
    try:
        handle = source.path.open("rb")
    except OSError as exc:
        raise SourceError(f"source {source.path}: cannot open ({exc.strerror})") from None
    with handle:
        reader = csv.reader(_decoded_lines(handle, bad_lines), strict=False)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"source {source.path.name}: empty file (no header line)") from None
        if 1 in bad_lines:
            raise SourceError(f"source {source.path.name}: header line is not valid UTF-8")
        positions = _check_mapping(source, [h.strip() for h in header], "the header")
        width = len(header)
        start = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error:
                end = reader.line_num
                yield _RawRow(start, {}, RowProblem(start, "", "malformed CSV row"))
                start = end + 1
                continue
            end = reader.line_num
            line = start
            start = end + 1
            if not cells:
                continue  # a blank line
            if any(n in bad_lines for n in range(line, end + 1)):
                yield _RawRow(line, {}, RowProblem(line, "", "not valid UTF-8"))
                continue
            if len(cells) != width:
                yield _RawRow(
                    line,
                    {},
                    RowProblem(line, "", f"expected {width} columns, got {len(cells)}"),
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
                yield _RawRow(line, {}, RowProblem(line, "", "not valid UTF-8"))
                continue
            yield _RawRow(line, values)
    finally:
        conn.close()


# --------------------------------------------------------------------------- ingest


def _present(value: str | None) -> str | None:
    if value is None:
        return None
    return value if value.strip() else None


def ingest_source(
    store: NodeStore,
    source_cfg: SourceConfig,
    schema: Schema,
    *,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Read one source into ``store`` (see the module docstring for the row rules)."""
    if source_cfg.kind == "csv":
        rows = _read_csv(source_cfg)
    elif source_cfg.kind == "sqlite":
        rows = _read_sqlite(source_cfg)
    else:
        raise SourceError(f"source kind {source_cfg.kind!r}: expected 'csv' or 'sqlite'")

    field_specs = [
        spec for spec in schema.comparison_specs if spec.input_name in source_cfg.columns
    ]
    unmapped = [name for name in schema.input_names if name not in source_cfg.columns]
    extra_names = list(source_cfg.extra)
    rejected: list[RowProblem] = []
    warnings: list[RowProblem] = []
    first_line: dict[str, int] = {}
    chunk: dict[str, dict[str, str | None]] = {}
    rows_read = inserted = updated = unchanged = 0

    def flush() -> None:
        nonlocal inserted, updated, unchanged
        if chunk:
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
            rejected.append(raw.problem)
        else:
            _accept(
                raw, field_specs, unmapped, extra_names, source_cfg.day_first,
                rejected, warnings, first_line, chunk,
            )  # fmt: skip
        if len(chunk) >= CHUNK_ROWS:
            flush()
    flush()
    logger.info(
        "ingested %s: %d rows read, %d inserted, %d updated, %d unchanged, "
        "%d problems, %d warnings",
        source_cfg.path.name, rows_read, inserted, updated, unchanged,
        len(rejected), len(warnings),
    )  # fmt: skip
    return IngestReport(
        rows_read=rows_read,
        inserted=inserted,
        updated=updated,
        unchanged=unchanged,
        rejected=tuple(rejected),
        warnings=tuple(warnings),
    )


def _accept(
    raw: _RawRow,
    field_specs: Sequence[Any],
    unmapped: Sequence[str],
    extra_names: Sequence[str],
    day_first: bool,
    rejected: list[RowProblem],
    warnings: list[RowProblem],
    first_line: dict[str, int],
    chunk: dict[str, dict[str, str | None]],
) -> None:
    """Validate one read row; add it to ``chunk`` or record why not."""
    line = raw.line
    local_id = _present(raw.values.get(LOCAL_ID))
    problems: list[RowProblem] = []
    row_warnings: list[RowProblem] = []
    if local_id is None:
        problems.append(RowProblem(line, LOCAL_ID, "missing local id"))
    fields: dict[str, str | None] = dict.fromkeys(unmapped)
    for spec in field_specs:
        name = spec.input_name  # a field published in views is read and stored once
        value = _present(raw.values.get(name))
        if value is not None:
            try:
                NORMALISERS[spec.kind](value, field=name, day_first=day_first)
            except InvalidValueError as exc:
                if spec.kind == "nhs_number":
                    row_warnings.append(RowProblem(line, name, f"{exc.reason}; stored as missing"))
                    value = None
                else:
                    problems.append(RowProblem(line, name, exc.reason))
        fields[name] = value
    if problems or local_id is None:
        rejected.extend(problems)
        return
    for name in extra_names:
        fields[name] = _present(raw.values.get(name))
    warnings.extend(row_warnings)
    earlier = first_line.get(local_id)
    if earlier is not None:
        warnings.append(
            RowProblem(
                line, LOCAL_ID, f"duplicate local id (also on line {earlier}); this row wins"
            )
        )
    first_line[local_id] = line
    chunk.pop(local_id, None)  # keep file order: the later row is written after the others
    chunk[local_id] = fields


def ingest_all(
    store: NodeStore,
    sources: Sequence[SourceConfig],
    schema: Schema,
    *,
    progress: ProgressCallback | None = None,
) -> list[IngestReport]:
    """Ingest every configured source in order; one report per source."""
    return [ingest_source(store, source, schema, progress=progress) for source in sources]
