"""Forms (linkage.forms): a record lacking sex, whose date of birth the shipped schema salts
with sex, is published once per sex value; the forms are one record to the pipeline.

The golden file (tests/linkage/golden/forms.json) is made by
tests/linkage/golden/make_vectors.py and pins
every published part of each form and the derived references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import forms, pipeline, scoring
from linkage.encode import encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.normalise import SEX_VALUES
from linkage.schema import load_schema

GOLDEN: dict[str, Any] = json.loads(
    (Path(__file__).parent / "golden" / "forms.json").read_text("utf-8")
)
CHILD = load_schema("child")
NAMES = CHILD.field_names  # published fields (views included): filter and presence columns
INPUTS = CHILD.input_names  # input fields: the columns read
COMPARISONS = CHILD.comparison_names  # the inputs, then the combined fields: the levels
SEX, DOB = NAMES.index("sex"), NAMES.index("date_of_birth")
DOB_LEVEL = COMPARISONS.index("date_of_birth")
SEX_TAG = CHILD.salt_sources.index("sex.value")
COLUMNS = forms.assumable_columns(CHILD)  # ((sex field, sex tag column),)


def keys(secret: LinkageSecret | None = None) -> KeySet:
    return KeySet(secret or LinkageSecret.for_tests(), key_version=1)


def columns_of(records: list[dict[str, str | None]]) -> dict[str, list[str | None]]:
    return {f: [r.get(f) for r in records] for f in INPUTS}


def hex_of(words: np.ndarray[Any, Any]) -> str:
    return bytes(words.astype("<u8").tobytes()).hex()


AMY: dict[str, str | None] = {
    "given_name": "Amy",
    "family_name": "Okafor",
    "date_of_birth": "02/03/2014",
    "postcode": "LS6 2AB",
}


@pytest.fixture(scope="module")
def golden_forms() -> forms.Forms:
    records = [row["record"] for row in GOLDEN["rows"] if row["form"] in (-1, 0)]
    return forms.encode_forms(CHILD, keys(), columns_of(records))


def test_forms_golden(golden_forms: forms.Forms) -> None:
    assert GOLDEN["schema_fingerprint"] == CHILD.fingerprint()
    rows = GOLDEN["rows"]
    assert golden_forms.origin.tolist() == [r["origin"] for r in rows]
    assert golden_forms.form.tolist() == [r["form"] for r in rows]
    batch = golden_forms.batch
    for i, row in enumerate(rows):
        where = f"form row {i}"
        for f, name in enumerate(NAMES):
            assert hex_of(batch.field_filters[f][i]) == row["field_filters"][name], where
            assert bool(batch.field_present[i, f]) == row["present"][name], where
        assert hex_of(batch.record_filters[i]) == row["record_filter"], where
        assert [f"{int(k):016x}" for k in batch.block_keys[i]] == row["block_keys"], where
        assert [f"{int(t):016x}" for t in batch.salt_tags[i]] == row["salt_tags"], where
        reference = forms.form_reference(f"{row['origin']:032x}", row["form"])
        assert reference == row["reference"], where


def test_a_record_lacking_sex_is_published_once_per_sex_value() -> None:
    published = forms.encode_forms(
        CHILD, keys(), columns_of([AMY, {**AMY, "sex": "F"}, {"given_name": "Jo"}])
    )
    assert published.origin.tolist() == [0, 0, 0, 1, 2]
    assert published.form.tolist() == [0, 1, 2, forms.NO_FORM, forms.NO_FORM]
    assert forms.max_forms(CHILD) == len(SEX_VALUES) == 3
    batch = published.batch
    # the assumed sex is published as missing; its tag is kept, one per value, in tag order
    assert not batch.field_present[:3, SEX].any() and not batch.field_filters[SEX][:3].any()
    tags = batch.salt_tags[:3, SEX_TAG].tolist()
    assert tags == sorted(tags) and len(set(tags)) == 3 and 0 not in tags
    # each form is the record encoded with that sex as a salt only: exactly what a node
    # publishes for the record with that sex, minus the sex itself
    for value in SEX_VALUES:
        with_sex = encode_records(CHILD, keys(), columns_of([{**AMY, "sex": value}]))
        row = tags.index(int(with_sex.salt_tags[0, SEX_TAG]))
        for f, name in enumerate(NAMES):
            if name != "sex":
                np.testing.assert_array_equal(
                    batch.field_filters[f][row], with_sex.field_filters[f][0]
                )
        np.testing.assert_array_equal(batch.block_keys[row], with_sex.block_keys[0])
        np.testing.assert_array_equal(batch.salt_tags[row], with_sex.salt_tags[0])
    # a record with sex, or with nothing salted by sex, is published as encode_records does
    plain = encode_records(CHILD, keys(), columns_of([{**AMY, "sex": "F"}, {"given_name": "Jo"}]))
    for f in range(len(NAMES)):
        np.testing.assert_array_equal(batch.field_filters[f][3:], plain.field_filters[f])
    np.testing.assert_array_equal(batch.salt_tags[3:], plain.salt_tags)


def test_forms_report_problems_by_input_row_and_never_a_value() -> None:
    published = forms.encode_forms(
        CHILD, keys(), columns_of([{"given_name": "Jo"}, {**AMY, "sex": "unknowable-q"}])
    )
    assert [(p.row, p.field) for p in published.batch.problems] == [(1, "sex")]
    assert "unknowable-q" not in published.batch.problems[0].reason
    assert published.origin.tolist() == [
        0,
        1,
        1,
        1,
    ]  # the invalid sex is assumed, like a missing one


def test_forms_are_keyed_and_deterministic() -> None:
    cols = columns_of([AMY])
    first = forms.encode_forms(CHILD, keys(), cols).batch
    again = forms.encode_forms(CHILD, keys(), cols).batch
    other = forms.encode_forms(CHILD, keys(LinkageSecret(b"\x01" * 32)), cols).batch
    np.testing.assert_array_equal(first.field_filters[DOB], again.field_filters[DOB])
    np.testing.assert_array_equal(first.salt_tags, again.salt_tags)
    assert not np.array_equal(first.field_filters[DOB], other.field_filters[DOB])
    assert not np.array_equal(first.salt_tags, other.salt_tags)


def test_a_schema_that_salts_nothing_by_sex_makes_no_forms() -> None:
    unsalted = CHILD.with_salt("", ["date_of_birth"])  # nothing salted by sex
    assert forms.assumable_fields(unsalted) == () and forms.max_forms(unsalted) == 1
    published = forms.encode_forms(unsalted, keys(), columns_of([AMY]))
    assert published.form.tolist() == [forms.NO_FORM]


def test_form_references_are_derived_hex_and_distinct() -> None:
    record = "0123456789abcdef0123456789abcdef"
    assert forms.form_reference(record, forms.NO_FORM) == record
    made = [forms.form_reference(record, i) for i in range(3)]
    assert len(set(made)) == 3 and record not in made
    assert all(len(r) == 32 and int(r, 16) >= 0 and r == r.lower() for r in made)
    assert made == [forms.form_reference(record, i) for i in range(3)]


def test_assumption_conflicts() -> None:
    # columns: sex present?, sex tag (the schema has two salt sources; only sex.value matters)
    def side(present_sex: list[bool], sex_tags: list[int]) -> tuple[Any, Any]:
        present = np.ones((len(present_sex), len(NAMES)), dtype=bool)
        present[:, SEX] = present_sex
        tags = np.zeros((len(sex_tags), len(CHILD.salt_sources)), dtype=np.uint64)
        tags[:, SEX_TAG] = sex_tags
        return present, tags

    # pairs: form f vs record f, form f vs record m, form f vs record without sex (tag 0),
    # form f vs form m, form f vs form f, record f vs record m (no form: not a conflict)
    lp, lt = side([False, False, False, False, False, True], [5, 5, 5, 5, 5, 5])
    rp, rt = side([True, True, False, False, False, True], [5, 7, 0, 7, 5, 7])
    assert COLUMNS == ((SEX, SEX_TAG),)
    got = forms.assumption_conflicts(COLUMNS, lp, lt, rp, rt).tolist()
    assert got == [False, True, False, True, False, False]
    # symmetric
    assert forms.assumption_conflicts(COLUMNS, rp, rt, lp, lt).tolist() == got


def test_best_per_record_keeps_one_pair_per_record_pair() -> None:
    record = np.array([0, 0, 0, 1, 2, 2], dtype=np.int64)
    left = np.array([0, 1, 2, 0, 3, 3, 1], dtype=np.int64)
    right = np.array([1, 3, 3, 3, 4, 5, 4], dtype=np.int64)
    prob = np.array([0.99, 0.4, 0.8, 0.8, 0.3, 0.3, 0.6])
    keep = forms.best_per_record(left, right, prob, record)
    # (0,1) is inside record 0; of record 0-1 pairs the 0.8 first; of 1-2 the first 0.3
    assert keep.tolist() == [False, False, True, False, True, False, True]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.floats(0, 1)), min_size=0, max_size=30
    ),
    st.lists(st.integers(0, 3), min_size=6, max_size=6),
)
def test_best_per_record_property(
    pairs: list[tuple[int, int, float]], record_list: list[int]
) -> None:
    record = np.array(record_list, dtype=np.int64)
    left = np.array([p[0] for p in pairs], dtype=np.int64)
    right = np.array([p[1] for p in pairs], dtype=np.int64)
    prob = np.array([p[2] for p in pairs], dtype=np.float64)
    keep = forms.best_per_record(left, right, prob, record)
    kept = {}
    for k in np.flatnonzero(keep).tolist():
        key = frozenset((int(record[left[k]]), int(record[right[k]])))
        assert len(key) == 2 and key not in kept
        kept[key] = prob[k]
    for k in range(len(pairs)):
        key = frozenset((int(record[left[k]]), int(record[right[k]])))
        if len(key) == 2:
            assert key in kept and kept[key] >= prob[k]


def decisive_dob_model() -> scoring.FellegiSunterModel:
    """A fixed model in which each comparison at its top level multiplies the odds by 10 and
    the prior odds are 10^-3.5: two or three exact agreements (the combined fallbacks, or the
    names and postcode) stay below a match (0.24 at most), a fourth (the date of birth) makes
    one (0.76). Fitted by EM, the model of a
    two-record federation is degenerate (every random pair is the one child), so the test
    fixes it and tests what forms change: which comparisons are made."""
    m, u = [], []
    for levels in pipeline.thresholds_of(CHILD):
        rest = len(levels)  # levels below the top
        m.append((*([0.1 / rest] * rest), 0.9))
        u.append((*([0.91 / rest] * rest), 0.09))
    odds = 10**-3.5
    return scoring.FellegiSunterModel(
        field_names=COMPARISONS,
        thresholds=pipeline.thresholds_of(CHILD),
        m=tuple(m),
        u=tuple(u),
        prior=odds / (1 + odds),
    )


def test_a_sexless_record_is_compared_on_its_date_of_birth() -> None:
    # two agencies hold one child; one of them lacks sex. As records, their dates of birth are
    # under different salts (not compared), and so the names; as forms, the consistent form
    # compares them, and that agreement is what links them.
    datasets = [columns_of([AMY]), columns_of([{**AMY, "sex": "F"}])]
    plain = [encode_records(CHILD, keys(), cols) for cols in datasets]
    published = [forms.encode_forms(CHILD, keys(), cols) for cols in datasets]
    model = decisive_dob_model()
    by_records = pipeline.cluster_datasets(CHILD, plain, model=model)
    by_forms = pipeline.cluster_forms(CHILD, published, model=model)
    assert by_records.labels.tolist() == [0, 1]  # names and postcode alone: no match
    assert by_records.scored.levels.shape[1] == len(COMPARISONS)  # one level per comparison
    assert by_records.scored.levels[:, DOB_LEVEL].tolist() == [scoring.MISSING_LEVEL]
    assert by_forms.scored.left.tolist() == [0] and by_forms.scored.right.tolist() == [1]
    exact = len(CHILD.field("date_of_birth").levels)  # the top level
    assert by_forms.scored.levels[0, DOB_LEVEL] == exact
    # the names and postcode are salted with the date of birth, whose salt tag follows its
    # (sex-salted) filter: as records they are not compared either, and their combined
    # fallbacks (salted with date parts only) are, at the top; as forms the names and postcode
    # are compared, so the fallbacks are not
    for name in ("given_name", "family_name", "postcode", "full_name"):
        top = len(CHILD.field(name).levels)
        combined = bool(CHILD.field(name).combines)
        at = COMPARISONS.index(name)
        assert by_records.scored.levels[0, at] == (top if combined else scoring.MISSING_LEVEL)
        assert by_forms.scored.levels[0, at] == (scoring.MISSING_LEVEL if combined else top)
    assert by_forms.labels.tolist() == [0, 0]
    assert by_forms.source.tolist() == [0, 1] and by_forms.offsets.tolist() == [0, 1, 2]
