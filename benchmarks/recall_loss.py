"""Where recall is lost: the true pairs a batch link leaves apart, by what their records differ in.

Role: the evidence behind the recall cost of the shipped schema's salts (RESULTS.md "Default
hardening"). The child schema salts the names and the postcode with the date of birth and the
date of birth with sex, and a salted field is compared only where its salt agrees; so two
records of one child whose date of birth, or whose sex, is missing on one side or differs keep
only the unsalted fields (sex, NHS number) as evidence. On the seeded synthetic four-agency
population of ``--children`` children, encoded with the shipped schema (``--plain``: its salts
and hardening off, for comparison), it clusters the agencies as ``jigsaw link`` does and sorts
every true pair the clustering left apart into the first category that fits, in this order:
the date of birth missing on a side, the dates differ, sex missing on a side, sex differs,
neither (both agree). Shares are of all true pairs. Labels and plaintext are used only to
score and categorise; only counts are printed.

By error: the generator labels every record with the errors it carries
(``linkage.synthetic.ERROR_CATEGORIES``). For each category, ``by_error[category]`` gives
``pairs``, the share of all true pairs with that error on either record, ``lost``, the share
of all true pairs that are missed and carry it (a pair with several errors counts under each),
and ``unseen``, the share that carry it and never became a candidate (lost at blocking, not at
scoring); ``lost / pairs`` is the share of such pairs that the linkage misses.

Also per schema: ``pair_completeness`` (true pairs that became candidates) and the quality on
the duplicates within one agency alone (``dup_precision``, ``dup_recall``, ``dup_f1``: the true
and predicted pairs whose two records come from one agency).

``--profile`` picks the population's error profile: ``default`` (``DEFAULT_AGENCIES``) or one of
``linkage.synthetic.PROFILES`` (``typical``, ``hard``).

Run ``python -m benchmarks.recall_loss --children 50000 --profile hard`` (prints one JSON object
per schema).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from linkage import evaluate, pipeline
from linkage.encode.encoder import _normalise_value
from linkage.forms import encode_forms
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Hardening, Schema, default_child_schema
from linkage.solve import pairs_from_labels
from linkage.synthetic import (
    DEFAULT_AGENCIES,
    ERROR_CATEGORIES,
    PROFILES,
    AgencyProfile,
    SyntheticData,
    generate_population,
)

#: The categories of a lost true pair, in the order they are tested.
CATEGORIES = ("dob_missing", "dob_differs", "sex_missing", "sex_differs", "dob_and_sex_agree")

#: ``--profile`` name -> the agencies' profiles.
POPULATION_PROFILES: dict[str, tuple[AgencyProfile, ...]] = {
    "default": DEFAULT_AGENCIES,
    **PROFILES,
}


def _canonical(schema: Schema, data: SyntheticData, field: str) -> list[str | None]:
    """The field's normalised values over the agencies in order (None: missing or invalid)."""
    spec = schema.field(field)
    return [
        _normalise_value(spec, value, schema)[0]
        for agency in data.agencies.values()
        for value in agency.columns[field]
    ]


