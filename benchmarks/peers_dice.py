"""Peer measurement: anonlink's accelerated Dice on the same filters as benchmarks/speed.py.

Runs inside the separate virtualenv benchmarks/.peers-venv (anonlink, numpy, bitarray), never
in Jigsaw's own environment, and is started by ``benchmarks.speed.bench_anonlink_dice``
through subprocess. Input: one JSON object as the only argument, with ``queries`` and
``candidates`` (paths of .npy files holding (n, words) uint64 filters in Jigsaw's layout: bit i
is byte i // 8, bit i % 8, least significant first), ``threshold`` and ``repeats``. Output:
one JSON object on stdout with the median pairs per second of
``anonlink.similarities.dice_coefficient_accelerated`` (single-threaded by design).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from importlib.metadata import version

import numpy as np
from anonlink.similarities import dice_coefficient_accelerated
from bitarray import bitarray


def to_bitarrays(filters: np.ndarray) -> list[bitarray]:
    """Jigsaw's packed rows as anonlink's input: bitarrays with the same bit order."""
    rows = []
    for row in np.ascontiguousarray(filters, dtype="<u8"):
        bits = bitarray(endian="little")
        bits.frombytes(row.tobytes())
        rows.append(bits)
    return rows


def main() -> None:
    settings = json.loads(sys.argv[1])
    queries = to_bitarrays(np.load(settings["queries"]))
    candidates = to_bitarrays(np.load(settings["candidates"]))
    threshold = float(settings["threshold"])
    seconds = []
    found = 0
    for _ in range(int(settings["repeats"])):
        start = time.perf_counter()
        scores, _indices = dice_coefficient_accelerated([queries, candidates], threshold, k=None)
        seconds.append(time.perf_counter() - start)
        found = len(scores)
    pairs = len(queries) * len(candidates)
    median = statistics.median(seconds)
    json.dump(
        {
            "anonlink_version": version("anonlink"),
            # anonlink's kernel is single-threaded: its one figure is a one-core figure.
            "anonlink_dice_pairs_per_s_1core": pairs / median,
            "anonlink_dice_pairs_per_s": pairs / median,
            "anonlink_median_seconds": median,
            "anonlink_pairs_found": found,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
