"""Re-identification attack benchmark: how much an honest-but-curious matcher can learn.

Role: measures the hardening options of :mod:`linkage.harden` (and salting) against the
attacks the literature runs on Bloom-filter encodings, beside the linkage quality they cost,
so that the default hardening is chosen from one table. ``python -m benchmarks.attack`` prints
one JSON object per line and setting; ``--large`` uses 50 000 records; ``--plot PATH`` draws
:func:`plot_tradeoff`.

The attacker is the matcher: it sees every published encoding (field-level filters and the
record-level CLK, after hardening), knows the schema (it is published with its fingerprint)
but never the linkage secret. Data: the health agency's records of a seeded synthetic child
population (:func:`linkage.synthetic.generate_population`), one record per child, encoded with
the real encoder and the shipped child schema, modified per setting.

Attacks:

1. **Frequency alignment** (field-level, ``given_name`` and ``family_name``): identical
   filters are grouped and ranked by size; the attacker ranks the normalised names of its own
   plaintext sample (an independent population drawn from the same generator — its "public
   name-frequency list") and labels the group of rank ``r`` with the name of rank ``r``.
   Reported: share of encodings (records with the field present) and share of distinct values
   whose group got the right name.
2. **Graph matching** (Vidanage et al., CIKM 2020; Schäfer et al., ACSAC 2024): the attacker
   holds a plaintext dataset overlapping the encoded one at 0.2, 0.5, 0.8, 1.0 and encodes it
   with its own secret and the same schema and hardening. On each side it builds the top-k
   Dice neighbour graph of the record-level filters; node features are the sorted top-k
   similarities, degrees at several thresholds and the popcounts of every field-level and
   record-level filter, standardised per side. Nodes are matched by cosine similarity of the
   features (mutual best); then *seed-and-extend*: the most confident mutual matches become
   anchors, every node is re-described by its Dice similarity to the anchors of its own side,
   nodes are re-matched on those vectors, and the anchor set grows from the new mutual
   matches for a few rounds. Reported: correct mutual matches / overlap.
3. **Insider probing** (:func:`insider_probing`): analytic, from a node's rate limits.
4. **Linkage quality** of the same settings: precision / recall / F1 of
   ``pipeline.cluster_datasets`` on the four-agency synthetic population and of
   ``pipeline.link_two`` on FEBRL4-half (benchmarks/quality.py data).

How hardening is applied here (the encoder wiring is the lead's): the schema per setting is
the shipped one with ``salt`` set on the name fields when salting; records are encoded with
that schema's hardening off, then every field-level filter batch is passed through
``harden.harden_field_filters`` (key ``harden/<field>``, missing rows kept all-zero) and the
record-level batch through ``harden.harden_record_filters`` (key ``harden/record``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import evaluate, harden, pipeline, similarity, synthetic
from linkage import normalise as norm
from linkage.encode import EncodedBatch, encode_records
from linkage.errors import InvalidValueError
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Hardening, Schema, default_child_schema, febrl_schema

log = logging.getLogger(__name__)

NAME_FIELDS = ("given_name", "family_name")
SALTED_FIELDS = ("given_name", "middle_names", "family_name")
SALT = "date_of_birth.year"
OVERLAPS = (0.2, 0.5, 0.8, 1.0)
#: The attacker's own secret (it never has the agencies' one).
ATTACKER_SECRET = LinkageSecret(bytes(range(100, 132)))


@dataclass(frozen=True)
class Setting:
    """One hardening configuration: salting of the name fields plus :class:`Hardening`."""

    name: str
    salt: bool = False
    hardening: Hardening = dataclasses.field(default_factory=Hardening)


SETTINGS: tuple[Setting, ...] = (
    Setting("none"),
    Setting("salt", salt=True),
    Setting("balance", hardening=Hardening(balance=True)),
    Setting("xor_fold", hardening=Hardening(balance=True, xor_fold=True)),
    Setting("blip_eps2", hardening=Hardening(blip_epsilon=2.0)),
    Setting("blip_eps4", hardening=Hardening(blip_epsilon=4.0)),
    Setting("blip_eps8", hardening=Hardening(blip_epsilon=8.0)),
    Setting("diffusion_t3", hardening=Hardening(diffusion_t=3)),
    Setting("diffusion_t5", hardening=Hardening(diffusion_t=5)),
    Setting("salt+diffusion_t3", salt=True, hardening=Hardening(diffusion_t=3)),
    Setting("salt+blip_eps4", salt=True, hardening=Hardening(blip_epsilon=4.0)),
    Setting(
        "salt+balance+diffusion_t3+blip_eps8",
        salt=True,
        hardening=Hardening(balance=True, diffusion_t=3, blip_epsilon=8.0),
    ),
)
"""``xor_fold`` is run on balanced filters: the 64-bit ``sex`` filter cannot be folded alone."""


# --------------------------------------------------------------------------- encoding


def setting_schema(base: Schema, setting: Setting) -> Schema:
    """``base`` with the name fields salted when the setting salts (hardening left off)."""
    if not setting.salt:
        return base
    fields = tuple(
        dataclasses.replace(f, salt=SALT) if f.name in SALTED_FIELDS else f for f in base.fields
    )
    return dataclasses.replace(base, fields=fields)


def harden_batch(batch: EncodedBatch, hardening: Hardening, keys: KeySet) -> EncodedBatch:
    """Every field-level and the record-level filters of ``batch`` hardened (see docstring)."""
    if hardening == Hardening():
        return batch
    fields = tuple(
        harden.harden_field_filters(filters, hardening, keys, name, batch.field_present[:, index])
        for index, (name, filters) in enumerate(
            zip(batch.field_names, batch.field_filters, strict=True)
        )
    )
    record = harden.harden_record_filters(batch.record_filters, hardening, keys)
    return dataclasses.replace(batch, field_filters=fields, record_filters=record)


def encode_setting(
    base: Schema,
    setting: Setting,
    columns: dict[str, list[str | None]],
    secret: LinkageSecret,
) -> tuple[Schema, EncodedBatch]:
    """Encode ``columns`` as an agency node would under ``setting`` (schema for the matcher)."""
    schema = setting_schema(base, setting)
    keys = KeySet(secret)
    return schema, harden_batch(encode_records(schema, keys, columns), setting.hardening, keys)


# --------------------------------------------------------------------------- data


def one_record_per_child(
    n_records: int, seed: int
) -> tuple[dict[str, list[str | None]], NDArray[np.int64]]:
    """``n_records`` health-agency records of distinct children, in a seeded random order."""
    data = synthetic.generate_population(int(n_records / 0.9) + 200, seed=seed)
    health = data.agencies["health"]
    _, first = np.unique(health.child_id, return_index=True)
    order = np.random.default_rng(seed).permutation(first)[:n_records]
    columns = {c: [health.columns[c][int(i)] for i in order] for c in health.columns}
    return columns, health.child_id[order]


def take_columns(
    columns: dict[str, list[str | None]], rows: NDArray[np.int64]
) -> dict[str, list[str | None]]:
    return {c: [values[int(i)] for i in rows] for c, values in columns.items()}


def normalised_values(schema: Schema, field: str, values: Sequence[str | None]) -> list[str | None]:
    """The shipped normaliser's output per value (None where missing or invalid)."""
    spec = schema.field(field)
    normaliser = norm.NORMALISERS[spec.kind]
    out: list[str | None] = []
    for value in values:
        try:
            out.append(normaliser(value, field=field, day_first=schema.day_first))
        except InvalidValueError:
            out.append(None)
    return out


