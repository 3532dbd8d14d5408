"""Malformed CSV rows: Hypothesis strategies for good and bad rows, and the ingest property."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from benchmarks.fuzz.common import (
    CANARIES,
    CANARY_DOB,
    CANARY_FAMILY,
    CANARY_GIVEN,
    CANARY_NHS,
    CANARY_NHS_SPACED,
    CapturedLogs,
    Findings,
    leaked,
)
from linkage.normalise import NORMALISERS
from linkage.schema import Schema
from server.node.ingest import IngestReport, SourceError, ingest_source
from server.node.store import NodeStore

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- CSV strategies

CSV_HEADER = ("id", "forename", "surname", "dob", "sex", "postcode", "nhs", "address")
CSV_COLUMNS = {
    "local_id": "id",
    "given_name": "forename",
    "family_name": "surname",
    "date_of_birth": "dob",
    "sex": "sex",
    "postcode": "postcode",
    "nhs_number": "nhs",
}
GOOD_NAMES = (
    CANARY_GIVEN,
    CANARY_FAMILY,
    "Amelia",
    "José",
    "Müller",
    "Nguyễn",
    "O'Brien",
    "van der Berg",
    "Smith, Jr",
    'Jo "JJ" Jones',
    "Zoë-Ann",
)
GOOD_POSTCODES = ("SW1A 1AA", "B1 1AA", "M1 1AE", "EH1 1YZ", "")
GOOD_SEXES = ("M", "F", "male", "Female", "1", "2", "")


def _nhs_number(first_nine: int) -> str | None:
    digits = f"{first_nine:09d}"
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11
    if check == 10:
        return None
    return digits + str(0 if check == 11 else check)


@st.composite
def good_row(draw: st.DrawFn, number: int) -> list[str]:
    """A row that ingest must store: one line, every value valid (or empty).

    On one line because that is ingest's contract: a runaway quote never takes a row written
    on one line (one closing inside a later row's own multi-line value can take that row's
    first line: :func:`server.node.sources.read_csv`)."""
    name = st.one_of(
        st.sampled_from(GOOD_NAMES),
        st.text("abcdefghijklmnopqrstuvwxyzé", min_size=3, max_size=20).map(str.title),
    )
    year, month, day = (
        draw(st.integers(2000, 2020)),
        draw(st.integers(1, 12)),
        draw(st.integers(1, 28)),
    )
    dob = draw(
        st.sampled_from(
            [f"{day:02d}/{month:02d}/{year}", f"{year}-{month:02d}-{day:02d}", CANARY_DOB, ""]
        )
    )
    nhs = _nhs_number(draw(st.integers(100_000_000, 999_999_999))) or ""
    return [
        f"good-{number:05d}",
        draw(name),
        draw(name),
        dob,
        draw(st.sampled_from(GOOD_SEXES)),
        draw(st.sampled_from(GOOD_POSTCODES)),
        draw(st.sampled_from([nhs, CANARY_NHS, CANARY_NHS_SPACED, ""])),
        draw(st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), max_size=60)),
    ]


_UNSAFE = ("\x00", "\x1b[31m", "\u202e", "\u2028", "\x07", "\ufeff", "\u200b", "\ue000")


@st.composite
def bad_line(draw: st.DrawFn, number: int) -> bytes:
    """A malformed row (as bytes, newline excluded; some kinds span several lines)."""
    canary = draw(st.sampled_from(CANARIES))
    base = [f"bad-{number:05d}", canary, CANARY_FAMILY, CANARY_DOB, "F", "B1 1AA", CANARY_NHS, ""]
    kind = draw(st.integers(0, 11))
    column = draw(st.integers(0, len(base) - 1))
    if kind == 0:  # random bytes
        return draw(st.binary(max_size=120)) + canary.encode()
    if kind == 1:  # a quote that opens and never closes
        base[column] = '"' + base[column]
        return ",".join(base).encode()
    if kind == 2:  # quotes in the wrong places
        base[column] = draw(st.sampled_from(['a"b', '"a"b', 'a""', '"', '""x"'])) + canary
        return ",".join(base).encode()
    if kind == 3:  # another encoding
        text = _row_text([*base[:1], "Zoë " + canary, *base[2:]])
        encoding = draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-le"]))
        return text.encode(encoding)
    if kind == 4:  # control, bidirectional, invisible characters
        base[column] = canary + draw(st.sampled_from(_UNSAFE)) + canary
        return _row_text(base).encode("utf-8", "surrogatepass")
    if kind == 5:  # overlong cell
        base[column] = canary + "x" * draw(st.sampled_from([257, 5000, 200_000]))
        return _row_text(base).encode()
    if kind == 6:  # missing columns
        return _row_text(base[: draw(st.integers(1, len(base) - 1))]).encode()
    if kind == 7:  # extra columns
        return _row_text(base + [canary] * draw(st.integers(1, 5))).encode()
    if kind == 8:  # a formula for a name
        base[1] = draw(st.sampled_from("=+-@")) + "cmd|' /C calc'!A0 " + canary
        return _row_text(base).encode()
    if kind == 9:  # an impossible or future date of birth
        base[3] = draw(st.sampled_from(["31/02/2013", "2099-01-01", "13/13/2013", canary]))
        base[1] = canary
        return _row_text(base).encode()
    if kind == 10:  # no local id
        base[0] = draw(st.sampled_from(["", "   "]))
        return _row_text(base).encode()
    # random text cells, any characters
    cells = draw(st.lists(st.text(max_size=30), min_size=1, max_size=10))
    return _row_text([*cells, canary]).encode("utf-8", "surrogatepass")


def _row_text(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()


@dataclass
class CsvCase:
    data: bytes
    good: dict[str, list[str]]  # local id -> the row as written
    rows_written: int


@st.composite
def csv_file(draw: st.DrawFn) -> CsvCase:
    """A CSV file: the mapped header, then good and malformed rows in any order."""
    newline = draw(st.sampled_from(["\n", "\r\n"])).encode()
    lines = [(b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + ",".join(CSV_HEADER).encode()]
    good: dict[str, list[str]] = {}
    kinds = draw(st.lists(st.booleans(), min_size=1, max_size=24))
    for number, is_good in enumerate(kinds):
        if is_good:
            row = draw(good_row(number))
            good[row[0]] = row
            lines.append(_row_text(row).encode())
        else:
            lines.append(draw(bad_line(number)))
    data = newline.join(lines) + (newline if draw(st.booleans()) else b"")
    return CsvCase(data, good, len(kinds))


def _stored_name(written: str, kind: str) -> str:
    """What the store holds for a good name cell: the value as written, or nothing for a
    null marker ("Null", "N/A", ...), which is a missing value."""
    return "" if NORMALISERS[kind](written, field=kind) is None else written.strip()


def check_csv(
    workdir: Path, schema: Schema, logs: CapturedLogs, findings: Findings, case: CsvCase
) -> list[str]:
    """Ingest one CSV into a fresh store and check it; returns the problems found."""
    from server.node.config import SourceConfig

    findings.csv_files += 1
    findings.csv_rows += case.rows_written
    findings.csv_good_rows += len(case.good)
    number = findings.csv_files
    path = workdir / f"fuzz-{number}.csv"
    store_path = workdir / f"fuzz-{number}.sqlite"
    path.write_bytes(case.data)
    source = SourceConfig(
        kind="csv",
        path=path,
        table="",
        day_first=True,
        columns=CSV_COLUMNS,
        extra={"address": "address"},
    )
    problems: list[str] = []
    report: IngestReport | None = None
    try:
        with NodeStore(store_path) as store:
            try:
                report = ingest_source(store, source, schema)
            except SourceError as exc:
                problems.append("crash: ingest refused the file (a good header)")
                texts = [str(exc)]
            else:
                texts = [f"{p.field} {p.reason}" for p in report.rejected + report.warnings]
            stored = {
                str(local_id): json.loads(fields)
                for local_id, fields in store._conn.execute("SELECT local_id, fields FROM records")
            }
    except Exception as exc:
        problems.append(f"crash: ingest raised {type(exc).__name__}")
        findings.crashes.append(problems[-1])
        return problems
    finally:
        path.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(store_path) + suffix).unlink(missing_ok=True)
    if problems:
        findings.crashes.extend(problems)
    for text in texts + logs.take():
        if leaked(text):
            problems.append("leak: a canary in an ingest problem or log record")
            findings.leaks.append(problems[-1])
    lost = [
        local_id
        for local_id, row in case.good.items()
        if local_id not in stored
        or (stored[local_id].get("given_name") or "") != _stored_name(row[1], "name")
        or (stored[local_id].get("family_name") or "") != _stored_name(row[2], "family_name")
    ]
    if lost:
        findings.good_rows_lost += len(lost)
        problems.append(f"{len(lost)} good rows lost")
    if report is not None:
        outcome = (
            report.inserted
            + report.updated
            + report.unchanged
            + report.superseded
            + report.rejected_rows
        )
        if report.rows_read != outcome or report.inserted != len(stored):
            findings.count_mismatches += 1
            problems.append(
                f"counts: {report.rows_read} read, {outcome} accounted for, "
                f"{report.inserted} inserted, {len(stored)} stored"
            )
    return problems
