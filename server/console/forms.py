"""What staff type and what they are shown: the lookup form's checks and the answer's words.

Role: the pure part of the console (no I/O). :func:`read_lookup_form` turns the posted form
into the node's identifiers, or into GOV.UK-style errors (one per field, in page order, each
naming the field and what is expected — never the value typed). :func:`describe_candidate`
turns a ``Candidate`` into what staff read: the agency's name, the band in words, the
evidence in plain words per field and a chart of which fields pushed the match up or down,
drawn from the evidence's direction and relative size only (no probability, no weight is
ever shown). :data:`PRIORITIES` are MASH response times.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proto.jigsaw.v1 import jigsaw_pb2

__all__ = [
    "PRIORITIES",
    "CandidateView",
    "FormError",
    "LinkedView",
    "LookupForm",
    "describe_candidate",
    "describe_linked",
    "nhs_number_valid",
    "read_lookup_form",
]

MAX_NAME_CHARS = 100
MAX_NOTE_CHARS = 500
POSTCODE_RE = re.compile(r"[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}")
SEX_CHOICES = (("f", "Female"), ("m", "Male"), ("x", "Another or indeterminate"), ("", "Not known"))

#: Disclosure priority → (label, respond within hours, what it is for): MASH practice.
PRIORITIES: Mapping[str, tuple[str, int, str]] = {
    "red": ("Red", 4, "a child may be at immediate risk of significant harm"),
    "amber": ("Amber", 24, "a child may be at risk of significant harm, not immediate"),
    "green": ("Green", 72, "no immediate risk: a child in need or early help"),
}

PURPOSE_LABELS: Mapping[str, str] = {
    "s47_enquiry": "Child protection enquiry (section 47)",
    "strategy_discussion": "Strategy discussion",
    "child_in_need_assessment": "Child in need assessment (section 17)",
    "mash_referral": "MASH referral",
    "early_help_assessment": "Early help assessment",
    "missing_child_enquiry": "Missing child enquiry",
}

FIELD_LABELS: Mapping[str, str] = {
    "given_name": "Given name",
    "middle_names": "Middle names",
    "family_name": "Family name",
    "full_name": "Full name",
    "date_of_birth": "Date of birth",
    "sex": "Sex",
    "postcode": "Postcode",
    "nhs_number": "NHS number",
}

AGREEMENT_WORDS: Mapping[int, tuple[str, str]] = {
    jigsaw_pb2.AGREEMENT_EXACT: ("exact", "green"),
    jigsaw_pb2.AGREEMENT_STRONG: ("nearly the same (a small difference, such as a typo)", "green"),
    jigsaw_pb2.AGREEMENT_WEAK: ("similar", "yellow"),
    jigsaw_pb2.AGREEMENT_DISAGREES: ("different", "red"),
    jigsaw_pb2.AGREEMENT_MISSING: ("not recorded on one side", "grey"),
    jigsaw_pb2.AGREEMENT_NOT_COMPARED: ("not compared", "grey"),
}

BAND_WORDS: Mapping[int, tuple[str, str]] = {
    jigsaw_pb2.PROBABILITY_BAND_VERY_HIGH: ("Very high", "green"),
    jigsaw_pb2.PROBABILITY_BAND_HIGH: ("High", "blue"),
    jigsaw_pb2.PROBABILITY_BAND_POSSIBLE: ("Possible", "yellow"),
    jigsaw_pb2.PROBABILITY_BAND_LOW: ("Low", "grey"),
}


def purpose_label(code: str) -> str:
    return PURPOSE_LABELS.get(code, code.replace("_", " ").capitalize())


def agency_label(agency: str) -> str:
    """``childrens_social_care`` → ``Children's social care``."""
    words = agency.replace("childrens", "children's").replace("_", " ")
    return words[:1].upper() + words[1:]


def field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class FormError:
    """One problem: the id of the field it belongs to (the summary links there) and text."""

    field: str
    text: str


@dataclass(frozen=True)
class LookupForm:
    """A checked lookup form: the node's identifiers, the purpose code and the note."""

    identifiers: Mapping[str, str]
    purpose_code: str
    note: str


def nhs_number_valid(digits: str) -> bool:
    """True for ten digits whose last is the modulus 11 check digit of the first nine."""
    if not re.fullmatch(r"[0-9]{10}", digits):
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def _date(day: str, month: str, year: str, errors: list[FormError]) -> str | None:
    if not (day or month or year):
        return None
    if not (day and month and year):
        missing = [n for n, v in (("day", day), ("month", month), ("year", year)) if not v]
        errors.append(FormError("dob-day", f"Date of birth must include a {missing[0]}"))
        return None
    if not (day.isdigit() and month.isdigit() and year.isdigit() and len(year) == 4):
        errors.append(
            FormError("dob-day", "Date of birth must be a real date, with a 4-digit year")
        )
        return None
    try:
        date = datetime.date(int(year), int(month), int(day))
    except ValueError:
        errors.append(FormError("dob-day", "Date of birth must be a real date"))
        return None
    if date > datetime.date.today():
        errors.append(FormError("dob-day", "Date of birth must be today or in the past"))
        return None
    if date.year < 1900:
        errors.append(FormError("dob-day", "Date of birth must be after 1900"))
        return None
    return date.isoformat()


