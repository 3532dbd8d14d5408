"""Regenerate the encoding golden vectors from the current library (run deliberately, by hand).

Role: the golden files ``tokens.json``, ``filters.json``, ``fingerprint.json``,
``hardened_filters.json`` and ``shipped_filters.json`` are the compatibility contract between
agencies (see ``README.md`` beside this script). This script writes them from whatever the library
currently does, so running it *accepts* the current behaviour as the new contract: only run
it after an intended change of normalisation, tokenisation, filter construction, hardening
or schema, bump the version that the change requires (``NORMALISATION_VERSION`` or
``ENCODING_VERSION``) and add a CHANGELOG.md entry. Tests never call it.

Usage (from the repository root)::

    .venv/bin/python tests/linkage/golden/make_vectors.py          # rewrite the five files
    .venv/bin/python tests/linkage/golden/make_vectors.py --check  # exit 1 if any file would change

``hkdf_rfc5869.json`` is not generated: it is copied from RFC 5869 Appendix A.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(GOLDEN_DIR.parents[2]))

from linkage import forms, normalise  # noqa: E402
from linkage.encode import EncodedBatch, encode_records, tokenise  # noqa: E402
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret  # noqa: E402
from linkage.schema import (  # noqa: E402
    ENCODING_VERSION,
    Hardening,
    Schema,
    load_schema,
    shipped_schema_names,
)

#: (field of the child schema, raw value) pairs for tokens.json. Chosen to cover every field
#: kind, non-ASCII names, particles, hyphens, several date formats (and a day/month
#: transposition), postcode spellings, NHS-number spellings, sex codes and missing values.
TOKEN_CASES: list[tuple[str, str | None]] = [
    ("given_name", "José"),
    ("given_name", "JOSE"),
    ("given_name", "Jose"),
    ("given_name", "Nguyễn Văn"),
    ("given_name", "Ben Ali"),
    ("given_name", "Mary-Jane"),
    ("given_name", "Dr. Siobhán"),
    ("given_name", ""),
    ("given_name", None),
    ("middle_names", "Zoë Anne"),
    ("middle_names", "N/A"),
    ("family_name", "Müller"),
    ("family_name", "MULLER"),
    ("family_name", "Nguyễn"),
    ("family_name", "O'Brien"),
    ("family_name", "O Brien"),
    ("family_name", "van der Berg"),
    ("family_name", "Van Der Berg"),
    ("family_name", "Smith-Jones"),
    ("family_name", "Ng"),
    ("date_of_birth", "2014-03-02"),
    ("date_of_birth", "02/03/2014"),
    ("date_of_birth", "2 March 2014"),
    ("date_of_birth", "02-Mar-2014"),
    ("date_of_birth", "03/02/2014"),
    ("date_of_birth", "1999-12-31"),
    ("date_of_birth", "unknown"),
    ("sex", "F"),
    ("sex", "female"),
    ("sex", "1"),
    ("sex", "X"),
    ("sex", "U"),
    ("postcode", "SW1A 1AA"),
    ("postcode", "sw1a1aa"),
    ("postcode", "M1 1AE"),
    ("postcode", "EC1A 1BB"),
    ("postcode", "B33 8TH"),
    ("nhs_number", "943 476 5919"),
    ("nhs_number", "943-476-5919"),
    ("nhs_number", "4010232137"),
]

#: A small fixed batch in the child schema for filters.json. Rows 0 and 1 are one child
#: spelled two ways (identical filters and block keys expected); row 3 has the day and month
#: of row 0's date of birth transposed and an NHS number with a wrong check digit (a
#: problem, encoded as missing); row 5 has an impossible date; row 6 is entirely missing;
#: row 7 shares row 4's family name in another spelling.
FILTER_RECORDS: list[dict[str, str | None]] = [
    {
        "given_name": "José",
        "middle_names": "María",
        "family_name": "Müller",
        "date_of_birth": "02/03/2014",
        "sex": "F",
        "postcode": "SW1A 1AA",
        "nhs_number": "943 476 5919",
    },
    {
        "given_name": "JOSE",
        "middle_names": "Maria",
        "family_name": "MULLER",
        "date_of_birth": "2014-03-02",
        "sex": "female",
        "postcode": "sw1a1aa",
        "nhs_number": "9434765919",
    },
    {
        "given_name": "Nguyễn Văn",
        "middle_names": "",
        "family_name": "Nguyễn",
        "date_of_birth": "2 March 2014",
        "sex": "M",
        "postcode": "M1 1AE",
        "nhs_number": None,
    },
    {
        "given_name": "Seán",
        "middle_names": "Patrick",
        "family_name": "O'Brien",
        "date_of_birth": "03/02/2014",
        "sex": "1",
        "postcode": "B33 8TH",
        "nhs_number": "943 476 5918",
    },
    {
        "given_name": "Anna",
        "middle_names": None,
        "family_name": "van der Berg",
        "date_of_birth": "1999-12-31",
        "sex": "X",
        "postcode": "EH1 1YZ",
        "nhs_number": "401 023 2137",
    },
    {
        "given_name": "Tom",
        "middle_names": "",
        "family_name": "Smith-Jones",
        "date_of_birth": "31/02/2014",
        "sex": "U",
        "postcode": "",
        "nhs_number": "",
    },
    {
        "given_name": None,
        "middle_names": None,
        "family_name": None,
        "date_of_birth": None,
        "sex": None,
        "postcode": None,
        "nhs_number": None,
    },
    {
        "given_name": "Ben",
        "middle_names": "Ali",
        "family_name": "Van Der Berg",
        "date_of_birth": "31/12/1999",
        "sex": "male",
        "postcode": "eh11yz",
        "nhs_number": "9876543210",
    },
]


def filter_hex(words: Any) -> str:
    """Hex of a packed filter row's bytes (little-endian uint64 words, as in linkage.encode)."""
    return bytes(words.astype("<u8").tobytes()).hex()


