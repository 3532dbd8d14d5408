"""How a node encodes a lookup whose salt chain is incomplete (server.node.lookup): the shipped
schema salts the date of birth with sex and the names and postcode with the date, so a query
without sex is sent once per sex value (sex published as missing), and a chain through a
field of many values is refused with the field and the reason, never a value."""

from __future__ import annotations

import numpy as np
import pytest

from linkage import forms
from linkage.encode import encode_record
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema
from server.common.status import RequestError
from server.common.wire import encoded_to_proto
from server.node.lookup import lookup_notes, require_chained_salts
from tests.helpers.schemas import DATE_SALTED

SCHEMA = default_child_schema()
KEYS = KeySet(LinkageSecret.for_tests())
QUERY = {"given_name": "Amy", "family_name": "Smith", "date_of_birth": "2/3/2014"}


def test_a_query_without_sex_is_sent_under_each_sex() -> None:
    sex = SCHEMA.field_names.index("sex")
    queries = forms.encode_query(SCHEMA, KEYS, QUERY)
    assert len(queries) == 3 and not queries.field_present[:, sex].any()
    tags = queries.salt_tags[:, SCHEMA.salt_sources.index("sex.value")].tolist()
    assert tags == sorted(tags) and len(set(tags)) == 3 and 0 not in tags
    # with sex, or without the date (nothing salted with sex is given), nothing is assumed
    with_sex = {**QUERY, "sex": "F"}
    assert len(forms.encode_query(SCHEMA, KEYS, with_sex)) == 1
    no_date = {k: v for k, v in QUERY.items() if k != "date_of_birth"}
    assert len(forms.encode_query(SCHEMA, KEYS, no_date)) == 1


def test_an_assumed_sex_only_salts() -> None:
    # what the node sends for the variant {"sex": "f"}
    given = encode_record(SCHEMA, KEYS, {**QUERY, "sex": "f"})
    assumed = forms.assume(SCHEMA, given, ["sex"])
    sex = SCHEMA.field_names.index("sex")
    dob = SCHEMA.field_names.index("date_of_birth")
    assert not assumed.field_present[0, sex] and not assumed.field_filters[sex].any()
    # everything else, salt tags included, as if sex had been given
    np.testing.assert_array_equal(assumed.field_filters[dob], given.field_filters[dob])
    np.testing.assert_array_equal(assumed.salt_tags, given.salt_tags)
    np.testing.assert_array_equal(assumed.block_keys, given.block_keys)


@pytest.mark.parametrize(
    "values",
    [QUERY, {**QUERY, "sex": "F"}, {**QUERY, "sex": "?"}, {"given_name": "Jo", "sex": None}],
    ids=["no sex", "sex", "invalid sex", "no date"],
)
@pytest.mark.parametrize("secret", [0, 1, 2])
def test_a_query_is_encoded_as_its_record_is_published(
    values: dict[str, str | None], secret: int
) -> None:
    # encode_query (one record, the fast encoder) and encode_forms (the publisher) give the
    # same rows in the same order (by salt tag, which differs by key from the values' order),
    # so a query without sex meets a record without sex form for form; and the same problems
    keys = KEYS if secret == 0 else KeySet(LinkageSecret(bytes([secret]) * 32))
    queries = forms.encode_query(SCHEMA, keys, values)
    published = forms.encode_forms(SCHEMA, keys, {n: [values.get(n)] for n in SCHEMA.input_names})
    references = ["0" * 32] * len(queries)
    assert [r.SerializeToString() for r in encoded_to_proto(queries, references)] == [
        r.SerializeToString() for r in encoded_to_proto(published.batch, references)
    ]
    assert queries.problems == published.batch.problems


def test_a_chain_through_a_field_of_many_values_is_refused() -> None:
    # the names salted with the whole date (their tags come from its published filter) and the
    # date salted with the postcode: a postcode cannot be assumed
    # (the postcode unsalted first: a salt field cannot itself be salted with what it salts)
    schema = DATE_SALTED.with_salt("", ["postcode"]).with_salt("postcode.value", ["date_of_birth"])
    batch = encode_record(schema, KEYS, QUERY)
    assert len(forms.encode_query(schema, KEYS, QUERY)) == 1  # a postcode is not assumed
    with pytest.raises(RequestError) as info:
        require_chained_salts(schema, batch)
    message = str(info.value)
    assert "identifiers['postcode']" in message and "date_of_birth" in message
    assert "given_name" in message  # what could not be compared
    assert all(value not in message for value in QUERY.values())
    require_chained_salts(schema, encode_record(schema, KEYS, {**QUERY, "postcode": "LS6 2AB"}))
    require_chained_salts(SCHEMA, encode_record(SCHEMA, KEYS, QUERY))  # sex is assumed instead
    # views are salted with parts of the date's value, not its published filter: the same
    # chain through views of the names breaks nothing but the date's own comparison
    date_parts = ["date_of_birth.year_month", "date_of_birth.year_day", "date_of_birth.day_month"]
    views = (
        DATE_SALTED.with_salt(date_parts, ["given_name", "middle_names", "family_name"])
        .with_salt("", ["postcode"])
        .with_salt("postcode.value", ["date_of_birth"])
    )
    assert views.field("given_name").view_of == "given_name"
    require_chained_salts(views, encode_record(views, KEYS, QUERY))
    # in the shipped schema the names are salted with the date's value (its filter): refused
    shipped = SCHEMA.with_salt("", ["postcode"]).with_salt("postcode.value", ["date_of_birth"])
    with pytest.raises(RequestError) as info:
        require_chained_salts(shipped, encode_record(shipped, KEYS, QUERY))
    assert "given_name" in str(info.value)


def test_notes_say_what_a_query_is_compared_on_and_never_a_value() -> None:
    full = {**QUERY, "sex": "F", "postcode": "LS6 2AB"}
    assert lookup_notes(SCHEMA, encode_record(SCHEMA, KEYS, full)) == []
    # without sex: the date of birth is compared under each sex value
    (note,) = lookup_notes(SCHEMA, encode_record(SCHEMA, KEYS, QUERY))
    assert note.startswith("sex not given: date_of_birth compared under each of its 3 values")
    # without the date: the names and the postcode meet only records without one
    no_date = {k: v for k, v in full.items() if k != "date_of_birth"}
    (note,) = lookup_notes(SCHEMA, encode_record(SCHEMA, KEYS, no_date))
    assert note.startswith(
        "date_of_birth not given: given_name, family_name, postcode compared only with "
        "records that lack date_of_birth too"
    )
    for query in (QUERY, no_date):
        text = " ".join(lookup_notes(SCHEMA, encode_record(SCHEMA, KEYS, query)))
        assert not any(value.lower() in text.lower() for value in full.values() if len(value) > 1)
