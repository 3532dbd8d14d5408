"""The household address as a field of the child schema: what it adds to quality, and at what
privacy cost (issue 16; RESULTS.md "Address as a child field").

Role: the evidence for whether the address line joins the shipped child schema. The seeded
synthetic four-agency population is drawn with addresses (``generate_population(...,
addresses=True)``: every other value exactly as without them, so the ``shipped`` rows are the
figures the other benchmarks measure on the same seed) in each ``--profiles`` error profile,
and clustered as ``jigsaw link`` does under each of :data:`VARIANTS`:

* ``shipped``: the shipped child schema (the address column is ignored);
* ``shipped + address``: :func:`with_address`, the address a field of its own;
* ``shipped + address, police unmapped``: the same schema, the police node not mapping an
  address (its records encoded without one), as an optional field would be used.

Figures per row (:func:`benchmarks.recall_loss.measure`): pairwise precision, recall and F1
over the clusters, pair completeness (true pairs that became candidates), the quality on
the duplicates within one agency (``dup_f1``), and ``moved_lost``: of the true pairs with a
house move on either record (``moved_house``: the postcode and the address both changed), the
share the link missed.

Privacy (unless ``--no-attack``), on ``--records`` health-agency records, one per child
(:func:`benchmarks.attack.one_record_per_child` with addresses): the frequency attack of
:mod:`benchmarks.attack` (plain, salt-aware, salt known: the best of the three) on the address
filters, the attacker holding a population of its own drawn with another seed; beside it the
same attack on the postcode and on the address unsalted (what the salt buys). A street is a
frequent value, and so a candidate for a frequency attack. Then graph matching with the
co-occurrence attack (``--overlaps``) on the shipped schema and on the one with the address:
the address adds a filter and a blocking rule, groups the co-occurrence attack reads.

Labels and plaintext are used only to score; only counts and shares are printed.
Run ``python -m benchmarks.address_choice --children 20000 --report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np

from benchmarks import attack, recall_loss
from linkage import synthetic
from linkage.encode import encode_records
from linkage.keys import KeySet
from linkage.schema import Schema, default_child_schema, schema_from_dict

PROFILES = ("typical", "hard")
ADDRESS = synthetic.ADDRESS_COLUMN

#: The address field of :func:`with_address`: free text compared by the Dice similarity of
#: its bigram filters, salted as the postcode is (with the full date of birth; see
#: :func:`with_address`), hardened as every other field, and kept out of the record filter.
ADDRESS_FIELD: dict[str, object] = {
    "name": ADDRESS,
    "kind": "text",
    "q": 2,
    "filter_bits": 256,
    "hashes_per_token": 3,
    "record_hashes_per_token": 0,
    "phonetic": [],
    "levels": [0.95, 0.75, 0.5],
    "salt": "date_of_birth.value",
    "hardening": {"diffusion_t": 3},
}


def with_address(schema: Schema | None = None) -> Schema:
    """The child schema (default: the shipped one) with the address as a field, and a blocking
    rule on its filter.

    Salt: the full date of birth, as the postcode's. The address, like the postcode, says where
    a household lives; siblings share it, and a street is a frequent value. Salted with the
    date, equal address filters are (address, date of birth) groups, nearly one child each, so
    a frequency attack has no street-sized group to align, and its blocking rule (on the
    filter, as every rule of the schema) groups records exactly as equal filters do. Not views
    of date parts (as the full name): a house move changes the address with the postcode, so
    where the date is wrong the address adds nothing the postcode would not, at the cost of
    three more filters. Not in the record filter (``record_hashes_per_token = 0``): an optional
    field that some nodes do not map would make their record filters differ from the others'.
    """
    data = (schema or default_child_schema()).to_dict()
    data["field"].append(dict(ADDRESS_FIELD))
    data["blocking"].append({"name": ADDRESS, "parts": [f"{ADDRESS}.filter"]})
    return schema_from_dict(data)


def without_address(data: synthetic.SyntheticData, agency: str) -> synthetic.SyntheticData:
    """``data`` with ``agency``'s address column left empty: a node that does not map it."""
    held = data.agencies[agency]
    blank: list[str | None] = [None] * len(held)
    columns = {**held.columns, ADDRESS: blank}
    agencies = {**data.agencies, agency: dataclasses.replace(held, columns=columns)}
    return dataclasses.replace(data, agencies=agencies)


#: name -> (schema, how the population is presented to it)
VARIANTS: dict[
    str, tuple[Callable[[], Schema], Callable[[synthetic.SyntheticData], synthetic.SyntheticData]]
] = {
    "shipped": (default_child_schema, lambda data: data),
    "shipped + address": (with_address, lambda data: data),
    "shipped + address, police unmapped": (
        with_address,
        lambda data: without_address(data, "police"),
    ),
}