def plain_child_schema() -> Schema:
    """The plain contract: the shipped child schema with salting and hardening off."""
    return load_schema("child").with_salt("").with_hardening(Hardening(), Hardening())


def token_vectors() -> list[dict[str, Any]]:
    schema = plain_child_schema()
    out: list[dict[str, Any]] = []
    for field_name, raw in TOKEN_CASES:
        spec = schema.field(field_name)
        normalised = normalise.NORMALISERS[spec.kind](
            raw, field=spec.name, day_first=schema.day_first
        )
        tokens = [] if normalised is None else tokenise(spec, normalised)
        out.append(
            {
                "field": field_name,
                "kind": spec.kind,
                "raw": raw,
                "normalised": normalised,
                "tokens": tokens,
            }
        )
    return out


def _filter_row(
    schema: Schema, batch: EncodedBatch, row: int, record: dict[str, Any], *, index: int
) -> dict[str, Any]:
    """Row ``index`` of ``batch`` (record ``row`` of FILTER_RECORDS): its published filters."""
    return {
        "row": row,
        "record": record,
        "field_filters": {
            name: filter_hex(batch.field_filters[i][index])
            for i, name in enumerate(schema.field_names)
        },
        "record_filter": filter_hex(batch.record_filters[index]),
        "present": {
            name: bool(batch.field_present[index, i]) for i, name in enumerate(schema.field_names)
        },
    }


