"""The benchmark's driver: quality per setting, the run, the plot, the CLI and the report."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from benchmarks.attack.combined import graph_attack_by_overlap
from benchmarks.attack.frequency import frequency_shares
from benchmarks.attack.settings import (
    AGENCIES_SECRET,
    ATTACKER_SECRET,
    NAME_FIELDS,
    OVERLAPS,
    SALT,
    SETTINGS,
    Setting,
    encode_setting,
    one_record_per_child,
    publish_setting,
    shipped_febrl_schema,
    take_columns,
)
from linkage import evaluate, pipeline
from linkage.schema import (
    default_child_schema,
    febrl_schema,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- quality


def quality_synthetic(setting: Setting, n_children: int, seed: int) -> dict[str, float]:
    """Pairwise precision / recall / F1 of clustering the four agencies under ``setting``."""
    from benchmarks.quality import synthetic_population

    columns, truth = synthetic_population(n_children, seed)
    published = []
    schema = default_child_schema()
    for cols in columns:
        schema, forms = publish_setting(default_child_schema(), setting, cols, AGENCIES_SECRET)
        published.append(forms)
    result = pipeline.cluster_forms(schema, published)
    ti, tj = evaluate.true_pairs_from_entities(truth)
    from linkage.solve import pairs_from_labels

    pi, pj = pairs_from_labels(result.labels)
    q = evaluate.pairwise_quality(pi, pj, ti, tj, ordered=False)
    return {"precision": q.precision, "recall": q.recall, "f1": q.f1}


def quality_febrl4_half(setting: Setting, seed: int) -> dict[str, float]:
    """Precision / recall / F1 of linking FEBRL4-half under ``setting`` (``salt`` salts the
    FEBRL name fields with the same date-of-birth transform as the child schema's; an
    ``as_shipped`` setting encodes under :func:`shipped_febrl_schema`)."""
    from benchmarks.quality import _columns, _febrl4

    a, b, ti, tj = _febrl4(True, seed)
    base = shipped_febrl_schema() if setting.as_shipped else febrl_schema()
    schema, left = encode_setting(base, setting, _columns(a), AGENCIES_SECRET)
    _, right = encode_setting(base, setting, _columns(b), AGENCIES_SECRET)
    result = pipeline.link_two(schema, left, right, one_to_one=True)
    q = evaluate.pairwise_quality(result.left, result.right, ti, tj, ordered=True)
    return {"precision": q.precision, "recall": q.recall, "f1": q.f1}


# --------------------------------------------------------------------------- driver


def run_attack(
    settings: Sequence[Setting] = SETTINGS,
    *,
    n_records: int = 10_000,
    overlaps: Sequence[float] = OVERLAPS,
    seed: int = 7,
    quality: bool = True,
    graph: bool = True,
    quality_children: int = 5_000,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run every attack (and the quality measurement) per setting; yields one row each."""
    base = default_child_schema()
    pool_size = math.ceil(n_records * (2 - min(overlaps))) if overlaps else n_records
    columns, child_ids = one_record_per_child(pool_size, seed)
    public_columns, _ = one_record_per_child(n_records, seed + 1000)
    encoded_rows = np.arange(n_records, dtype=np.int64)
    for setting in settings:
        started = time.perf_counter()
        encoded_columns = take_columns(columns, encoded_rows)
        schema, encoded = encode_setting(base, setting, encoded_columns, AGENCIES_SECRET)
        row: dict[str, Any] = {"setting": setting.name, "records": n_records}
        if setting.as_shipped:
            # salt sources and record hardening as the schema ships them
            row["salt"] = ",".join(schema.salt_sources)
            row["hardening"] = schema.hardening.to_dict() | {"salt": bool(schema.salt_sources)}
            # the attacks read each record's encoding; a node publishes a record lacking sex
            # as forms (linkage.forms) instead: how many of the attacked records that concerns
            _, published = publish_setting(base, setting, encoded_columns, AGENCIES_SECRET)
            row["records_published_as_forms"] = int((published.form == 0).sum())
        else:
            row["salt"] = setting.salt_source if setting.salt else ""
            row["hardening"] = dataclasses.asdict(setting.hardening) | {"salt": setting.salt}
        row |= frequency_shares(schema, encoded, encoded_columns, public_columns)
        rates = (
            graph_attack_by_overlap(
                encoded,
                columns,
                child_ids,
                overlaps,
                seed,
                functools.partial(encode_setting, base, setting, secret=ATTACKER_SECRET),
            )
            if graph
            else {}
        )
        for overlap, (rate, precision) in rates.items():
            row[f"graph_{overlap}"] = rate
            row[f"graph_{overlap}_precision"] = precision
        if graph:
            row["graph_max"] = max((row[f"graph_{o}"] for o in overlaps), default=0.0)
        row["frequency_max"] = max(
            row[f"frequency_{f}{kind}_records"]
            for f in NAME_FIELDS
            for kind in ("", "_salted", "_salt_known")
        )
        if quality:
            for key, value in quality_synthetic(setting, quality_children, seed).items():
                row[f"synthetic_{key}"] = value
            for key, value in quality_febrl4_half(setting, seed).items():
                row[f"febrl4_half_{key}"] = value
        row["seconds"] = time.perf_counter() - started
        if emit:
            emit(row)
        yield row


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Two panels: max re-identification rate vs synthetic F1, and graph rate vs overlap.
    The ``shipped`` row (the schema as shipped) is drawn as a star, labelled as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for row in rows:
        reid = max(row.get("graph_max", 0.0), row.get("frequency_max", 0.0))
        f1 = row.get("synthetic_f1", float("nan"))
        shipped = row["setting"] == "shipped"
        label = "shipped (default schema)" if shipped else row["setting"]
        left.scatter([f1], [reid], marker="*" if shipped else "o", s=120 if shipped else None)
        left.annotate(label, (f1, reid), fontsize=7, fontweight="bold" if shipped else None)
        overlaps = sorted(
            float(k.split("_")[1])
            for k in row
            if k.startswith("graph_") and k.count("_") == 1 and k != "graph_max"
        )
        right.plot(overlaps, [row[f"graph_{o}"] for o in overlaps],
                   marker="*" if shipped else "o", label=label,
                   linewidth=2.5 if shipped else None)  # fmt: skip
    left.set_xlabel("F1, synthetic four-agency clustering")
    left.set_ylabel("re-identification (max of graph and frequency attacks)")
    left.set_title("Privacy / quality trade-off per setting")
    right.set_xlabel("overlap of the attacker's plaintext with the encoded data")
    right.set_ylabel("graph-matching re-identification (correct / overlap)")
    right.set_title("Graph matching attack")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attack",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--large", action="store_true", help="50 000 records (slow)")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--settings", default="", help="comma-separated setting names")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--quality-only", action="store_true", help="only the F1 columns")
    parser.add_argument("--quality-children", type=int, default=5_000)
    parser.add_argument(
        "--no-graph", action="store_true", help="skip the graph attack (same population drawn)"
    )
    parser.add_argument("--plot", default="", help="write the trade-off plot to this PNG")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--salt",
        default=SALT,
        help=f"salt of the name fields in the salting settings (default {SALT}; e.g. "
        "date_of_birth.value for the full date of birth)",
    )
    args = parser.parse_args(argv)
    wanted = {s for s in args.settings.split(",") if s}
    chosen = [
        dataclasses.replace(s, salt_source=args.salt)
        for s in SETTINGS
        if not wanted or s.name in wanted
    ]
    n_records = args.records or (50_000 if args.large else 10_000)
    if args.quality_only:
        for setting in chosen:
            row: dict[str, Any] = {"setting": setting.name}
            for key, value in quality_synthetic(setting, args.quality_children, args.seed).items():
                row[f"synthetic_{key}"] = value
            for key, value in quality_febrl4_half(setting, args.seed).items():
                row[f"febrl4_half_{key}"] = value
            print(json.dumps(row), flush=True)
        return
    rows = list(
        run_attack(
            chosen,
            n_records=n_records,
            seed=args.seed,
            quality=not args.no_quality,
            graph=not args.no_graph,
            quality_children=args.quality_children,
            emit=lambda r: print(json.dumps(r), flush=True),
        )
    )
    if args.plot:
        plot_tradeoff(rows, args.plot)


