"""Salting: quality on messy data against re-identification, the frontier of the default.

Role: the evidence behind the child schema's salts (RESULTS.md "Salting: the frontier"). Each
candidate salting of the child schema (:data:`VARIANTS`: which fields are published in views
salted with pairs of date parts, the rest salted with the full date of birth) is measured

* for quality: the seeded synthetic four-agency population in each error profile
  (``default``, ``typical``, ``hard``: :data:`linkage.synthetic.PROFILES`), linked and
  clustered as ``jigsaw link`` does, pairwise precision, recall and F1 over the clusters; and
  Splink on the same records in plaintext once per profile (unless ``--no-splink``);
* for privacy: the attacks of :mod:`benchmarks.attack` on ``--records`` encoded records: the
  frequency attack (the best of its three forms, over every view) and graph matching with the
  co-occurrence attack at the overlaps in ``--overlaps``.

Labels and plaintext are used only to score; only counts and shares are printed.
Run ``python -m benchmarks.salting_choice [--report]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable

import numpy as np

from benchmarks import attack, quality
from benchmarks.splink_peer import SplinkUnavailable
from linkage import evaluate, synthetic
from linkage.encode import encode_records
from linkage.keys import KeySet
from linkage.schema import Schema, default_child_schema, load_schema, schema_from_dict

PROFILES = ("default", "typical", "hard")
_DATE_PARTS = ["date_of_birth.year_month", "date_of_birth.year_day", "date_of_birth.day_month"]


def _with_postcode_by_date_parts() -> Schema:
    """The shipped schema with the postcode, too, as a fallback in views of date parts."""
    data = default_child_schema().to_dict()
    postcode = next(f for f in data["field"] if f["name"] == "postcode")
    data["field"].append(
        postcode
        | {"name": "postcode_by_date_parts", "combines": ["postcode"], "salt": _DATE_PARTS}
        | {"record_hashes_per_token": 0}
    )
    data["blocking"].extend(
        {"name": f"postcode_by_date_parts@{v}", "parts": [f"postcode_by_date_parts@{v}.filter"]}
        for v in ("year_month", "year_day", "day_month")
    )
    return schema_from_dict(data)


def _full_name_also_by_sex() -> Schema:
    """The shipped schema with a fourth view of the full name, salted with sex only: nearly
    unsalted, so it compares where the date is missing or wholly wrong."""
    data = default_child_schema().to_dict()
    for field in data["field"]:
        if field["name"] == "full_name":
            field["salt"] = [*field["salt"], "sex.value"]
    data["blocking"].append({"name": "full_name@value", "parts": ["full_name@value.filter"]})
    return schema_from_dict(data)


def _views_of_every_name() -> Schema:
    """The names and postcode themselves in views (no full-date salt, no fallback)."""
    fields = ("given_name", "middle_names", "family_name", "postcode")
    return load_schema("child_date_salted").with_salt(_DATE_PARTS, fields)


#: name -> schema: the candidate saltings
VARIANTS: dict[str, Callable[[], Schema]] = {
    "full date + full name by date parts (shipped)": default_child_schema,
    "full date + full name and postcode by date parts": _with_postcode_by_date_parts,
    "shipped + full name by sex": _full_name_also_by_sex,
    "names and postcode by date parts only": _views_of_every_name,
    "full date only (child_date_salted)": lambda: load_schema("child_date_salted"),
}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quality_rows(children: int, seed: int, *, splink: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for profile in PROFILES:
        chosen = None if profile == "default" else profile
        columns, truth = quality.synthetic_population(children, seed, chosen)
        ti, tj = evaluate.true_pairs_from_entities(truth)
        results = []
        for name, build in VARIANTS.items():
            _progress(f"{profile}: linking under {name}")
            results.append((name, quality.run_jigsaw_dedupe(profile, build(), columns, ti, tj)))
        if splink:
            agencies = synthetic.DEFAULT_AGENCIES if chosen is None else synthetic.PROFILES[profile]
            data = synthetic.generate_population(children, seed=seed, agencies=agencies)
            try:
                peer = quality.run_splink_synthetic(profile, data, seed=seed, progress=_progress)
                results.append(("plaintext Splink", peer))
            except SplinkUnavailable as error:
                _progress(f"{profile}: no Splink row: {error}")
        for name, result in results:
            d = result.as_dict()
            rows.append(
                {
                    "profile": profile,
                    "salting": name,
                    "precision": d["precision"],
                    "recall": d["recall"],
                    "f1": d["f1"],
                    "pair_completeness": d["pair_completeness"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def attack_rows(records: int, overlaps: list[float], seed: int) -> list[dict[str, object]]:
    pool_size = math.ceil(records * (2 - min(overlaps)))
    columns, child_ids = attack.one_record_per_child(pool_size, seed)
    public_columns, _ = attack.one_record_per_child(records, seed + 1000)
    encoded_rows = np.arange(records, dtype=np.int64)
    encoded_columns = attack.take_columns(columns, encoded_rows)
    rows: list[dict[str, object]] = []
    for name, build in VARIANTS.items():
        started = time.perf_counter()
        schema = build()
        encoded = encode_records(schema, KeySet(attack.AGENCIES_SECRET), encoded_columns)
        shares = attack.frequency_shares(schema, encoded, encoded_columns, public_columns)
        row: dict[str, object] = {
            "salting": name,
            "records": records,
            "frequency": max(v for k, v in shares.items() if k.endswith("_records")),
        }
        rates = attack.graph_attack_by_overlap(
            encoded,
            columns,
            child_ids,
            overlaps,
            seed,
            attack.attacker_encoder(schema),
            progress=_progress,
            label=f"attacking {name}",
        )
        row |= {f"graph_{overlap}": rate for overlap, (rate, _) in rates.items()}
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def plot(quality: list[dict[str, object]], privacy: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overlap = max(k for k in privacy[0] if k.startswith("graph_"))
    f1 = {(r["profile"], r["salting"]): float(r["f1"]) for r in quality}  # type: ignore[arg-type]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in privacy:
        name = str(row["salting"])
        x, y = float(row[overlap]), f1[("hard", name)]  # type: ignore[arg-type]
        axis.scatter([x], [y])
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if ("hard", "plaintext Splink") in f1:
        axis.axhline(f1[("hard", "plaintext Splink")], linestyle="--", color="grey")
        axis.annotate("plaintext Splink", (0.0, f1[("hard", "plaintext Splink")]), fontsize=8)
    axis.axvline(0.02, linestyle=":", color="red")
    axis.set_xlabel(f"re-identified by graph matching at overlap {overlap.split('_')[1]}")
    axis.set_ylabel("F1, hard profile")
    axis.set_title("Salting: quality on messy data against re-identification")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--children", type=int, default=5000)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.8, 1.0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument("--no-attack", action="store_true")
    parser.add_argument("--report", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args(argv)
    linked = quality_rows(args.children, args.seed, splink=not args.no_splink)
    attacked = [] if args.no_attack else attack_rows(args.records, args.overlaps, args.seed)
    if args.report:
        from benchmarks.report import RESULTS, markdown_table, provenance, write_section

        words = sys.argv[1:] if argv is None else argv
        body = (
            "## Salting: the frontier\n\n"
            + provenance("python -m benchmarks.salting_choice " + " ".join(words))
            + "\nEach candidate salting of the child schema: which fields are published in "
            "views salted with year and month, year and day, day and month (the rest salted "
            "with the full date of birth). Quality: the seeded synthetic four-agency "
            "population per error profile, linked and clustered as `jigsaw link` does, "
            "pairwise over the clusters; `plaintext Splink`: Splink 4 on the same records "
            "(`benchmarks/splink_peer.py`). Privacy: the attacks of `benchmarks/attack/` "
            "(frequency: the best of its three forms over every view; graph: graph matching "
            "and the co-occurrence attack, share of the overlap re-identified).\n\n"
            + markdown_table(linked, list(linked[0]))
            + "\n"
        )
        if attacked:
            target = RESULTS.parent / "plots" / "salting_frontier.png"
            plot(linked, attacked, str(target))
            body += (
                "\n"
                + markdown_table(attacked, list(attacked[0]))
                + "\n\n![salting frontier](plots/salting_frontier.png)\n"
            )
        write_section("salting-choice", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