def _vector_rows(
    schema: Schema, extra: Callable[[EncodedBatch, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every FILTER_RECORDS row encoded under ``schema`` and the published test key: its
    published filters (:func:`_filter_row`) and whatever ``extra(batch, row)`` adds."""
    keys = KeySet(LinkageSecret.for_tests(), key_version=1)
    columns = {f: [r[f] for r in FILTER_RECORDS] for f in schema.input_names}
    batch = encode_records(schema, keys, columns)
    return [
        {**_filter_row(schema, batch, row, record, index=row), **extra(batch, row)}
        for row, record in enumerate(FILTER_RECORDS)
    ]


def filter_vectors() -> dict[str, Any]:
    schema = plain_child_schema()

    def extra(batch: EncodedBatch, row: int) -> dict[str, Any]:
        return {
            "block_keys": {
                rule.name: f"{int(batch.block_keys[row, r]):016x}"
                for r, rule in enumerate(schema.blocking)
            },
            "problem_fields": [p.field for p in batch.problems if p.row == row],
        }

    rows = _vector_rows(schema, extra)
    return {
        "schema": "child",
        "schema_fingerprint": schema.fingerprint(),
        "encoding_version": ENCODING_VERSION,
        "normalisation_version": normalise.NORMALISATION_VERSION,
        "secret_hex": TEST_SECRET_HEX,
        "key_version": 1,
        "rows": rows,
    }


#: Hardening for hardened_filters.json: every transform appears on some filter, alone and in
#: combination, and two fields stay unhardened (their bytes must equal filters.json's).
HARDENED_RECORD = Hardening(balance=True, diffusion_t=3, blip_epsilon=8.0)
HARDENED_FIELDS: dict[str, Hardening] = {
    "given_name": Hardening(balance=True, xor_fold=True),
    "family_name": Hardening(diffusion_t=3),
    "date_of_birth": Hardening(blip_epsilon=4.0),
    "postcode": Hardening(balance=True),
    "nhs_number": Hardening(balance=True, diffusion_t=5, xor_fold=True, blip_epsilon=6.0),
}
#: Rows of FILTER_RECORDS in hardened_filters.json: one child in two spellings (0, 1), missing
#: and invalid values (2, 3, 5) and an entirely missing record (6).
HARDENED_ROWS = (0, 1, 2, 3, 5, 6)


def hardened_filter_vectors() -> dict[str, Any]:
    plain = plain_child_schema()
    schema = plain.with_hardening(HARDENED_RECORD, HARDENED_FIELDS)
    keys = KeySet(LinkageSecret.for_tests(), key_version=1)
    records = [FILTER_RECORDS[row] for row in HARDENED_ROWS]
    columns = {f: [r[f] for r in records] for f in schema.input_names}
    batch = encode_records(schema, keys, columns)
    rows: list[dict[str, Any]] = []
    for index, (row, record) in enumerate(zip(HARDENED_ROWS, records, strict=True)):
        rows.append(_filter_row(schema, batch, row, record, index=index))
    return {
        "schema": "child",
        "record_hardening": HARDENED_RECORD.to_dict(),
        "field_hardening": {name: h.to_dict() for name, h in HARDENED_FIELDS.items()},
        "schema_fingerprint": schema.fingerprint(),
        "published_bits": {spec.name: spec.published_bits for spec in schema.fields},
        "published_record_bits": schema.published_record_bits,
        "encoding_version": ENCODING_VERSION,
        "normalisation_version": normalise.NORMALISATION_VERSION,
        "secret_hex": TEST_SECRET_HEX,
        "key_version": 1,
        "rows": rows,
    }


def shipped_filter_vectors() -> dict[str, Any]:
    """Every FILTER_RECORDS row under the shipped child schema as it is (salted names, keyed
    diffusion): the bytes a node publishes today, salt tags included."""
    schema = load_schema("child")

    def extra(batch: EncodedBatch, row: int) -> dict[str, Any]:
        return {
            "salt_tags": {
                source: f"{int(batch.salt_tags[row, s]):016x}"
                for s, source in enumerate(schema.salt_sources)
            }
        }

    rows = _vector_rows(schema, extra)
    return {
        "schema": "child",
        "schema_fingerprint": schema.fingerprint(),
        "salt_sources": list(schema.salt_sources),
        "encoding_version": ENCODING_VERSION,
        "normalisation_version": normalise.NORMALISATION_VERSION,
        "secret_hex": TEST_SECRET_HEX,
        "key_version": 1,
        "rows": rows,
    }


#: records for forms.json: lacking sex (with a date), with sex, lacking both, an invalid sex
FORM_RECORDS: list[dict[str, str | None]] = [
    {"given_name": "Amy", "middle_names": None, "family_name": "Okafor",
     "date_of_birth": "02/03/2014", "sex": None, "postcode": "LS6 2AB", "nhs_number": None},
    {"given_name": "Amy", "middle_names": None, "family_name": "Okafor",
     "date_of_birth": "02/03/2014", "sex": "F", "postcode": "LS6 2AB", "nhs_number": None},
    {"given_name": "Jo", "middle_names": None, "family_name": "Reid",
     "date_of_birth": None, "sex": None, "postcode": None, "nhs_number": None},
    {"given_name": "Kai", "middle_names": None, "family_name": "Lee",
     "date_of_birth": "2015-11-30", "sex": "?", "postcode": None, "nhs_number": None},
]  # fmt: skip


def form_vectors() -> dict[str, Any]:
    """FORM_RECORDS as a node publishes them under the shipped child schema
    (:func:`linkage.forms.encode_forms`): each form's record, number, reference (record
    ``i`` has reference ``i`` as 32 hex digits) and every published part."""
    schema = load_schema("child")
    keys = KeySet(LinkageSecret.for_tests(), key_version=1)
    columns = {f: [r[f] for r in FORM_RECORDS] for f in schema.input_names}
    published = forms.encode_forms(schema, keys, columns)
    batch = published.batch
    rows = []
    for index, (row, form) in enumerate(
        zip(published.origin.tolist(), published.form.tolist(), strict=True)
    ):
        vector = _filter_row(schema, batch, row, FORM_RECORDS[row], index=index)
        del vector["row"]
        rows.append(
            {
                "origin": row,
                "form": form,
                "reference": forms.form_reference(f"{row:032x}", form),
                **vector,
                "block_keys": [f"{int(k):016x}" for k in batch.block_keys[index]],
                "salt_tags": [f"{int(t):016x}" for t in batch.salt_tags[index]],
            }
        )
    return {
        "schema": "child",
        "schema_fingerprint": schema.fingerprint(),
        "salt_sources": list(schema.salt_sources),
        "encoding_version": ENCODING_VERSION,
        "secret_hex": TEST_SECRET_HEX,
        "key_version": 1,
        "rows": rows,
    }


def fingerprint_vectors() -> dict[str, str]:
    return {name: load_schema(name).fingerprint() for name in shipped_schema_names()}


def render(data: Any) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report changes, write nothing")
    args = parser.parse_args()
    outputs = {
        "tokens.json": render(token_vectors()),
        "filters.json": render(filter_vectors()),
        "fingerprint.json": render(fingerprint_vectors()),
        "hardened_filters.json": render(hardened_filter_vectors()),
        "shipped_filters.json": render(shipped_filter_vectors()),
        "forms.json": render(form_vectors()),
    }
    changed = []
    for name, text in outputs.items():
        path = GOLDEN_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            changed.append(name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    verb = "would change" if args.check else "written"
    print(f"{verb}: {', '.join(changed) if changed else 'nothing'}")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