QUALITY_COLUMNS = (
    "profile", "schema", "records", "true_pairs", "precision", "recall", "f1",
    "pair_completeness", "dup_f1", "moved_lost", "seconds",
)  # fmt: skip


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quality_rows(children: int, seed: int, profiles: Sequence[str]) -> list[dict[str, object]]:
    """One row per (profile, variant): the figures of :data:`QUALITY_COLUMNS`."""
    rows: list[dict[str, object]] = []
    for profile in profiles:
        data = synthetic.generate_population(
            children, seed=seed, agencies=synthetic.PROFILES[profile], addresses=True
        )
        for name, (build, present) in VARIANTS.items():
            _progress(f"{profile}: linking under {name}")
            measured = recall_loss.measure(build(), present(data), name)
            moved = measured["by_error"]["moved_house"]  # type: ignore[index]
            row = {
                "profile": profile,
                **measured,
                "moved_lost": moved["lost"] / moved["pairs"] if moved["pairs"] else 0.0,
            }
            rows.append({column: row[column] for column in QUALITY_COLUMNS})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def attack_rows(records: int, overlaps: Sequence[float], seed: int) -> list[dict[str, object]]:
    """Per field attacked: the frequency attack on its filters (the best of the plain,
    salt-aware and salt-known forms), and per schema the graph attack at each overlap."""
    pool_size = math.ceil(records * (2 - min(overlaps)))
    columns, child_ids = attack.one_record_per_child(pool_size, seed, addresses=True)
    public_columns, _ = attack.one_record_per_child(records, seed + 1000, addresses=True)
    encoded_rows = np.arange(records, dtype=np.int64)
    encoded_columns = attack.take_columns(columns, encoded_rows)
    salted = with_address()
    rows: list[dict[str, object]] = []
    for label, schema, field in (
        ("address, salted with the date of birth", salted, ADDRESS),
        ("address, unsalted", salted.with_salt("", [ADDRESS]), ADDRESS),
        ("postcode (shipped)", salted, "postcode"),
    ):
        encoded = encode_records(schema, KeySet(attack.AGENCIES_SECRET), encoded_columns)
        truth = attack.normalised_values(schema, field, encoded_columns[field])
        public = attack.normalised_values(schema, field, public_columns[field])
        index = encoded.field_names.index(field)
        filters, present = encoded.field_filters[index], encoded.field_present[:, index]
        public_salts = attack.salt_values(schema, field, public_columns)
        forms = {
            "plain": attack.frequency_attack(filters, present, truth, public),
            "salt-aware": attack.frequency_attack(filters, present, truth, public, public_salts),
            "salt known": attack.frequency_attack(
                filters, present, truth, public, public_salts,
                attack.salt_values(schema, field, encoded_columns),
            ),
        }  # fmt: skip
        best = max(forms, key=lambda form: forms[form][0])
        distinct_groups = len({f.tobytes() for f, p in zip(filters, present, strict=True) if p})
        rows.append(
            {
                "attacked": f"frequency: {label}",
                "records": records,
                "distinct_filters": distinct_groups,
                "reidentified": forms[best][0],
                "how": best,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    for name in ("shipped", "shipped + address"):
        schema = VARIANTS[name][0]()
        encoded = encode_records(schema, KeySet(attack.AGENCIES_SECRET), encoded_columns)
        rates = attack.graph_attack_by_overlap(
            encoded,
            columns,
            child_ids,
            overlaps,
            seed,
            attack.attacker_encoder(schema),
            progress=_progress,
            label=f"graph attack on {name}",
        )
        for overlap, (rate, _) in rates.items():
            rows.append(
                {
                    "attacked": f"graph + co-occurrence: {name}",
                    "records": records,
                    "overlap": overlap,
                    "reidentified": rate,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.address_choice")
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--records", type=int, default=10_000, help="records attacked")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[1.0])
    parser.add_argument("--no-attack", action="store_true")
    parser.add_argument("--report", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args(argv)
    linked = quality_rows(args.children, args.seed, args.profiles)
    attacked = [] if args.no_attack else attack_rows(args.records, args.overlaps, args.seed)
    if args.report:
        _report(linked, attacked, argv)
    return 0


def _report(
    linked: list[dict[str, object]],
    attacked: list[dict[str, object]],
    argv: Sequence[str] | None,
) -> None:
    import shlex

    from benchmarks.report import markdown_table, provenance, write_section

    words = list(sys.argv[1:] if argv is None else argv)
    body = (
        "## Address as a child field\n\n"
        + provenance("python -m benchmarks.address_choice " + shlex.join(words))
        + "\nThe seeded synthetic four-agency population drawn with household addresses "
        "(`generate_population(..., addresses=True)`; every other value as without them) in "
        "each error profile, clustered as `jigsaw link` does. `shipped`: the shipped child "
        "schema; `shipped + address`: the address line a text field compared by Dice, salted "
        "with the full date of birth as the postcode is, with a blocking rule on its filter "
        "(`benchmarks/address_choice.py`, `with_address`); `police unmapped`: the same with "
        "the police node mapping no address. Pairwise precision, recall and F1 over the "
        "clusters; `pair_completeness`: true pairs that became candidates; `dup_f1`: F1 on "
        "the pairs within one agency (duplicates); `moved_lost`: of the true pairs with a house "
        "move on either record (postcode and address both changed), the share missed.\n\n"
        + markdown_table(linked, list(QUALITY_COLUMNS))
        + "\n"
    )
    if attacked:
        body += (
            "\nAttacks of `benchmarks/attack` on the health agency's records, one per child "
            "(default profile, with addresses). Frequency: the best of its plain, salt-aware "
            "and salt-known forms on one field's filters, against an attacker population "
            "drawn with another seed; `reidentified`: share of the present encodings whose "
            "group it labelled with its true value. Graph + co-occurrence: graph matching and "
            "the co-occurrence attack (which reads which records share a filter, blocking key "
            "or salt tag) against an attacker holding `overlap` of the encoded children; "
            "`reidentified`: share of the overlap re-identified.\n\n"
            + markdown_table(attacked, list(dict.fromkeys(k for r in attacked for k in r)))
            + "\n"
        )
    write_section("address-choice", body)


if __name__ == "__main__":
    raise SystemExit(main())
