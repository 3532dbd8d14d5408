"""Tests of ingest (server.node.ingest): good rows kept, bad rows reported by line and field,
no value ever in a message or log record, re-ingest idempotent, CSV and SQLite sources."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.schema import load_schema
from server.node.config import SourceConfig
from server.node.ingest import IngestReport, RowProblem, SourceError, ingest_source
from server.node.store import NodeStore

SCHEMA = load_schema("child")

COLUMNS = {
    "local_id": "record_id",
    "given_name": "forename",
    "family_name": "surname",
    "date_of_birth": "dob",
    "postcode": "postcode",
    "nhs_number": "nhs",
}

# Canary values: each sits in a bad row and must never appear in any message or log record.
CANARY_DATE = "31/02/2015"
CANARY_NHS = "9434765918"
CANARY_NAME = "Zebedee-Canary"
CANARY_POSTCODE = "QQ99 CANARY"
CANARIES = (CANARY_DATE, CANARY_NHS, CANARY_NAME, CANARY_POSTCODE, "CANARY")

HEADER = b"record_id,forename,surname,dob,postcode,nhs,address\n"
ROWS = [
    b"p1,Amy,Smith,02/03/2014,SW1A 1AA,943 476 5919,1 High St\n",  # line 2 good
    b"p2,Jos\xc3\xa9,M\xc3\xbcller,2015-12-31,,,\n",  # line 3 good (UTF-8 accents)
    b"p3,Zebedee-Canary,Jones,02/03/2014,SW1A 1AA\n",  # line 4 wrong column count
    b"p4,Zebedee-Canary,Brown," + CANARY_DATE.encode() + b",B1 1AA,,\n",  # line 5 bad date
    b"p5,Cara,Green,01/01/2013,B1 1AA," + CANARY_NHS.encode() + b",\n",  # line 6 bad NHS: warn
    b",Zebedee-Canary,White,01/01/2013,,,\n",  # line 7 missing local id
    b"p7,Zebedee-Canar\xff,Black,01/01/2013,,,\n",  # line 8 bad UTF-8
    b'p8,"Dan\nMultiline",Grey,05/05/2012,,,"Flat 2"\n',  # lines 9-10 good, quoted newline
    b"p9,Eve,Stone,05/05/2012,QQ99 CANARY,,\n",  # line 11 bad postcode
    b"p1,Amy,Smith-Jones,02/03/2014,SW1A 1AA,943 476 5919,1 High St\n",  # line 12 duplicate
    b"\n",  # line 13 blank
    b"p10,Finn,Ward,2011-07-07,,,\n",  # line 14 good
]


def csv_source(
    path: Path, *, extra: bool = True, columns: dict[str, str] | None = None
) -> SourceConfig:
    return SourceConfig(
        kind="csv",
        path=path,
        table="",
        day_first=True,
        columns=MappingProxyType(columns or COLUMNS),
        extra=MappingProxyType({"address": "address"} if extra else {}),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    with NodeStore(tmp_path / "node.sqlite") as opened:
        yield opened


@pytest.fixture
def messy_csv(tmp_path: Path) -> Path:
    path = tmp_path / "police.csv"
    path.write_bytes(HEADER + b"".join(ROWS))
    return path


def stored(store: NodeStore) -> dict[str, dict[str, str | None]]:
    return {local_id: fields for local_id, _, fields in store.pending_publish(10_000)}


def all_messages(report: IngestReport) -> list[str]:
    return [f"{p.line} {p.field} {p.reason}" for p in (*report.rejected, *report.warnings)]


def test_messy_csv(store: NodeStore, messy_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    report = ingest_source(store, csv_source(messy_csv), SCHEMA)

    records = stored(store)
    assert sorted(records) == ["p1", "p10", "p2", "p5", "p8"]
    assert records["p1"]["family_name"] == "Smith-Jones"  # the later duplicate row won
    assert records["p1"]["address"] == "1 High St"
    assert records["p2"]["given_name"] == "José" and records["p2"]["postcode"] is None
    assert records["p5"]["nhs_number"] is None  # invalid NHS number stored as missing
    assert records["p8"]["given_name"] == "Dan Multiline"  # a line break becomes a space
    assert records["p8"]["address"] == "Flat 2"
    assert records["p1"]["date_of_birth"] == "2014-03-02"  # canonical, read day first
    assert records["p1"]["postcode"] == "SW1A 1AA" and records["p1"]["nhs_number"] == "9434765919"
    assert records["p1"]["middle_names"] is None  # unmapped schema field

    rejected = {(p.line, p.field) for p in report.rejected}
    assert rejected == {
        (4, ""),
        (5, "date_of_birth"),
        (7, "local_id"),
        (8, ""),
        (11, "postcode"),
    }
    reasons = {(p.line, p.field): p.reason for p in report.rejected}
    assert reasons[(4, "")] == "expected 7 columns, got 5"
    assert reasons[(8, "")] == "not valid UTF-8"
    assert reasons[(7, "local_id")] == "missing local id"
    warnings = {(p.line, p.field) for p in report.warnings}
    assert warnings == {(6, "nhs_number"), (12, "local_id")}
    dup = next(p for p in report.warnings if p.field == "local_id")
    assert "line 2" in dup.reason
    assert report.rows_read == 11  # the blank line is not a row
    assert (report.inserted, report.updated, report.unchanged) == (5, 0, 0)
    assert report.superseded == 1 and report.rejected_rows == 5  # 5 + 1 + 5 rows read

    text = "\n".join(all_messages(report) + [r.getMessage() for r in caplog.records])
    for canary in CANARIES:
        assert canary not in text
        assert canary.lower() not in text.lower()


def test_reingest_is_idempotent(store: NodeStore, messy_csv: Path) -> None:
    first = ingest_source(store, csv_source(messy_csv), SCHEMA)
    refs = {local_id: ref for local_id, ref, _ in store.pending_publish(100)}
    second = ingest_source(store, csv_source(messy_csv), SCHEMA)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, first.inserted)
    assert second.rejected == first.rejected and second.warnings == first.warnings
    assert {local_id: ref for local_id, ref, _ in store.pending_publish(100)} == refs
    assert store.counts().records == 5


def test_changed_row_updates_in_place(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(HEADER + ROWS[0] + ROWS[1])
    ingest_source(store, csv_source(path), SCHEMA)
    path.write_bytes(HEADER + ROWS[0].replace(b"Amy", b"Aimee") + ROWS[1])
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 1)
    assert stored(store)["p1"]["given_name"] == "Aimee"


def test_missing_header_column_is_one_clear_error(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"record_id,forename,surname,dob,postcode\np1,Amy,Smith,02/03/2014,B1 1AA\n")
    with pytest.raises(SourceError) as info:
        ingest_source(store, csv_source(path), SCHEMA)
    message = str(info.value)
    assert "'nhs_number' -> column 'nhs'" in message
    assert "'address' -> column 'address'" in message
    assert "Amy" not in message
    assert store.counts().records == 0


def test_empty_and_missing_files(store: NodeStore, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(SourceError, match="no header"):
        ingest_source(store, csv_source(tmp_path / "empty.csv"), SCHEMA)
    with pytest.raises(SourceError, match="cannot open"):
        ingest_source(store, csv_source(tmp_path / "absent.csv"), SCHEMA)


def test_bom_and_crlf(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROWS[0] + ROWS[1]).replace(b"\n", b"\r\n"))
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert report.inserted == 2 and report.rejected == ()
    assert stored(store)["p1"]["address"] == "1 High St"


def test_chunks_and_progress(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    lines = [f"id{i},Name{i},Family,01/02/2010,,,\n".encode() for i in range(30)]
    path.write_bytes(HEADER + b"".join(lines))
    seen: list[int] = []
    report = ingest_source(store, csv_source(path), SCHEMA, progress=seen.append, chunk_rows=7)
    assert report.inserted == 30 and store.counts().records == 30
    assert seen == [7, 14, 21, 28, 30]


def test_sqlite_source(store: NodeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "agency.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE people (id TEXT, forename TEXT, surname TEXT, dob TEXT, "
        "postcode TEXT, nhs INTEGER, address TEXT)"
    )
    conn.executemany(
        "INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            ("s1", "Amy", "Smith", "2014-03-02", "SW1A 1AA", 9434765919, "1 High St"),
            ("s2", "Bob", "Jones", CANARY_DATE, None, None, None),
            (None, CANARY_NAME, "White", "2014-03-02", None, None, None),
            ("s4", "Cy", "Hill", "2012-01-01", None, int(CANARY_NHS), None),
            ("s5", b"Zebedee-Canar\xff", "Hill", "2012-01-01", None, None, None),
        ],
    )
    conn.commit()
    conn.close()
    source = SourceConfig(
        kind="sqlite",
        path=db,
        table="people",
        day_first=True,
        columns=MappingProxyType({**COLUMNS, "local_id": "id"}),
        extra=MappingProxyType({"address": "address"}),
    )
    report = ingest_source(store, source, SCHEMA)
    records = stored(store)
    assert sorted(records) == ["s1", "s4"]
    assert records["s1"]["nhs_number"] == "9434765919"  # integer cell read as text
    assert records["s4"]["nhs_number"] is None
    assert {(p.line, p.field) for p in report.rejected} == {
        (2, "date_of_birth"),
        (3, "local_id"),
        (5, ""),
    }
    assert report.warnings == (
        RowProblem(4, "nhs_number", report.warnings[0].reason, "invalid_nhs_number"),
    )
    text = "\n".join(all_messages(report) + [r.getMessage() for r in caplog.records])
    for canary in CANARIES:
        assert canary not in text


def test_sqlite_missing_table_or_column(store: NodeStore, tmp_path: Path) -> None:
    db = tmp_path / "agency.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE people (id TEXT, forename TEXT)")
    conn.close()
    base = {"local_id": "id", "given_name": "forename"}
    source = SourceConfig("sqlite", db, "nobody", True, MappingProxyType(base))
    with pytest.raises(SourceError, match="no table 'nobody'"):
        ingest_source(store, source, SCHEMA)
    source = SourceConfig(
        "sqlite", db, "people", True, MappingProxyType({**base, "family_name": "surname"})
    )
    with pytest.raises(SourceError, match="'family_name' -> column 'surname'"):
        ingest_source(store, source, SCHEMA)


# --------------------------------------------------------------------------- stray quotes


def test_stray_quote_rejects_its_line_and_keeps_the_rows_after_it(
    store: NodeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rows = [f"s{i},Name{i},Family,01/02/2010,,,{i} High St\n".encode() for i in range(50)]
    rows[3] = b's3,"Zebedee-Canary,Family,01/02/2010,,,3 High St\n'  # opens, never closes
    path = tmp_path / "stray.csv"
    path.write_bytes(HEADER + b"".join(rows))
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert sorted(stored(store)) == sorted(f"s{i}" for i in range(50) if i != 3)
    problem = report.rejected[0]
    assert (problem.line, problem.field) == (5, "given_name")
    assert "unterminated quoted field in column 'forename'" in problem.reason
    assert report.rows_read == 50 and report.inserted == 49 and report.rejected_rows == 1
    text = "\n".join(all_messages(report) + [r.getMessage() for r in caplog.records])
    assert "canary" not in text.lower()


@pytest.mark.parametrize(
    "stray",
    [
        pytest.param(b's1,Amy,Smith,01/02/2010,,,"1 High St\n', id="last-column-to-eof"),
        pytest.param(b's1,Amy,Smith,01/02/2010,,,"\n', id="closed-by-a-later-stray"),
        pytest.param(b's1,Amy,"Smith,01/02/2010,,,1 High St\n', id="closed-after-a-cell"),
    ],
)
def test_a_runaway_quote_never_swallows_rows(
    store: NodeStore, tmp_path: Path, stray: bytes
) -> None:
    rows = [
        b"s0,Ann,Hill,01/02/2010,,,0 High St\n",
        stray,
        b"s2,Bob,Hill,01/02/2010,,,2 High St\n",
        b's3,Cat,Hill,01/02/2010,,,"3"\n',
        b's4,Dan,Hill,01/02/2010,,,"\n',  # a second stray, at the end of the file
    ]
    path = tmp_path / "stray.csv"
    path.write_bytes(HEADER + b"".join(rows))
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert {"s0", "s2", "s3"} <= set(stored(store))
    assert 3 in {p.line for p in report.rejected}
    assert (
        report.rows_read
        == (report.inserted + report.updated + report.unchanged + report.superseded)
        + report.rejected_rows
    )


def test_a_quoted_value_may_still_span_lines(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "multiline.csv"
    path.write_bytes(HEADER + b's1,Amy,Smith,01/02/2010,,,"Flat 2\n1 High St"\n' + ROWS[0])
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert report.rejected == ()
    assert stored(store)["s1"]["address"] == "Flat 2 1 High St"


_CELL = st.text(alphabet="abcXYZ 019/,\"'\n", max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    cells=st.lists(st.lists(_CELL, min_size=3, max_size=3), min_size=1, max_size=12),
    strays=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 40)), max_size=4),
)
def test_every_row_read_is_stored_superseded_or_rejected(
    tmp_path_factory: pytest.TempPathFactory,
    cells: list[list[str]],
    strays: list[tuple[int, int]],
) -> None:
    """Generated CSVs (quoted cells, embedded commas, quotes and newlines, then stray double
    quotes dropped in at random): the counts always add up, and a row that was written
    cleanly on one line (well quoted, no stray quote) is always stored, whatever its
    neighbours hold."""
    header = "record_id,forename,surname,address\n"
    lines = []
    for index, (forename, surname, address) in enumerate(cells):
        quoted = ['"' + v.replace('"', '""') + '"' for v in (forename, surname, address)]
        lines.append(",".join([f"r{index}", *quoted]) + "\n")
    clean = set(range(len(lines)))
    for row, offset in strays:
        if row < len(lines):
            text = lines[row]
            at = min(offset, len(text) - 1)
            lines[row] = text[:at] + '"' + text[at:]
            clean.discard(row)
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.csv"
    path.write_text(header + "".join(lines), "utf-8")
    source = csv_source(
        path,
        extra=False,
        columns={"local_id": "record_id", "given_name": "forename", "family_name": "surname"},
    )
    source = SourceConfig(
        source.kind, path, "", True, source.columns, MappingProxyType({"address": "address"})
    )
    with NodeStore(path.with_suffix(".sqlite")) as fuzz_store:
        report = ingest_source(fuzz_store, source, SCHEMA)
        kept = set(stored(fuzz_store))
    assert (
        report.rows_read
        == (report.inserted + report.updated + report.unchanged + report.superseded)
        + report.rejected_rows
    )
    rejected_lines = {p.line for p in report.rejected}
    assert len(rejected_lines) == report.rejected_rows
    for index in clean:  # a well-written row of one line never vanishes into a neighbour
        if not any("\n" in cell for cell in cells[index]):
            assert f"r{index}" in kept, f"clean row {index} lost"


# --------------------------------------------------------------------------- value checks


@pytest.mark.parametrize(
    ("cells", "field", "reason"),
    [
        pytest.param(("Ann\x1b[2JCanary", "Hill", "01/02/2010", ""), "given_name", "control",
                     id="escape-sequence"),
        pytest.param(("Ann", "Hill\u202eCanary", "01/02/2010", ""), "family_name", "bidirectional",
                     id="right-to-left-override"),
        pytest.param(("Ann", "Hill", "01/02/2010", "1 High St\u2028Canary"), "address", "control",
                     id="line-separator-in-extra"),
        pytest.param(("Canary" * 20_000, "Hill", "01/02/2010", ""), "given_name", "longer than",
                     id="100-kb-name"),
        pytest.param(("Ann", "Hill", "01/02/2099", ""), "date_of_birth", "future",
                     id="future-date-of-birth"),
        pytest.param(("=HYPERLINK(Canary)", "Hill", "01/02/2010", ""), "given_name", "not a name",
                     id="formula"),
        pytest.param(("Ann", "+Canary", "01/02/2010", ""), "family_name", "not a name",
                     id="plus"),
        pytest.param(("Ann", "-Canary", "01/02/2010", ""), "family_name", "not a name",
                     id="minus"),
        pytest.param(("@Canary", "Hill", "01/02/2010", ""), "given_name", "not a name",
                     id="at"),
    ],
)  # fmt: skip
def test_unsafe_values_reject_their_row_by_line_and_field(
    store: NodeStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    cells: tuple[str, str, str, str],
    field: str,
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    forename, surname, dob, address = cells
    bad = f'p2,"{forename}","{surname}",{dob},,,"{address}"\n'.encode()
    path = tmp_path / "unsafe.csv"
    path.write_bytes(HEADER + ROWS[0] + bad + b"p3,Cy,Hill,01/02/2010,,,\n")
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert sorted(stored(store)) == ["p1", "p3"]
    assert [(p.line, p.field) for p in report.rejected] == [(3, field)]
    assert reason in report.rejected[0].reason
    text = "\n".join(all_messages(report) + [r.getMessage() for r in caplog.records])
    assert "canary" not in text.lower()


def test_line_breaks_and_joiners_are_kept_as_text(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_bytes(
        HEADER + 'p1,"Ann\tMarie","Ha\u200cll",01/02/2010,,,"Flat 2\r\n1 High St"\n'.encode()
    )
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert report.rejected == ()
    record = stored(store)["p1"]
    assert record["given_name"] == "Ann Marie" and record["address"] == "Flat 2 1 High St"
    assert record["family_name"] == "Ha\u200cll"


def test_a_null_marker_name_is_missing_not_a_formula(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_bytes(HEADER + b"p1,-,Hill,01/02/2010,,,\n")
    report = ingest_source(store, csv_source(path), SCHEMA)
    assert report.rejected == () and stored(store)["p1"]["given_name"] is None


def test_source_day_first_is_applied_once_at_ingest(store: NodeStore, tmp_path: Path) -> None:
    path = tmp_path / "us.csv"
    path.write_bytes(HEADER + b"p1,Amy,Smith,03/02/2014,sw1a1aa,9434765919,\n")
    source = csv_source(path)
    month_first = SourceConfig(source.kind, path, "", False, source.columns, source.extra)
    ingest_source(store, month_first, SCHEMA)
    record = stored(store)["p1"]
    assert record["date_of_birth"] == "2014-03-02"  # March 2nd, as the source wrote it
    assert record["postcode"] == "SW1A 1AA" and record["given_name"] == "Amy"
