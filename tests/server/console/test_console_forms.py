"""The console's pure parts: the lookup form's checks and the answer's words."""

from __future__ import annotations

import pytest

from proto.jigsaw.v1 import jigsaw_pb2
from server.common.auth import Identity
from server.common.purposes import DEFAULT_PURPOSE_CODES
from server.common.status import RequestError
from server.console.forms import describe_candidate, nhs_number_valid, read_lookup_form
from server.node.acting import acting_person

GOOD = {
    "given_name": "Amelia",
    "family_name": "Baker",
    "dob_day": "24",
    "dob_month": "5",
    "dob_year": "2014",
    "sex": "f",
    "postcode": "sw1a 1aa",
    "nhs_number": "943 476 5919",
    "purpose": "s47_enquiry",
    "note": "case 4711",
}


def test_a_good_form_gives_the_identifiers() -> None:
    checked, errors = read_lookup_form(GOOD, DEFAULT_PURPOSE_CODES)
    assert errors == [] and checked is not None
    assert checked.identifiers["date_of_birth"] == "2014-05-24"
    assert checked.identifiers["postcode"] == "SW1A 1AA"
    assert checked.identifiers["nhs_number"] == "9434765919"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dob_day": "31", "dob_month": "2"}, "dob-day"),
        ({"dob_year": "3014"}, "dob-day"),
        ({"dob_month": ""}, "dob-day"),
        ({"nhs_number": "1234567890"}, "nhs_number"),
        ({"postcode": "not a postcode"}, "postcode"),
        ({"purpose": "curiosity"}, "purpose"),
        ({"note": ""}, "note"),
        ({"sex": "q"}, "sex"),
    ],
)
def test_each_bad_field_is_named_and_its_value_never_echoed(
    change: dict[str, str], field: str
) -> None:
    checked, errors = read_lookup_form(GOOD | change, DEFAULT_PURPOSE_CODES)
    assert checked is None and [e.field for e in errors] == [field]
    for value in change.values():
        if value:
            assert all(value not in e.text for e in errors)


def test_nhs_check_digit() -> None:
    assert nhs_number_valid("9434765919")
    assert not nhs_number_valid("9434765918")
    assert not nhs_number_valid("943476591")


def test_the_answer_shows_no_weight_and_missing_is_neutral() -> None:
    candidate = jigsaw_pb2.Candidate(
        agency="childrens_social_care",
        reference="0" * 32,
        band=jigsaw_pb2.PROBABILITY_BAND_HIGH,
        evidence=[
            jigsaw_pb2.FieldEvidence(
                field="given_name", agreement=jigsaw_pb2.AGREEMENT_EXACT, weight=6.5
            ),
            jigsaw_pb2.FieldEvidence(
                field="postcode", agreement=jigsaw_pb2.AGREEMENT_DISAGREES, weight=-3.25
            ),
            jigsaw_pb2.FieldEvidence(
                field="nhs_number", agreement=jigsaw_pb2.AGREEMENT_MISSING, weight=0.4
            ),
        ],
        probability=0.97,
    )
    view = describe_candidate(candidate, "token")
    assert view.agency_label == "Children's social care" and view.band == "High"
    assert [row.push for row in view.evidence] == [1.0, -0.5, 0.0]
    assert "0.97" not in repr(view) and "6.5" not in repr(view)


def test_only_a_console_may_act_for_a_staff_member() -> None:
    console = Identity("police-console", "police", "console")
    staff = Identity("bob", "police", "staff")
    assert acting_person(console, "bob") == Identity("bob", "police", "staff")
    assert acting_person(staff, "") is staff
    with pytest.raises(RequestError):
        acting_person(staff, "alice")  # staff cannot act for a colleague
    with pytest.raises(RequestError):
        acting_person(console, "")  # a console always names the person
    with pytest.raises(RequestError):
        acting_person(console, "Bob Smith")  # not a certificate name
