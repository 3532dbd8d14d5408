"""Speed benchmark of candidate-pair generation (linkage.blocking).

Role: measures how fast the matcher turns blocking keys into candidate pairs and how fast it
computes LSH band keys on packed filters, so that a regression to per-block Python loops shows
up as a number. Run ``python -m benchmarks.blocking_speed`` (prints JSON).

Synthetic keys imitate real blocking rules: each rule's key is a Zipf-distributed "code" (think
phonetic surname code, exponent about 1) crossed with a uniform stratum (think birth year),
with a few per cent of missing keys (0). Left and right datasets are drawn independently from
the same distribution, so block sizes are realistic but there are no true matches (speed only).
Timings are medians of ``repeats`` runs; pairs per second counts distinct candidate pairs.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.blocking import (
    candidate_pairs_dedupe,
    candidate_pairs_link,
    count_block_pairs_link,
    lsh_keys,
)


@dataclass(frozen=True)
class KeyRule:
    """Shape of one synthetic blocking rule: Zipf codes x uniform strata, with missing keys."""

    codes: int
    strata: int
    exponent: float = 1.0
    missing_rate: float = 0.02


# surname code + birth year, first-name code + birth month, postcode district + year, full DOB
DEFAULT_RULES = (
    KeyRule(codes=5000, strata=18),
    KeyRule(codes=3000, strata=216),
    KeyRule(codes=2800, strata=18, exponent=0.8),
    KeyRule(codes=1, strata=6570, missing_rate=0.01),
)


def synthetic_block_keys(
    n_records: int, rules: tuple[KeyRule, ...], key_tables: list[NDArray[np.uint64]], seed: int
) -> NDArray[np.uint64]:
    """Keys of shape (n_records, len(rules)); key_tables map each (code, stratum) to a key."""
    rng = np.random.default_rng(seed)
    keys = np.empty((n_records, len(rules)), dtype=np.uint64)
    for column, (rule, table) in enumerate(zip(rules, key_tables, strict=True)):
        weights = 1.0 / np.arange(1, rule.codes + 1) ** rule.exponent
        codes = rng.choice(rule.codes, size=n_records, p=weights / weights.sum())
        strata = rng.integers(0, rule.strata, size=n_records)
        keys[:, column] = table[codes * rule.strata + strata]
        keys[rng.random(n_records) < rule.missing_rate, column] = 0
    return keys


def _key_tables(rules: tuple[KeyRule, ...], seed: int) -> list[NDArray[np.uint64]]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(1, 2**64 - 1, size=rule.codes * rule.strata, dtype=np.uint64, endpoint=True)
        for rule in rules
    ]


def _median_seconds(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times = []
    result: Any = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def synthetic_filters(
    n_records: int, filter_bits: int, fill: float, seed: int
) -> NDArray[np.uint64]:
    """Random packed filters with about ``fill`` of their bits set."""
    rng = np.random.default_rng(seed)
    bits = rng.random((n_records, filter_bits)) < fill
    packed = np.packbits(bits, axis=1, bitorder="little")
    return packed.view("<u8").astype(np.uint64)


def bench_blocking(
    n_left: int,
    n_right: int,
    n_rules: int,
    *,
    seed: int,
    repeats: int = 5,
    lsh_records: int = 100_000,
    filter_bits: int = 1024,
    bands: int = 20,
    bits_per_band: int = 24,
) -> dict[str, Any]:
    """Median timings and throughputs of link, dedupe, pre-count and LSH key generation."""
    rules = tuple(DEFAULT_RULES[i % len(DEFAULT_RULES)] for i in range(n_rules))
    tables = _key_tables(rules, seed)
    left = synthetic_block_keys(n_left, rules, tables, seed + 1)
    right = synthetic_block_keys(n_right, rules, tables, seed + 2)

    count_seconds, counts = _median_seconds(lambda: count_block_pairs_link(left, right), repeats)
    link_seconds, pairs = _median_seconds(lambda: candidate_pairs_link(left, right), repeats)
    dedupe_seconds, dedupe_pairs = _median_seconds(lambda: candidate_pairs_dedupe(left), repeats)

    filters = synthetic_filters(lsh_records, filter_bits, 0.3, seed + 3)
    lsh_seconds, _ = _median_seconds(
        lambda: lsh_keys(filters, bands=bands, bits_per_band=bits_per_band, seed=seed), repeats
    )
    return {
        "n_left": n_left,
        "n_right": n_right,
        "n_rules": n_rules,
        "repeats": repeats,
        "link_pairs": len(pairs),
        "link_pairs_upper_bound": counts.pairs_upper_bound,
        "link_largest_block": pairs.largest_block,
        "link_seconds": link_seconds,
        "link_pairs_per_second": len(pairs) / link_seconds,
        "count_seconds": count_seconds,
        "dedupe_pairs": len(dedupe_pairs),
        "dedupe_seconds": dedupe_seconds,
        "dedupe_pairs_per_second": len(dedupe_pairs) / dedupe_seconds,
        "lsh_records": lsh_records,
        "lsh_filter_bits": filter_bits,
        "lsh_bands": bands,
        "lsh_bits_per_band": bits_per_band,
        "lsh_seconds": lsh_seconds,
        "lsh_records_per_second": lsh_records / lsh_seconds,
        "lsh_keys_per_second": lsh_records * bands / lsh_seconds,
    }


if __name__ == "__main__":
    print(json.dumps(bench_blocking(100_000, 100_000, 4, seed=20260101), indent=2))
