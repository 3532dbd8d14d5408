"""A lookup's date hypotheses (linkage.forms.date_hypotheses, encode_date_hypotheses):
the fields salted with the date of birth meet a record whose date is one of its usual errors,
the date itself withheld, so a near-miss date no longer hides the child."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import forms, pipeline, synthetic
from linkage.encode import EncodedBatch, concat_batches, encode_record
from linkage.index import MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.normalise import PLACEHOLDER_DATES
from linkage.schema import default_child_schema
from server.matcher.model import MODEL_FIT_RECORDS, MODEL_FIT_SEED

SCHEMA = default_child_schema()
KEYS = KeySet(LinkageSecret.for_tests())
QUERY = {
    "given_name": "Amelia",
    "family_name": "Baker",
    "date_of_birth": "03/02/2014",
    "sex": "F",
    "postcode": "LS1 4AB",
}


def test_the_hypotheses_of_a_date() -> None:
    assert forms.date_hypotheses("2014-02-03") == (
        "2014-02-02",
        "2014-02-04",
        "2014-01-03",
        "2014-03-03",
        "2013-02-03",
        "2015-02-03",
        "2014-03-02",
        "2014-01-01",
        "1900-01-01",
        None,
    )
    # no invalid date, no repeat, never the date itself
    assert forms.date_hypotheses("2016-01-01") == (
        "2016-01-02",
        "2016-02-01",
        "2015-01-01",
        "2017-01-01",
        "1900-01-01",
        None,
    )


@given(st.dates(min_value=date(1901, 1, 2), max_value=date(2099, 12, 30)))
def test_hypotheses_are_valid_dates_other_than_the_date(day: date) -> None:
    found = forms.date_hypotheses(day.isoformat())
    assert found[-1] is None and day.isoformat() not in found
    dates = [date.fromisoformat(str(x)) for x in found[:-1]]
    assert len(set(dates)) == len(dates)
    for near in (day - timedelta(days=1), day + timedelta(days=1)):
        if near.month == day.month:  # the day keyed one off, within the month written
            assert near in dates
    assert all(
        x.isoformat() in PLACEHOLDER_DATES or x.year in (day.year - 1, day.year, day.year + 1)
        for x in dates
    )


def test_each_hypothesis_row_salts_as_that_date_and_withholds_it() -> None:
    rows = forms.encode_date_hypotheses(SCHEMA, KEYS, QUERY)
    assert rows is not None
    hypotheses = forms.date_hypotheses("2014-02-03")
    assert len(rows) == len(hypotheses)
    dob = SCHEMA.field_names.index("date_of_birth")
    given_name = SCHEMA.field_names.index("given_name")
    tag = SCHEMA.salt_sources.index("date_of_birth.value")
    for k, other in enumerate(hypotheses):
        record = encode_record(SCHEMA, KEYS, {**QUERY, "date_of_birth": other})
        row = rows.take([k])
        assert not row.field_present[0, dob] and not row.field_filters[dob].any()
        # the names are encoded as a record with that date publishes them
        np.testing.assert_array_equal(
            row.field_filters[given_name], record.field_filters[given_name]
        )
        assert row.salt_tags[0, tag] == record.salt_tags[0, tag]


def test_without_a_valid_date_there_is_no_hypothesis() -> None:
    no_date = {k: v for k, v in QUERY.items() if k != "date_of_birth"}
    assert forms.encode_date_hypotheses(SCHEMA, KEYS, no_date) is None
    invalid = {**QUERY, "date_of_birth": "31/02/2014"}
    assert forms.encode_date_hypotheses(SCHEMA, KEYS, invalid) is None
    # a query without sex: each hypothesis as the query's own forms would be (under each sex
    # where the date is held; one row for "no date", which salts nothing with sex)
    no_sex = {k: v for k, v in QUERY.items() if k != "sex"}
    found = forms.encode_date_hypotheses(SCHEMA, KEYS, no_sex)
    assert found is not None
    expected = [
        len(forms.encode_query(SCHEMA, KEYS, {**no_sex, "date_of_birth": other}))
        for other in forms.date_hypotheses("2014-02-03")
    ]
    assert expected[-1] == 1 and set(expected[:-1]) == {3}
    assert len(found) == sum(expected)


def test_a_record_without_a_date_is_found_only_under_a_hypothesis() -> None:
    data = synthetic.generate_population(400, seed=5)
    health = data.agencies["health"]
    index = MatchIndex(SCHEMA, key_version=1)
    published = forms.encode_forms(SCHEMA, KEYS, health.columns)
    refs = [f"{int(row):032x}" for row in published.origin.tolist()]
    index.upsert(
        "health",
        [
            forms.form_reference(r, int(f))
            for r, f in zip(refs, published.form.tolist(), strict=True)
        ],
        published.batch,
    )
    # one more health record: the query's child, its date of birth not held (the names are
    # then salted as "no date", and no view of the full name is published under a date)
    typed = {**QUERY, "date_of_birth": None}
    index.upsert("health", ["f" * 32], encode_record(SCHEMA, KEYS, typed))
    sample, _, _ = index.snapshot(sample=MODEL_FIT_RECORDS, seed=MODEL_FIT_SEED)
    model = pipeline.score_pairs(SCHEMA, sample, None).model

    # whether the query meets the record at all (its probability is the model's business)
    def found(date_errors: bool) -> list[str]:
        rows = forms.encode_query(SCHEMA, KEYS, QUERY)
        extra = forms.encode_date_hypotheses(SCHEMA, KEYS, QUERY)
        if date_errors and extra is not None:
            rows = concat_batches([rows, extra])
        return [
            c.reference
            for q in range(len(rows))
            for c in index.query(rows.take([q]), model, max_candidates=5, min_probability=0.0)
        ]

    assert "f" * 32 not in found(False)
    assert "f" * 32 in found(True)


def _hypotheses_row_by_row(values: dict[str, str | None]) -> list[EncodedBatch]:
    """The specification of encode_date_hypotheses: each hypothesis encoded alone as a query
    (its forms included), the date withheld."""
    rows = []
    for name in forms.hypothesis_fields(SCHEMA):
        spec = SCHEMA.field(name)
        typed = forms._normalise_date(values.get(spec.input_name), SCHEMA)
        if typed is None:
            continue
        for other in forms.date_hypotheses(typed):
            query = forms.encode_query(SCHEMA, KEYS, {**values, spec.input_name: other})
            rows.append(forms.assume(SCHEMA, query, [name]))
    return rows


@settings(deadline=None)  # a case encodes a few queries: a loaded machine took 300 ms
@given(
    day=st.dates(min_value=date(1995, 1, 1), max_value=date(2026, 12, 31)),
    sex=st.sampled_from(["F", "M", None, "x"]),
    postcode=st.sampled_from(["LS1 4AB", None]),
    middle=st.sampled_from(["Rose", None]),
)
def test_the_batch_of_hypotheses_is_the_queries_encoded_one_by_one(
    day: date, sex: str | None, postcode: str | None, middle: str | None
) -> None:
    values = {
        **QUERY,
        "date_of_birth": day.strftime("%d/%m/%Y"),
        "sex": sex,
        "postcode": postcode,
        "middle_names": middle,
    }
    batch = forms.encode_date_hypotheses(SCHEMA, KEYS, values)
    expected = concat_batches(_hypotheses_row_by_row(values))
    assert batch is not None and len(batch) == len(expected)
    for got, want in zip(batch.field_filters, expected.field_filters, strict=True):
        assert np.array_equal(got, want)
    assert np.array_equal(batch.field_present, expected.field_present)
    assert np.array_equal(batch.record_filters, expected.record_filters)
    assert np.array_equal(batch.block_keys, expected.block_keys)
    assert np.array_equal(batch.salt_tags, expected.salt_tags)
    assert batch.problems == ()
