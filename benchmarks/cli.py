"""``jigsaw bench``: the benchmark commands and how their figures reach RESULTS.md.

``jigsaw bench quality|speed|attack|federation [--json] [--report benchmarks/RESULTS.md]`` runs one
benchmark, prints its figures (one JSON object per line with ``--json``), and with
``--report`` rewrites that benchmark's section of the results file and its plot under
``benchmarks/plots/``. Progress goes to standard error so standard output stays parseable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.report import RESULTS, markdown_table, provenance, write_section

PLOTS = Path(__file__).resolve().parent / "plots"


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run a benchmark").add_subparsers(
        dest="bench_command", required=True
    )
    q = bench.add_parser("quality", help="linkage quality on FEBRL and synthetic data")
    q.add_argument(
        "--dataset",
        action="append",
        choices=[
            "febrl4",
            "febrl4-half",
            "febrl3",
            "synthetic",
            "synthetic-typical",
            "synthetic-hard",
        ],
    )
    q.add_argument("--no-baseline", action="store_true", help="skip the plaintext baseline")
    q.add_argument(
        "--no-splink",
        action="store_true",
        help="skip Splink, the plaintext ceiling (its own virtualenv, created on first use)",
    )
    q.add_argument("--synthetic-children", type=int, default=5000)
    s = bench.add_parser("speed", help="Dice and encoding throughput, with peers")
    s.add_argument("--queries", type=int, default=2000)
    s.add_argument("--candidates", type=int, default=100_000)
    s.add_argument("--encode-records", type=int, default=200_000)
    s.add_argument("--no-peers", action="store_true", help="skip anonlink and clkhash")
    a = bench.add_parser("attack", help="re-identification attacks against the encodings")
    a.add_argument("--large", action="store_true", help="also the 50 k population (slow)")
    f = bench.add_parser(
        "federation",
        help="matcher and nodes as processes: publish, memory, lookup latency, batch link",
    )
    f.add_argument(
        "--records",
        type=int,
        action="append",
        help="about this many records (repeat for several sizes; default 20000)",
    )
    f.add_argument("--lookups", type=int, default=2000, help="at most this many lookups per run")
    f.add_argument(
        "--lookup-seconds",
        type=float,
        default=30.0,
        help="time budget per lookup run (concurrency 1 and 32)",
    )
    f.add_argument("--no-link", action="store_true", help="skip the batch link")
    f.add_argument(
        "--link-max-records",
        type=int,
        default=2_000_000,
        help="skip the batch link above this size (the library's link at 1.02 M records "
        "peaked at 5.6 GB)",
    )
    f.add_argument(
        "--library",
        action="store_true",
        help="also link the same population in-process (benchmarks.quality)",
    )
    f.add_argument("--workdir", default=None, help="keep the federation's files here")
    for p in (q, s, a, f):
        p.add_argument("--json", action="store_true", help="one JSON object per line")
        p.add_argument(
            "--report",
            nargs="?",
            const=str(RESULTS),
            default=None,
            help="write the figures into this results file",
        )
        p.add_argument("--seed", type=int, default=7)
        p.set_defaults(func=run_bench)


def _emit(args: argparse.Namespace, row: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(row), flush=True)
    else:
        print(", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) and abs(v) < 1000 else str(v)


def _command(args: argparse.Namespace) -> str:
    return (
        "jigsaw " + " ".join(sys.argv[1:])
        if sys.argv[1:2] == ["bench"]
        else (f"jigsaw bench {args.bench_command} --json --report")
    )


def run_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "quality":
        return _quality(args)
    if args.bench_command == "speed":
        return _speed(args)
    if args.bench_command == "federation":
        return _federation(args)
    return _attack(args)


# ------------------------------------------------------------------------------ quality


def _quality(args: argparse.Namespace) -> int:
    from benchmarks import quality

    datasets = tuple(args.dataset) if args.dataset else quality.DATASETS
    results = []
    for r in quality.run(
        datasets,
        seed=args.seed,
        baseline=not args.no_baseline,
        synthetic_children=args.synthetic_children,
        splink=not args.no_splink,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    ):
        _emit(args, r.as_dict())
        results.append(r)
    if args.report:
        plot = _plot_quality(results)
        rows = [r.as_dict() for r in results]
        body = (
            "## Linkage quality\n\n"
            + provenance(_command(args))
            + "\n"
            + markdown_table(
                rows,
                [
                    "dataset",
                    "method",
                    "precision",
                    "recall",
                    "f1",
                    "pair_completeness",
                    "reduction_ratio",
                    "candidate_pairs",
                    "threshold",
                    "em",
                    "seconds",
                ],
            )
            + "\n\nJigsaw links keyed Bloom-filter encodings (published test secret) with the "
            "model's own threshold (match probability >= 0.5); labels are used only to score "
            "the output; `em` says whether its EM converged or stopped at its iteration cap. "
            "`synthetic` is the default error profile, `synthetic-typical` and "
            "`synthetic-hard` the generator's other two (linkage.synthetic.PROFILES). "
            "`plaintext-recordlinkage-ecm` links the same plaintext with the "
            "recordlinkage package (blocking on four keys, binary comparisons, ECM). "
            "`plaintext-splink-*` links it with Splink, unsupervised (u by random sampling, m "
            "by EM on two blocking rules, prior from deterministic rules), match probability "
            ">= 0.5, configured as its documentation recommends for person data "
            "(benchmarks/splink_runner.py).\n\n"
            f"![match probabilities of candidate pairs]({plot.relative_to(RESULTS.parent)})\n"
        )
        write_section("quality", body, path=Path(args.report))
    return 0


def _plot_quality(results: list[Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mine = [r for r in results if r.scores is not None]
    PLOTS.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(
        1, max(1, len(mine)), figsize=(4.2 * max(1, len(mine)), 3.4), squeeze=False
    )
    bins = np.linspace(0, 1, 41)
    for ax, r in zip(axes[0], mine, strict=False):
        prob, truth = r.scores
        ax.hist(prob[truth], bins=bins, alpha=0.7, label="true matches", color="tab:green")
        ax.hist(prob[~truth], bins=bins, alpha=0.7, label="non-matches", color="tab:red")
        ax.axvline(0.5, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_title(f"{r.dataset}: F1 {r.f1:.4f}")
        ax.set_xlabel("match probability (candidate pairs)")
    axes[0][0].set_ylabel("pairs (log scale)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = PLOTS / "quality_scores.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ speed


def _speed(args: argparse.Namespace) -> int:
    from benchmarks import encode_speed, speed

    t0 = time.perf_counter()
    row: dict[str, Any] = {}
    print("measuring Dice kernel...", file=sys.stderr, flush=True)
    row.update(speed.bench_dice(args.queries, args.candidates, seed=args.seed))
    print("measuring encoder...", file=sys.stderr, flush=True)
    row.update(encode_speed.bench_encode(args.encode_records, seed=args.seed))
    if not args.no_peers:
        print("measuring anonlink (own virtualenv)...", file=sys.stderr, flush=True)
        peer = speed.bench_anonlink_dice(args.queries, args.candidates, seed=args.seed)
        row.update(
            {f"anonlink_{k}" if not k.startswith("anonlink") else k: v for k, v in peer.items()}
        )
        if "anonlink_dice_pairs_per_s_1core" in row:
            row["ratio_to_anonlink_1core"] = (
                row["dice_pairs_per_s_1core"] / row["anonlink_dice_pairs_per_s_1core"]
            )
        print("measuring clkhash (own virtualenv)...", file=sys.stderr, flush=True)
        enc_peer = encode_speed.bench_clkhash(min(args.encode_records, 20_000), seed=args.seed)
        row.update(enc_peer)
        if "clkhash_records_per_s" in row:
            row["ratio_to_clkhash"] = (
                row["encode_records_per_s_1core"] / row["clkhash_records_per_s"]
            )
    row["seconds"] = time.perf_counter() - t0
    _emit(args, row)
    if args.report:
        keys = [k for k in row if not isinstance(row[k], dict)]
        body = (
            "## Speed\n\n"
            + provenance(_command(args))
            + "\n"
            + markdown_table([{"figure": k, "value": row[k]} for k in keys], ["figure", "value"])
            + "\n"
        )
        write_section("speed", body, path=Path(args.report))
    return 0


# ------------------------------------------------------------------------------ attack


def _attack(args: argparse.Namespace) -> int:
    from benchmarks import attack

    return attack.run_cli(args, emit=lambda row: _emit(args, row))


# ------------------------------------------------------------------------------ federation

FEDERATION_COLUMNS = [
    "records",
    "ingest_records_per_s",
    "publish_records_per_s",
    "matcher_publish_records_per_cpu_s",
    "matcher_bytes_per_record",
    "first_lookup_seconds",
    "lookup_c1_p50_ms",
    "lookup_c1_p99_ms",
    "lookup_c1_per_s",
    "lookup_c32_p50_ms",
    "lookup_c32_p99_ms",
    "lookup_c32_per_s",
    "lookup_r300_p50_ms",
    "lookup_r300_p99_ms",
    "lookup_r300_per_s",
    "lookup_c1_hit_rate",
    "lookup_c1_top1",
    "lookup_c1_top5",
    "lookup_c32_matcher_cpu_ms_per_lookup",
    "lookup_c32_node_cpu_ms_per_lookup",
    "lookup_c32_client_cpu_ms_per_lookup",
    "lookup_r300_matcher_cpu_ms_per_lookup",
    "lookup_r300_node_cpu_ms_per_lookup",
    "lookup_r300_harness_gc_max_ms",
    "link_seconds",
    "link_matcher_peak_rss_mb",
    "link_largest_cluster",
    "link_precision",
    "link_recall",
    "link_f1",
    "library_f1",
]


def _federation(args: argparse.Namespace) -> int:
    from benchmarks import federation

    runs = []
    for records in args.records or [20_000]:
        figures = federation.run_federation(
            records,
            seed=args.seed,
            emit=lambda row: _emit(args, row),
            lookups=args.lookups,
            lookup_seconds=args.lookup_seconds,
            link=not args.no_link and records <= args.link_max_records,
            library=args.library and records <= args.link_max_records,
            workdir=Path(args.workdir) / str(records) if args.workdir else None,
        )
        public = {k: v for k, v in figures.items() if not k.startswith("_")}
        _emit(args, {"stage": "summary", **public})
        runs.append(figures)
    if args.report:
        plot = _plot_federation(runs[-1])
        sizes = [f"{r['records']:,} records" for r in runs]
        rows = [
            {"figure": k, **{size: r.get(k, "") for size, r in zip(sizes, runs, strict=True)}}
            for k in FEDERATION_COLUMNS
            if any(k in r for r in runs)
        ]
        body = (
            "## Federation\n\n"
            + provenance(_command(args))
            + "\n"
            + markdown_table(rows, ["figure", *sizes])
            + "\n\nA real matcher process and four agency node processes on loopback with "
            "mutual TLS, on the seeded synthetic population. Publish: four concurrent "
            "`jigsaw publish` processes, wall time (records/s) and records per CPU second of "
            "the matcher. Memory: matcher VmRSS after minus before publishing, per indexed "
            "record. Lookups: a staff member's `Lookup` on the children's social care node "
            "(rate limits raised), queries typed by another agency, at 1 and 32 concurrent "
            "callers in a closed loop, and at an offered load of 300 lookups/s from 32 callers "
            "(`r300`: lookup i due at i/300 s, latency counted from when it was due) (CPU per "
            "lookup of the matcher, the node and the benchmark's own client threads; the "
            "benchmark's objects are frozen out of its garbage collector while its callers run, "
            "and `harness_gc_max_ms` is its longest collection meanwhile); hit rate "
            "= share of lookups whose candidates include another record of the same child; "
            "`top1` / `top5`: per lookup and agency holding another record of the child, the "
            "child's record is that agency's first candidate / among its first five. "
            "Link: `Link` RPC until the result id (skipped above "
            f"{args.link_max_records:,} records), clusters scored against the ground truth. "
            "Targets at 1 M records: publish >= 20 k/s, <= 400 B/record, p99 <= 50 ms and "
            ">= 300 lookups/s, link <= 10 min.\n\n"
            f"![lookup latency]({plot.relative_to(RESULTS.parent)})\n"
        )
        write_section("federation", body, path=Path(args.report))
    return 0


def _plot_federation(figures: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    PLOTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    series = [
        (label, figures.get(f"_lookup_{key}_latencies_ms"))
        for key, label in (("c1", "1 caller"), ("c32", "32 callers"), ("r300", "300/s offered"))
    ]
    data = [s for _, s in series if s is not None and len(s)]
    top = max(float(np.percentile(s, 99.5)) for s in data) if data else 1.0
    bins = [float(b) for b in np.linspace(0, top, 60)]
    for label, ms in series:
        if ms is not None and len(ms):
            ax.hist(
                np.minimum(ms, top),
                bins=bins,
                alpha=0.6,
                label=f"{label}: p99 {np.percentile(ms, 99):.1f} ms",
            )
    ax.axvline(50, color="k", lw=0.8, ls="--")
    ax.set_xlabel("Lookup latency (ms)")
    ax.set_ylabel("lookups")
    ax.set_title(f"Lookup latency, {figures.get('records', 0):,} records indexed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = PLOTS / "federation_lookup_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
