"""Data-quality feedback per agency (server.node.quality), against synthetic data whose error
labels (linkage.synthetic) say what the rates must be, and through a node's Status."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from types import MappingProxyType

import pytest

from linkage import synthetic
from linkage.schema import load_schema
from server.launcher import COLUMN_NAMES, write_agency_csv
from server.node.config import SourceConfig
from server.node.ingest import PROBLEM_CATEGORIES, ingest_source
from server.node.quality import data_quality
from server.node.store import LinkedRow, NodeStore

CANARY_NHS = "9434765918"  # fails the modulus-11 check
FIELD_LABEL = {
    "given_name": "given_missing",
    "family_name": "family_missing",
    "date_of_birth": "dob_missing",
    "postcode": "postcode_missing",
    "nhs_number": "nhs_missing",
}


@pytest.fixture(scope="module")
def population() -> synthetic.SyntheticData:
    return synthetic.generate_population(400, seed=16)


def _source(path: Path, agency: str) -> SourceConfig:
    return SourceConfig("csv", path, "", True, MappingProxyType(dict(COLUMN_NAMES[agency])))


def _with_bad_rows(path: Path, agency: str) -> tuple[int, int, int]:
    """Append rows with known problems; returns (future dates, missing ids, invalid NHS)."""
    names = COLUMN_NAMES[agency]
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(16)
    extra = []
    for i in range(7):  # a date of birth in the future: rejected
        row = dict(rng.choice(rows), **{names["local_id"]: f"F-{i}"})
        row[names["date_of_birth"]] = "01/01/2099"
        extra.append(row)
    for _ in range(3):  # no local id: rejected
        extra.append(dict(rng.choice(rows), **{names["local_id"]: ""}))
    for i in range(5):  # an NHS number failing its check digit: kept, stored as missing
        row = dict(rng.choice(rows), **{names["local_id"]: f"N-{i}"})
        row[names["nhs_number"]] = CANARY_NHS
        extra.append(row)
    with open(path, "a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=list(names.values())).writerows(extra)
    return 7, 3, 5


def test_source_and_store_figures_match_the_generators_labels(
    population: synthetic.SyntheticData, tmp_path: Path
) -> None:
    agency = "childrens_social_care"
    data = population.agencies[agency]
    path = tmp_path / f"{agency}.csv"
    written = write_agency_csv(data, path, bad_row=False)
    future, no_id, invalid_nhs = _with_bad_rows(path, agency)
    schema = load_schema("child")
    with NodeStore(tmp_path / "store.sqlite") as store:
        report = ingest_source(store, _source(path, agency), schema)
        quality = data_quality(store, schema)
        stored_ids = {row[0] for row in store._conn.execute("SELECT local_id FROM records")}

    (source,) = quality.sources
    assert source.source == path.name and source.ingested_at
    assert source.rows_read == written + future + no_id + invalid_nhs
    assert source.stored == report.stored == len(stored_ids)
    assert source.rows_read == source.stored + source.superseded + source.rejected_rows
    reasons = {(r.reason, r.field): r.rows for r in source.rejected}
    assert reasons[("future_date", "date_of_birth")] == future
    assert reasons[("missing_local_id", "local_id")] == no_id
    assert {reason for reason, _ in reasons} <= set(PROBLEM_CATEGORIES)
    assert source.rejected_rows == sum(reasons.values())
    assert source.rejected_share == pytest.approx(source.rejected_rows / source.rows_read)
    assert source.invalid_nhs_numbers == invalid_nhs

    # missing per field: exactly the generator's "missing" labels over the rows stored
    index = {str(lid): i for i, lid in enumerate(data.columns["record_id"])}
    kept = [index[lid] for lid in stored_ids if lid in index]
    assert len(kept) == len(stored_ids) - invalid_nhs  # the appended rows with their own ids
    missing = {m.field: m for m in source.missing}
    for field, label in FIELD_LABEL.items():
        expected = sum(bool(data.errors[label][i]) for i in kept)
        if field == "nhs_number":
            expected += invalid_nhs  # an invalid NHS number is stored as missing
        assert missing[field].missing == expected, field
        assert missing[field].share == pytest.approx(expected / source.stored)
    # sex: left empty, or the agency's "not known" code, which normalises to missing
    sex_expected = sum(
        bool(data.errors["sex_missing"][i] or data.errors["sex_unknown"][i]) for i in kept
    )
    assert missing["sex"].missing == sex_expected
    # over the store (one source): the same counts
    assert quality.records == source.stored
    assert {m.field: m.missing for m in quality.missing} == {
        m.field: m.missing for m in source.missing
    }
    assert quality.nhs_number_field == "nhs_number"
    assert quality.with_nhs_number == quality.records - missing["nhs_number"].missing
    assert quality.nhs_number_share == pytest.approx(quality.with_nhs_number / quality.records)
    assert not quality.link.result_id and quality.link.linked == 0

    # no value of the data anywhere in the figures
    text = str(quality) + json.dumps(list(store_summaries(tmp_path / "store.sqlite")))
    assert CANARY_NHS not in text
    for value in data.columns["family_name"][:50]:
        if value and len(value) > 3:
            assert value not in text


def store_summaries(path: Path) -> list[tuple[str, str, str]]:
    with NodeStore(path) as store:
        return store.source_quality()


def test_link_figures_count_the_records_linked_and_those_without_an_nhs_number(
    population: synthetic.SyntheticData, tmp_path: Path
) -> None:
    agency = "police"
    data = population.agencies[agency]
    path = tmp_path / f"{agency}.csv"
    write_agency_csv(data, path, bad_row=False)
    schema = load_schema("child")
    with NodeStore(tmp_path / "store.sqlite") as store:
        ingest_source(store, _source(path, agency), schema)
        rows = store._conn.execute("SELECT reference, fields FROM records").fetchall()
        linked = [(ref, json.loads(f)) for ref, f in rows[::3]]  # every third record
        store.replace_linked(
            "result-1",
            [
                LinkedRow(ref, f"result-1-{i}", (("health", 1), ("school", 2)))
                for i, (ref, _) in enumerate(linked)
            ],
        )
        quality = data_quality(store, schema)
    without = sum(json.loads(f)["nhs_number"] is None for _, f in rows)
    linked_without = sum(f["nhs_number"] is None for _, f in linked)
    assert 0 < linked_without < without
    link = quality.link
    assert link.result_id == "result-1" and link.fetched_at
    assert link.linked == len(linked)
    assert link.linked_share == pytest.approx(len(linked) / len(rows))
    assert quality.without_nhs_number == without
    assert link.linked_without_nhs_number == linked_without
    assert link.linked_share_without_nhs_number == pytest.approx(linked_without / without)


def test_a_second_ingest_replaces_its_sources_figures_and_keeps_the_others(
    population: synthetic.SyntheticData, tmp_path: Path
) -> None:
    schema = load_schema("child")
    paths = {}
    for agency in ("police", "health"):
        paths[agency] = tmp_path / f"{agency}.csv"
        write_agency_csv(population.agencies[agency], paths[agency], bad_row=True)
    with NodeStore(tmp_path / "store.sqlite") as store:
        for agency, path in paths.items():
            ingest_source(store, _source(path, agency), schema)
        ingest_source(store, _source(paths["police"], "police"), schema)
        quality = data_quality(store, schema)
    assert [s.source for s in quality.sources] == ["health.csv", "police.csv"]
    for source in quality.sources:
        assert source.rejected_rows == 1
        assert [(r.reason, r.field) for r in source.rejected] == [
            ("invalid_value", "date_of_birth")
        ]
    assert quality.records == sum(s.stored for s in quality.sources)