def read_lookup_form(
    form: Mapping[str, str], purposes: Sequence[str]
) -> tuple[LookupForm | None, list[FormError]]:
    """The checked lookup, or None and the errors in page order."""
    errors: list[FormError] = []
    given = form.get("given_name", "").strip()
    family = form.get("family_name", "").strip()
    for key, text, label in (
        ("given_name", given, "Given name"),
        ("family_name", family, "Family name"),
    ):
        if len(text) > MAX_NAME_CHARS:
            errors.append(FormError(key, f"{label} must be {MAX_NAME_CHARS} characters or fewer"))
    date = _date(
        form.get("dob_day", "").strip(),
        form.get("dob_month", "").strip(),
        form.get("dob_year", "").strip(),
        errors,
    )
    sex = form.get("sex", "")
    if sex not in {value for value, _ in SEX_CHOICES}:
        errors.append(FormError("sex", "Select the child's sex, or 'Not known'"))
    postcode = re.sub(r"\s+", " ", form.get("postcode", "").strip().upper())
    if postcode and not POSTCODE_RE.fullmatch(postcode):
        errors.append(FormError("postcode", "Enter a real postcode, like SW1A 1AA"))
    nhs = re.sub(r"[\s-]", "", form.get("nhs_number", ""))
    if nhs and not nhs_number_valid(nhs):
        errors.append(
            FormError("nhs_number", "Enter a valid NHS number: 10 digits, like 943 476 5919")
        )
    purpose = form.get("purpose", "")
    if purpose not in purposes:
        errors.append(FormError("purpose", "Select the purpose of this lookup"))
    note = form.get("note", "").strip()
    if not note:
        errors.append(FormError("note", "Enter a note: a case reference or a short reason"))
    elif len(note) > MAX_NOTE_CHARS:
        errors.append(FormError("note", f"Note must be {MAX_NOTE_CHARS} characters or fewer"))
    if not errors and not (given or family or date or postcode or nhs):
        errors.append(
            FormError(
                "given_name", "Enter at least a name, a date of birth, a postcode or an NHS number"
            )
        )
    if errors:
        return None, errors
    identifiers = {
        name: value
        for name, value in (
            ("given_name", given),
            ("family_name", family),
            ("date_of_birth", date or ""),
            ("sex", sex),
            ("postcode", postcode),
            ("nhs_number", nhs),
        )
        if value
    }
    return LookupForm(identifiers=identifiers, purpose_code=purpose, note=note), []


@dataclass(frozen=True)
class EvidenceRow:
    """One field's comparison, in words, and its bar in the chart (-1 … 1, relative)."""

    field: str
    words: str
    colour: str
    push: float


@dataclass(frozen=True)
class CandidateView:
    """What staff see of one candidate."""

    token: str
    agency: str
    agency_label: str
    band: str
    band_colour: str
    evidence: tuple[EvidenceRow, ...] = field(default_factory=tuple)


def describe_candidate(candidate: jigsaw_pb2.Candidate, token: str) -> CandidateView:
    """The candidate in words; ``token`` names it in the console's forms (never its
    reference). Chart bars are each field's evidence relative to the strongest field of this
    candidate, so that no absolute weight can be read off."""
    band, colour = BAND_WORDS.get(candidate.band, ("Not known", "grey"))
    strongest = max((abs(e.weight) for e in candidate.evidence), default=0.0) or 1.0
    rows = []
    for evidence in candidate.evidence:
        words, tone = AGREEMENT_WORDS.get(evidence.agreement, ("not known", "grey"))
        push = evidence.weight / strongest
        if evidence.agreement in (
            jigsaw_pb2.AGREEMENT_MISSING,
            jigsaw_pb2.AGREEMENT_NOT_COMPARED,
        ):
            push = 0.0  # neutral by design: no evidence either way
        rows.append(EvidenceRow(field_label(evidence.field), words, tone, round(push, 2)))
    return CandidateView(
        token=token,
        agency=candidate.agency,
        agency_label=agency_label(candidate.agency),
        band=band,
        band_colour=colour,
        evidence=tuple(rows),
    )


@dataclass(frozen=True)
class LinkedView:
    """One of the agency's own records known to other agencies: its local id and, per other
    agency, the band in words. The node's reference and the cluster id are not shown."""

    local_id: str
    agencies: tuple[tuple[str, str, str], ...]  # (agency label, band words, tag colour)


def describe_linked(record: jigsaw_pb2.LocalLinkedRecord) -> LinkedView:
    """What staff read about one linked record: never any agency's reference."""
    agencies = []
    for linked in record.record.agencies:
        band, colour = BAND_WORDS.get(linked.band, ("Not known", "grey"))
        agencies.append((agency_label(linked.agency), band, colour))
    return LinkedView(record.local_id, tuple(agencies))