def categorise(
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    dob: Sequence[str | None],
    sex: Sequence[str | None],
) -> dict[str, int]:
    """How many of the pairs (``left[k]``, ``right[k]``) fall in each of :data:`CATEGORIES`."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if dob[i] is None or dob[j] is None:
            counts["dob_missing"] += 1
        elif dob[i] != dob[j]:
            counts["dob_differs"] += 1
        elif sex[i] is None or sex[j] is None:
            counts["sex_missing"] += 1
        elif sex[i] != sex[j]:
            counts["sex_differs"] += 1
        else:
            counts["dob_and_sex_agree"] += 1
    return counts


def by_error(
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    lost: NDArray[np.bool_],
    unseen: NDArray[np.bool_],
    errors: dict[str, NDArray[np.bool_]],
) -> dict[str, dict[str, float]]:
    """Per error category: the share of the true pairs (``left[k]``, ``right[k]``) that carry it
    on either record (``pairs``), and the shares that carry it and are ``lost`` (``lost``) or
    ``unseen`` by blocking (``unseen``)."""
    total = max(1, left.shape[0])
    out: dict[str, dict[str, float]] = {}
    for category, flags in errors.items():
        carries = flags[left] | flags[right]
        out[category] = {
            "pairs": int(carries.sum()) / total,
            "lost": int((carries & lost).sum()) / total,
            "unseen": int((carries & unseen).sum()) / total,
        }
    return out


def _seen(
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    candidate_left: NDArray[np.int64],
    candidate_right: NDArray[np.int64],
    n: int,
) -> NDArray[np.bool_]:
    """Which unordered pairs (``left[k]``, ``right[k]``) are among the candidate pairs."""
    low = np.minimum(candidate_left, candidate_right)
    high = np.maximum(candidate_left, candidate_right)
    keys = np.unique(evaluate.pair_keys(low, high, n))
    wanted = evaluate.pair_keys(np.minimum(left, right), np.maximum(left, right), n)
    return np.isin(wanted, keys, assume_unique=False)


def measure(schema: Schema, data: SyntheticData, label: str) -> dict[str, object]:
    """Cluster the agencies under ``schema`` and categorise the true pairs left apart."""
    started = time.perf_counter()
    keys = KeySet(LinkageSecret.for_tests())
    published = [encode_forms(schema, keys, agency.columns) for agency in data.agencies.values()]
    truth = np.concatenate([agency.child_id for agency in data.agencies.values()])
    result = pipeline.cluster_forms(schema, published)
    ti, tj = evaluate.true_pairs_from_entities(truth)
    pi, pj = pairs_from_labels(result.labels)
    quality = evaluate.pairwise_quality(pi, pj, ti, tj, ordered=False)
    lost = result.labels[ti] != result.labels[tj]
    n = int(truth.shape[0])
    seen = _seen(ti, tj, result.scored.left, result.scored.right, max(1, n))
    same_true = result.source[ti] == result.source[tj]
    same_predicted = result.source[pi] == result.source[pj]
    duplicates = evaluate.pairwise_quality(
        pi[same_predicted], pj[same_predicted], ti[same_true], tj[same_true], ordered=False
    )
    counts = categorise(
        ti[lost],
        tj[lost],
        _canonical(schema, data, "date_of_birth"),
        _canonical(schema, data, "sex"),
    )
    total = max(1, ti.shape[0])
    row: dict[str, object] = {
        "schema": label,
        "records": int(truth.shape[0]),
        "true_pairs": int(ti.shape[0]),
        "precision": quality.precision,
        "recall": quality.recall,
        "f1": quality.f1,
        "lost": int(lost.sum()),
        "pair_completeness": float(seen.mean()) if seen.size else 1.0,
        "dup_precision": duplicates.precision,
        "dup_recall": duplicates.recall,
        "dup_f1": duplicates.f1,
    }
    row.update({f"lost_{name}": counts[name] / total for name in CATEGORIES})
    errors = data.all_records().errors
    row["by_error"] = by_error(
        ti, tj, lost, ~seen, {category: errors[category] for category in ERROR_CATEGORIES}
    )
    row["seconds"] = time.perf_counter() - started
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recall_loss")
    parser.add_argument("--children", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--profile",
        choices=sorted(POPULATION_PROFILES),
        default="default",
        help="the population's error profile (linkage.synthetic.PROFILES, or the default)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="also the child schema without salts or hardening"
    )
    parser.add_argument("--report", action="store_true", help="write the RESULTS.md section")
    args = parser.parse_args(argv)
    data = generate_population(
        args.children, seed=args.seed, agencies=POPULATION_PROFILES[args.profile]
    )
    schemas = [("shipped", default_child_schema())]
    if args.plain:
        plain = default_child_schema().with_salt("").with_hardening(Hardening(), Hardening())
        schemas.append(("plain", plain))
    rows = []
    for label, schema in schemas:
        rows.append({"profile": args.profile, **measure(schema, data, label)})
        print(json.dumps(rows[-1]), flush=True)
    if args.report:
        _report(rows, argv)


def _report(rows: list[dict[str, object]], argv: Sequence[str] | None) -> None:
    import sys

    from benchmarks.report import markdown_table, provenance, write_section

    profile, records = str(rows[0]["profile"]), int(str(rows[0]["records"]))
    description = (
        "Seeded synthetic four-agency population in the named error profile, clustered as"
        " `jigsaw link` does. First table: every true pair the clustering left apart is"
        " counted in the first category that fits: the date of birth missing on a side, the"
        " dates differ, sex missing on a side, sex differs, or both agree; each `lost_` figure"
        " is a share of all true pairs. Second table, by the errors the generator put in"
        " (`linkage.synthetic.ERROR_CATEGORIES`): `pairs`, the share of all true pairs with"
        " that error on either record; `lost`, the share of all true pairs with it that the"
        " link missed; `unseen`, the share with it that never became a candidate (lost at"
        " blocking). `pair_completeness`: true pairs that became candidates; `dup_`: precision,"
        " recall and F1 on the pairs within one agency alone (duplicates). `plain`: the shipped"
        " schema with its salts and hardening off."
    )
    words = list(sys.argv[1:] if argv is None else argv)
    table = [{k: v for k, v in row.items() if k != "by_error"} for row in rows]
    by_error: list[dict[str, object]] = []
    for row in rows:
        found = row.get("by_error")
        if not isinstance(found, dict):
            continue
        for category, shares in sorted(found.items(), key=lambda kv: -kv[1]["lost"]):
            by_error.append(
                {
                    "schema": row["schema"],
                    "error": category,
                    "pairs": shares["pairs"],
                    "lost": shares["lost"],
                    "unseen": shares["unseen"],
                }
            )
    body = (
        f"## Where recall is lost ({profile}, {records:,} records)\n\n"
        + provenance("python -m benchmarks.recall_loss " + " ".join(words))
        + f"\n{description}\n\n"
        + markdown_table(table, list(table[0]))
        + "\n"
        + (("\n" + markdown_table(by_error, list(by_error[0])) + "\n") if by_error else "")
    )
    # one section per profile and scale: the hard profile at the lookup scale, the default
    # one at a million records (the federation's target) are both kept
    write_section(f"recall-loss-{profile}-{records // 1000}k", body)


if __name__ == "__main__":
    main()