def run_cli(args: Any, *, emit: Callable[[dict[str, Any]], None]) -> int:
    """``jigsaw bench attack``: every setting at 10 k records (50 k with ``--large``), then
    insider probing against a real matcher (:mod:`benchmarks.insider`)."""
    from pathlib import Path

    from benchmarks.insider import run_insider

    n_records = 50_000 if args.large else 10_000
    rows = list(run_attack(SETTINGS, n_records=n_records, seed=args.seed, emit=emit))
    insider = run_insider(seed=args.seed, emit=emit)
    if args.report:
        write_attack_report(
            rows, Path(args.report), "jigsaw bench attack --json --report", insider=insider
        )
    return 0


#: Columns of the trade-off table in RESULTS.md (every figure is also in the JSON lines).
REPORT_COLUMNS = (
    ("setting", "setting"),
    ("frequency_max", "frequency (records)"),
    ("graph_0.2", "graph 0.2"),
    ("graph_0.5", "graph 0.5"),
    ("graph_0.5_precision", "graph 0.5 precision"),
    ("graph_0.8", "graph 0.8"),
    ("graph_1.0", "graph 1.0"),
    ("synthetic_precision", "synthetic P"),
    ("synthetic_recall", "synthetic R"),
    ("synthetic_f1", "synthetic F1"),
    ("febrl4_half_f1", "FEBRL4-half F1"),
    ("seconds", "s"),
)