# --------------------------------------------------------------------------- attack 1


def frequency_attack(
    filters: NDArray[np.uint64],
    present: NDArray[np.bool_],
    true_values: Sequence[str | None],
    attacker_values: Sequence[str | None],
) -> tuple[float, float]:
    """Rank-align identical-filter groups with the attacker's name list.

    Returns (share of present encodings re-identified, share of distinct true values of
    which at least one group was labelled correctly).
    """
    rows = np.flatnonzero(present)
    if rows.size == 0:
        return 0.0, 0.0
    view = np.ascontiguousarray(filters[rows]).view(np.dtype((np.void, filters.shape[1] * 8)))
    _, group, sizes = np.unique(view.ravel(), return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    # rank groups: size descending, then first appearance
    first_seen = np.full(sizes.shape[0], rows.size, dtype=np.int64)
    np.minimum.at(first_seen, group, np.arange(rows.size))
    group_rank = np.empty(sizes.shape[0], dtype=np.int64)
    group_rank[np.lexsort((first_seen, -sizes))] = np.arange(sizes.shape[0])
    public = Counter(v for v in attacker_values if v)
    ranked_names = [name for name, _ in sorted(public.items(), key=lambda kv: (-kv[1], kv[0]))]
    guess = [
        ranked_names[int(group_rank[g])] if group_rank[g] < len(ranked_names) else None
        for g in range(sizes.shape[0])
    ]
    truth = [true_values[int(r)] for r in rows]
    hit = np.array([guess[int(g)] == t for g, t in zip(group, truth, strict=True)], dtype=bool)
    distinct = {t for t in truth if t}
    found = {t for t, h in zip(truth, hit, strict=True) if h}
    return float(hit.mean()), len(found) / max(1, len(distinct))


# --------------------------------------------------------------------------- attack 2


def _top_k_matrix(filters: NDArray[np.uint64], k: int, threads: int) -> NDArray[np.float64]:
    """(n, k) Dice similarities of each node's k nearest other nodes, descending (0-padded)."""
    n = filters.shape[0]
    q, c, s = similarity.dice_many_to_many(
        filters, filters, threshold=0.1, top_k=k + 1, threads=threads
    )
    keep = q != c
    q, s = q[keep], s[keep]
    start = np.searchsorted(q, np.arange(n))
    rank = np.arange(q.shape[0]) - start[q]
    ok = rank < k
    out = np.zeros((n, k))
    out[q[ok], rank[ok]] = s[ok]
    return out


#: Field combinations whose equal-filter group size is a node feature: how many records share
#: this record's exact encoding of those fields. Deterministic encodings keep equal values
#: equal under any key, so these counts are the same on the attacker's side.
_EQUALITY_GROUPS: tuple[tuple[str, ...], ...] = (
    ("given_name",),
    ("family_name",),
    ("date_of_birth",),
    ("postcode",),
    ("given_name", "family_name"),
    ("family_name", "postcode"),
    ("family_name", "date_of_birth"),
)


def _equal_group_sizes(batch: EncodedBatch, fields: tuple[str, ...]) -> NDArray[np.float64]:
    """Per record, how many records have the same filters on ``fields`` (0 when missing)."""
    index = [batch.field_names.index(f) for f in fields]
    joined = np.ascontiguousarray(np.hstack([batch.field_filters[i] for i in index]))
    present = batch.field_present[:, index].all(axis=1)
    view = joined.view(np.dtype((np.void, joined.shape[1] * 8))).ravel()
    _, group, sizes = np.unique(view, return_inverse=True, return_counts=True)
    return np.where(present, sizes[group.reshape(-1)], 0).astype(np.float64)


def _node_features(batch: EncodedBatch, k: int, threads: int) -> NDArray[np.float64]:
    top = _top_k_matrix(batch.record_filters, k, threads)
    degrees = np.stack([(top >= t).sum(axis=1) for t in (0.5, 0.6, 0.7, 0.8, 0.9)], axis=1)
    counts = [similarity.popcounts(batch.record_filters)]
    counts += [similarity.popcounts(f) for f in batch.field_filters]
    equal = [_equal_group_sizes(batch, fields) for fields in _EQUALITY_GROUPS]
    features = np.hstack(
        [
            top,
            degrees,
            np.stack(counts, axis=1).astype(np.float64),
            np.log1p(np.stack(equal, axis=1)),
        ]
    )
    spread = features.std(axis=0)
    scaled: NDArray[np.float64] = (features - features.mean(axis=0)) / np.where(
        spread > 0, spread, 1.0
    )
    return scaled


def _best_two(
    left: NDArray[np.floating[Any]], right: NDArray[np.floating[Any]]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Per left row: index of the most cosine-similar right row, and best minus second best."""
    a = (left / np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    b = (right / np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    best = np.empty(a.shape[0], dtype=np.int64)
    margin = np.empty(a.shape[0], dtype=np.float32)
    for start in range(0, a.shape[0], 2048):
        scores = a[start : start + 2048] @ b.T
        top = np.argpartition(-scores, 1, axis=1)[:, :2]
        values = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-values, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        best[start : start + 2048] = top[:, 0]
        margin[start : start + 2048] = values[:, 0] - values[:, 1]
    return best, margin


def _mutual(
    left: NDArray[np.floating[Any]], right: NDArray[np.floating[Any]]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Mutual-best pairs (left index, right index, margin of the left side)."""
    forward, margin = _best_two(left, right)
    backward, _ = _best_two(right, left)
    mutual = np.flatnonzero(backward[forward] == np.arange(left.shape[0]))
    return mutual, forward[mutual], margin[mutual]


def _unpacked(filters: NDArray[np.uint64]) -> NDArray[np.float32]:
    bits = np.unpackbits(filters.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    return bits.astype(np.float32)


def _anchor_profile(
    bits: NDArray[np.float32], counts: NDArray[np.float32], anchors: NDArray[np.int64]
) -> NDArray[np.float32]:
    """Dice of every node to each anchor of its own side, centred per node."""
    shared = bits @ bits[anchors].T
    dice = 2 * shared / np.maximum(counts[:, None] + counts[anchors][None, :], 1.0)
    centred: NDArray[np.float32] = (dice - dice.mean(axis=1, keepdims=True)).astype(np.float32)
    return centred


def graph_attack(
    encoded: EncodedBatch,
    attacker: EncodedBatch,
    *,
    top_k: int = 20,
    first_anchors: int = 200,
    max_anchors: int = 1000,
    rounds: int = 6,
    threads: int = 2,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The attacker's claimed matches (encoded index, attacker index), one-to-one."""
    left_f = _node_features(encoded, top_k, threads)
    right_f = _node_features(attacker, top_k, threads)
    left, right, margin = _mutual(left_f, right_f)
    left_bits, right_bits = _unpacked(encoded.record_filters), _unpacked(attacker.record_filters)
    left_counts, right_counts = left_bits.sum(axis=1), right_bits.sum(axis=1)
    anchors = first_anchors
    previous: set[tuple[int, int]] = set()
    for _ in range(rounds):
        chosen = np.argsort(-margin, kind="stable")[:anchors]
        left_profile = _anchor_profile(left_bits, left_counts, left[chosen])
        right_profile = _anchor_profile(right_bits, right_counts, right[chosen])
        left, right, margin = _mutual(left_profile, right_profile)
        current = set(zip(left.tolist(), right.tolist(), strict=True))
        if current == previous and anchors >= max_anchors:
            break
        previous = current
        anchors = min(max_anchors, int(anchors * 2.5))
    return left, right


def graph_attack_rate(
    encoded: EncodedBatch,
    attacker: EncodedBatch,
    encoded_ids: NDArray[np.int64],
    attacker_ids: NDArray[np.int64],
) -> tuple[float, float]:
    """(correct matches / overlap, precision of the claimed matches)."""
    left, right = graph_attack(encoded, attacker)
    overlap = int(np.isin(encoded_ids, attacker_ids).sum())
    correct = int((encoded_ids[left] == attacker_ids[right]).sum())
    return correct / max(1, overlap), correct / max(1, left.shape[0])


# --------------------------------------------------------------------------- attack 3


def insider_probing(
    lookups_per_minute: float,
    burst: int,
    enumeration_alert_per_hour: int,
    population: int,
) -> dict[str, float]:
    """How far an insider with a node identity can enumerate, from the node's rate limits.

    Model (server/ratelimit.py): a token bucket of ``burst`` tokens refilled at
    ``lookups_per_minute``, and an alert when more than ``enumeration_alert_per_hour``
    lookups fall in a sliding hour (the alert does not block). One lookup tests one guessed
    identity, so testing a child known by name and date of birth costs one lookup.

    * ``lookups_before_alert``: the alert fires on lookup ``alert + 1``; at full speed that
      comes after ``max(0, alert + 1 - burst) / rate`` minutes (``minutes_to_alert``).
    * ``stealthy_per_day``: staying at or under the alert in every hour window, at most
      ``min(alert, 60 * rate)`` per hour (plus one initial burst), times 24.
    * ``max_per_day``: ignoring the alert, ``burst + 1440 * rate``.
    * shares: lookups / ``population``, capped at 1, per day and per week (7 days).
    """
    rate = float(lookups_per_minute)
    alert = int(enumeration_alert_per_hour)
    before_alert = alert
    minutes_to_alert = max(0, alert + 1 - burst) / rate
    per_hour_stealthy = min(float(alert), 60.0 * rate)
    stealthy_day = min(float(alert), float(burst) + 60.0 * rate) + 23 * per_hour_stealthy
    max_day = burst + 1440.0 * rate
    return {
        "lookups_before_alert": float(before_alert),
        "minutes_to_alert_at_full_speed": minutes_to_alert,
        "stealthy_lookups_per_day": stealthy_day,
        "max_lookups_per_day": max_day,
        "stealthy_share_day": min(1.0, stealthy_day / population),
        "stealthy_share_week": min(1.0, 7 * stealthy_day / population),
        "max_share_day": min(1.0, max_day / population),
        "max_share_week": min(1.0, 7 * max_day / population),
    }


# --------------------------------------------------------------------------- quality


def quality_synthetic(setting: Setting, n_children: int, seed: int) -> dict[str, float]:
    """Pairwise precision / recall / F1 of clustering the four agencies under ``setting``."""
    from benchmarks.quality import synthetic_population

    columns, truth = synthetic_population(n_children, seed)
    encoded = []
    schema = default_child_schema()
    for cols in columns:
        schema, batch = encode_setting(default_child_schema(), setting, cols, _test_secret())
        encoded.append(batch)
    result = pipeline.cluster_datasets(schema, encoded)
    ti, tj = evaluate.true_pairs_from_entities(truth)
    from linkage.solve import pairs_from_labels

    pi, pj = pairs_from_labels(result.labels)
    q = evaluate.pairwise_quality(pi, pj, ti, tj, ordered=False)
    return {"precision": q.precision, "recall": q.recall, "f1": q.f1}


def quality_febrl4_half(setting: Setting, seed: int) -> dict[str, float]:
    """Precision / recall / F1 of linking FEBRL4-half under ``setting`` (names salted with
    nothing: FEBRL has no stable attribute the child schema salts with, so ``salt`` only
    hardens)."""
    from benchmarks.quality import _columns, _febrl4

    a, b, ti, tj = _febrl4(True, seed)
    plain = dataclasses.replace(setting, salt=False)
    schema, left = encode_setting(febrl_schema(), plain, _columns(a), _test_secret())
    _, right = encode_setting(febrl_schema(), plain, _columns(b), _test_secret())
    result = pipeline.link_two(schema, left, right, one_to_one=True)
    q = evaluate.pairwise_quality(result.left, result.right, ti, tj, ordered=True)
    return {"precision": q.precision, "recall": q.recall, "f1": q.f1}


def _test_secret() -> LinkageSecret:
    return LinkageSecret.for_tests()


# --------------------------------------------------------------------------- driver


def run_attack(
    settings: Sequence[Setting] = SETTINGS,
    *,
    n_records: int = 10_000,
    overlaps: Sequence[float] = OVERLAPS,
    seed: int = 7,
    quality: bool = True,
    quality_children: int = 5_000,
    rate_limits: tuple[float, int, int] = (60.0, 10, 200),
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run every attack (and the quality measurement) per setting; yields one row each."""
    base = default_child_schema()
    pool_size = math.ceil(n_records * (2 - min(overlaps))) if overlaps else n_records
    columns, child_ids = one_record_per_child(pool_size, seed)
    public_columns, _ = one_record_per_child(n_records, seed + 1000)
    encoded_rows = np.arange(n_records, dtype=np.int64)
    probing = insider_probing(*rate_limits, population=n_records)
    for setting in settings:
        started = time.perf_counter()
        row: dict[str, Any] = {"setting": setting.name, "records": n_records}
        row["hardening"] = dataclasses.asdict(setting.hardening) | {"salt": setting.salt}
        encoded_columns = take_columns(columns, encoded_rows)
        schema, encoded = encode_setting(base, setting, encoded_columns, _test_secret())
        for field in NAME_FIELDS:
            index = encoded.field_names.index(field)
            share, distinct = frequency_attack(
                encoded.field_filters[index],
                encoded.field_present[:, index],
                normalised_values(schema, field, encoded_columns[field]),
                normalised_values(schema, field, public_columns[field]),
            )
            row[f"frequency_{field}_records"] = share
            row[f"frequency_{field}_values"] = distinct
        for overlap in overlaps:
            shared = round(overlap * n_records)
            attacker_rows = np.arange(n_records - shared, 2 * n_records - shared, dtype=np.int64)
            attacker_rows = np.random.default_rng(seed + 1).permutation(attacker_rows)
            _, attacker = encode_setting(
                base, setting, take_columns(columns, attacker_rows), ATTACKER_SECRET
            )
            rate, precision = graph_attack_rate(
                encoded, attacker, child_ids[encoded_rows], child_ids[attacker_rows]
            )
            row[f"graph_{overlap}"] = rate
            row[f"graph_{overlap}_precision"] = precision
        row["graph_max"] = max((row[f"graph_{o}"] for o in overlaps), default=0.0)
        row["frequency_max"] = max(row[f"frequency_{f}_records"] for f in NAME_FIELDS)
        if quality:
            for key, value in quality_synthetic(setting, quality_children, seed).items():
                row[f"synthetic_{key}"] = value
            for key, value in quality_febrl4_half(setting, seed).items():
                row[f"febrl4_half_{key}"] = value
        row["insider"] = probing
        row["seconds"] = time.perf_counter() - started
        if emit:
            emit(row)
        yield row


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Two panels: max re-identification rate vs synthetic F1, and graph rate vs overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for row in rows:
        reid = max(row.get("graph_max", 0.0), row.get("frequency_max", 0.0))
        f1 = row.get("synthetic_f1", float("nan"))
        left.scatter([f1], [reid])
        left.annotate(row["setting"], (f1, reid), fontsize=7)
        overlaps = sorted(
            float(k.split("_")[1])
            for k in row
            if k.startswith("graph_") and k.count("_") == 1 and k != "graph_max"
        )
        right.plot(overlaps, [row[f"graph_{o}"] for o in overlaps], marker="o",
                   label=row["setting"])  # fmt: skip
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--large", action="store_true", help="50 000 records (slow)")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--settings", default="", help="comma-separated setting names")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--quality-only", action="store_true", help="only the F1 columns")
    parser.add_argument("--quality-children", type=int, default=5_000)
    parser.add_argument("--plot", default="", help="write the trade-off plot to this PNG")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    wanted = {s for s in args.settings.split(",") if s}
    chosen = [s for s in SETTINGS if not wanted or s.name in wanted]
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
            quality_children=args.quality_children,
            emit=lambda r: print(json.dumps(r), flush=True),
        )
    )
    if args.plot:
        plot_tradeoff(rows, args.plot)


if __name__ == "__main__":
    main()


def run_cli(args: Any, *, emit: Callable[[dict[str, Any]], None]) -> int:
    """``jigsaw bench attack``: every setting at 10 k records (50 k with ``--large``)."""
    from pathlib import Path

    from benchmarks.report import PLOTS_DIR, markdown_table, provenance, write_section

    n_records = 50_000 if args.large else 10_000
    rows = list(run_attack(SETTINGS, n_records=n_records, seed=args.seed, emit=emit))
    if args.report:
        PLOTS_DIR.mkdir(parents=True, exist_ok=True)
        plot = PLOTS_DIR / "attack_tradeoff.png"
        plot_tradeoff(rows, str(plot))
        columns = sorted({k for r in rows for k in r if not isinstance(r[k], dict | list)})
        body = (
            "## Re-identification attacks\n\n"
            + provenance("jigsaw bench attack --json --report")
            + "\n"
            + markdown_table(rows, columns)
            + f"\n\n![trade-off]({plot.relative_to(Path(args.report).resolve().parent)})\n"
        )
        write_section("attack", body, path=Path(args.report))
    return 0
