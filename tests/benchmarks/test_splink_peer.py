"""Splink as the plaintext ceiling (benchmarks/splink_peer.py): the cleaning and the hand-off.

Only the slow test runs Splink, and only when benchmarks/.splink-venv already holds the pinned
version (``make splink-venv``): the default run never downloads Splink.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import quality, splink_peer
from linkage import evaluate
from linkage.synthetic import DEFAULT_AGENCIES, AgencyData, generate_population

PROFILES = {profile.name: profile for profile in DEFAULT_AGENCIES}


def _agency(name: str, **columns: list[str | None]) -> AgencyData:
    count = len(next(iter(columns.values())))
    full = {column: columns.get(column, [None] * count) for column in (
        "record_id", "given_name", "middle_names", "family_name", "date_of_birth", "sex",
        "postcode", "nhs_number",
    )}  # fmt: skip
    return AgencyData(name, PROFILES[name], full, np.arange(count, dtype=np.int64))


@pytest.mark.parametrize(
    ("agency", "raw_date", "raw_sex"),
    [
        ("police", "07/03/2015", "F"),
        ("health", "2015-03-07", "2"),
        ("school", "07-Mar-2015", "Female"),
        ("childrens_social_care", "07 March 2015", "F"),
    ],
)
def test_each_agency_format_is_cleaned_to_one_form(
    agency: str, raw_date: str, raw_sex: str
) -> None:
    table = splink_peer.clean_agency(
        _agency(
            agency,
            given_name=["  JOSÉ ", "ann"],
            middle_names=["Anne  Marie", ""],
            family_name=["van der Berg ", None],
            date_of_birth=[raw_date, "not a date"],
            sex=[f" {raw_sex} ", "X"],
            postcode=["sw1a1aa ", "  "],
            nhs_number=["943 476 5919", "94347"],
        )
    )
    assert table.iloc[0].to_dict() == {
        "given_name": "josé",
        "middle_names": "anne marie",
        "family_name": "van der berg",
        "date_of_birth": "2015-03-07",
        "sex": "f",
        "postcode": "SW1A 1AA",
        "nhs_number": "9434765919",
    }
    # missing, unparseable or malformed values are missing, never "" or a guess
    second = table.iloc[1]
    assert second["given_name"] == "ann"
    assert second.drop("given_name").isna().all()


def test_the_csv_hand_off_keeps_every_value_and_numbers_records_in_order(tmp_path: Path) -> None:
    data = generate_population(300, seed=3)
    tables = splink_peer.synthetic_tables(data)
    assert [len(t) for t in tables] == [len(a) for a in data.agencies.values()]
    ids = np.concatenate([t["unique_id"].to_numpy() for t in tables])
    assert ids.tolist() == list(range(len(data.all_records().child_id)))
    for table, agency in zip(tables, data.agencies.values(), strict=True):
        raw = agency.columns
        # cleaning loses nothing that was there: a value is missing only where it was missing
        for column in ("given_name", "family_name", "date_of_birth", "sex", "postcode"):
            present = [value is not None and value.strip() != "" for value in raw[column]]
            assert table[column].notna().tolist() == present, (agency.name, column)
        # read back exactly as benchmarks/splink_runner.py reads it
        path = tmp_path / f"{agency.name}.csv"
        table.to_csv(path, index=False, na_rep="")
        back = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        back["unique_id"] = back["unique_id"].astype(np.int64)
        pd.testing.assert_frame_equal(
            back, table.astype(object).where(table.notna(), np.nan).astype(back.dtypes.to_dict())
        )


def test_link_only_pairs_are_scored_left_to_right() -> None:
    # two tables of 3 records; Splink may give a pair either way round
    out = splink_peer.SplinkOutput(
        left=np.array([0, 4, 2], dtype=np.int64),
        right=np.array([3, 1, 5], dtype=np.int64),
        probability=np.array([0.9, 0.8, 0.1]),
        cluster=np.zeros(6, dtype=np.int64),
        seconds=0.0,
        info={"splink_version": "test"},
    )
    truth = (np.array([0, 1, 2], dtype=np.int64), np.array([0, 1, 2], dtype=np.int64))
    result = quality._splink_result("t", out, truth, sizes=(3, 3))
    assert (result.precision, result.recall, result.pair_completeness) == (1.0, 2 / 3, 1.0)
    assert result.candidate_pairs == 3


@pytest.mark.slow
def test_splink_links_a_small_population() -> None:
    if not splink_peer.venv_ready():
        pytest.skip(f"{splink_peer.SPLINK_VENV} missing or not at the pin: run `make splink-venv`")
    data = generate_population(600, seed=5)
    result = quality.run_splink_synthetic("synthetic", data, seed=5)
    truth = evaluate.true_pairs_from_entities(data.all_records().child_id)
    assert result.true_pairs == len(truth[0])
    assert result.records == len(data.all_records().child_id)
    assert result.f1 > 0.85