def write_attack_report(
    rows: Sequence[dict[str, Any]],
    path: Any,
    command: str,
    *,
    insider: dict[str, Any] | None = None,
) -> None:
    """The attack section of RESULTS.md: provenance, the trade-off table, the plot, and the
    insider-probing figures when measured."""
    from pathlib import Path

    from benchmarks.insider import insider_report
    from benchmarks.report import PLOTS_DIR, markdown_table, provenance, write_section

    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    plot = PLOTS_DIR / "attack_tradeoff.png"
    plot_tradeoff(rows, str(plot))
    table_rows = [{label: row.get(key, "") for key, label in REPORT_COLUMNS} for row in rows]
    records = rows[0]["records"] if rows else 0
    as_forms = [
        row["records_published_as_forms"] for row in rows if "records_published_as_forms" in row
    ]
    forms_note = (
        " The attacks read each record's encoding; a node publishes a record that lacks sex"
        " (its date of birth salted with sex) once per sex value instead (`linkage.forms`):"
        f" {as_forms[0]:,} of the {records:,} attacked records under `shipped`. The quality"
        " columns link what nodes publish, forms included."
        if as_forms
        else ""
    )
    body = (
        "## Re-identification attacks (privacy)\n\n"
        + provenance(command)
        + f"\nSeeded synthetic population, {records:,} encoded records (one per child), encoded"
        " with the production encoder under each setting. `shipped` is the child schema"
        " exactly as shipped (names and postcode salted with the full date of birth, the date"
        " of birth with sex, keyed diffusion t = 3 on every filter, blocking on equal"
        " filters; for FEBRL4-half its analogue, names and postcode salted with the date of"
        " birth). Every other setting is that schema with its salts removed and its hardening"
        " replaced (record and every field filter hardened alike), its blocking rules kept;"
        " those named `salt` salt the name fields with the full date of birth and publish"
        " salt tags. Frequency: share of given- or family-name encodings that rank"
        " alignment re-identifies (the largest of value-only ranking, salt-aware ranking of"
        " (value, salt) combinations, and ranking within each salt value by an attacker told"
        " every encoding's salt). Graph: share of the overlap re-identified when"
        " the attacker's own population overlaps the encoded one at 0.2 / 0.5 / 0.8 / 1.0"
        " (structural graph matching, then pattern-mining decoding seeded by it). Quality:"
        " batch link of the four-agency synthetic set (5,000 children) and FEBRL4-half under"
        " the same setting."
        + forms_note
        + "\n\n"
        + markdown_table(table_rows, [label for _, label in REPORT_COLUMNS])
        + f"\n\n![trade-off]({Path(plot).relative_to(Path(path).resolve().parent)})\n"
        + (f"\n{insider_report(insider)}" if insider else "")
    )
    write_section("attack", body, path=Path(path))
