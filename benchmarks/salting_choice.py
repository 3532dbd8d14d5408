"""Salting: views or the full date of birth, on messy data, beside the plaintext ceiling.

Role: the evidence behind the child schema's salts (RESULTS.md "Salting: views or the full
date"). On the seeded synthetic four-agency population in each error profile (``default``,
``typical``, ``hard``: :data:`linkage.synthetic.PROFILES`), it links the agencies as
``jigsaw link`` does under the shipped ``child`` schema (names and postcode in three views
salted with pairs of date parts) and under ``child_date_salted`` (salted with the full date
of birth), and, unless ``--no-splink``, runs Splink on the same records
(:mod:`benchmarks.splink_peer`). Labels are used only to score; only counts are printed.

Run ``python -m benchmarks.salting_choice --children 5000 [--report]``.
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import quality
from benchmarks.splink_peer import SplinkUnavailable
from linkage import evaluate, synthetic
from linkage.schema import load_schema

SCHEMAS = ("child", "child_date_salted")
PROFILES = ("default", "typical", "hard")


def run(children: int, seed: int, *, splink: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for profile in PROFILES:
        chosen = None if profile == "default" else profile
        columns, truth = quality.synthetic_population(children, seed, chosen)
        ti, tj = evaluate.true_pairs_from_entities(truth)
        results = [
            (name, quality.run_jigsaw_dedupe(profile, load_schema(name), columns, ti, tj))
            for name in SCHEMAS
        ]
        if splink:
            agencies = synthetic.DEFAULT_AGENCIES if chosen is None else synthetic.PROFILES[profile]
            data = synthetic.generate_population(children, seed=seed, agencies=agencies)
            try:
                peer = quality.run_splink_synthetic(profile, data, seed=seed, progress=_progress)
                results.append(("plaintext-splink", peer))
            except SplinkUnavailable as error:
                _progress(f"{profile}: no Splink row: {error}")
        for name, result in results:
            d = result.as_dict()
            rows.append(
                {
                    "profile": profile,
                    "linker": name,
                    "records": d.get("records", ""),
                    "true_pairs": d.get("true_pairs", ""),
                    "precision": d["precision"],
                    "recall": d["recall"],
                    "f1": d["f1"],
                    "pair_completeness": d["pair_completeness"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--children", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument("--report", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args(argv)
    rows = run(args.children, args.seed, splink=not args.no_splink)
    if args.report:
        from benchmarks.report import write_table_section

        write_table_section(
            "salting-choice",
            "Salting: views or the full date",
            "benchmarks.salting_choice",
            argv,
            "Seeded synthetic four-agency population per error profile, linked and clustered as "
            "`jigsaw link` does. `child`: the shipped schema, names and postcode in three views "
            "salted with year and month, year and day, day and month; the date of birth compared "
            "by those salt tags too. `child_date_salted`: names and postcode salted with the "
            "full date of birth. `plaintext-splink`: Splink 4 on the same records in plaintext "
            "(`benchmarks/splink_peer.py`). Pairwise precision and recall over the clusters.",
            rows,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
