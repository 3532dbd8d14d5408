"""How the unsupervised model holds as the population grows (the EM settings of the pipeline).

Role: the evidence behind ``LinkageOptions.em_classes`` and ``LinkageOptions.fit_min_shared_keys``
(linkage/pipeline/) and ``scoring.fit_latent_classes``. On the seeded synthetic four-agency
population of ``--children`` children, encoded with the shipped child schema (``--plain``: its
hardening off), it builds the candidate pairs and their comparison levels once, then fits the
model under each requested setting and reports, for the pairs at match probability >= 0.5
*before clustering*, pairwise precision and recall against the ground truth, with the share
of true matches in the set EM was fitted on. Labels are used only to score.

Run ``python -m benchmarks.em_scale --children 450000 --classes 2 3 4 --min-shared-keys 1 2``
(prints one JSON object per setting; the 450 k-children population is 1.02 M records and
needs about 3 GB and a few minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence

import numpy as np

from linkage import pipeline
from linkage.encode import concat_batches, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Hardening, default_child_schema
from linkage.synthetic import generate_population


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.em_scale")
    parser.add_argument("--children", type=int, default=90_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--min-shared-keys", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--plain", action="store_true", help="the child schema, unhardened")
    parser.add_argument("--report", action="store_true", help="write the RESULTS.md section")
    args = parser.parse_args(argv)
    rows: list[dict[str, object]] = []

    schema = default_child_schema()
    if args.plain:
        schema = schema.with_hardening(Hardening(), Hardening())
    data = generate_population(args.children, seed=args.seed)
    keys = KeySet(LinkageSecret.for_tests())
    batch = concat_batches(
        [encode_records(schema, keys, agency.columns) for agency in data.agencies.values()]
    )
    truth = np.concatenate([agency.child_id for agency in data.agencies.values()])
    base = pipeline.LinkageOptions()
    pairs = pipeline.candidate_pairs(batch, None, base)
    levels = pipeline.compare_pairs(schema, batch, batch, pairs.left, pairs.right)
    same = truth[pairs.left] == truth[pairs.right]
    for classes in args.classes:
        for min_shared in args.min_shared_keys:
            options = dataclasses.replace(base, em_classes=classes, fit_min_shared_keys=min_shared)
            started = time.perf_counter()
            fit = pipeline.fitting_pairs(schema, batch, batch, pairs.left, pairs.right, options)
            fit_rows, fit_levels = fit.rows, levels[fit.rows]
            model = pipeline.fit_model(
                schema, batch, batch, fit_levels, options=options, dedupe=True,
                blocked_on=fit.blocked_on,
            )  # fmt: skip
            linked = model.match_probability(levels) >= 0.5
            fit_same = same[fit_rows]
            rows.append(
                {
                    "records": len(batch),
                    "hardened": "no" if args.plain else "yes",
                    "em_classes": classes,
                    "fit_min_shared_keys": min_shared,
                    "candidates": len(pairs),
                    "fit_pairs": int(fit_levels.shape[0]),
                    "fit_match_share": float(fit_same.mean()),
                    "pairwise_precision": float(same[linked].mean()) if linked.any() else 0.0,
                    "pairwise_recall": float((same & linked).sum() / max(1, same.sum())),
                    "fit_seconds": time.perf_counter() - started,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    if args.report:
        _report(rows, argv)


def _report(rows: list[dict[str, object]], argv: Sequence[str] | None) -> None:
    from benchmarks.report import write_table_section

    description = (
        "Seeded synthetic four-agency population, shipped child schema; candidates and"
        " comparison levels built once, the model fitted under each setting, pairs at match"
        " probability >= 0.5 scored against the ground truth *before clustering*."
        " `fit_min_shared_keys` 1 = EM on every candidate; 2 = on the candidates that share"
        " two or more blocking keys (the pipeline default, with four classes)."
    )
    write_table_section(
        "em-scale", "Model at scale (EM settings)", "benchmarks.em_scale", argv, description, rows
    )


if __name__ == "__main__":
    main()
