"""Speed benchmark of the Dice kernel (linkage.similarity), and of anonlink's for comparison.

Role: the operator's measure of how many filter comparisons per second the matcher can make
(online lookups and blocked batch linkage both reduce to these calls). Inputs are random
1024-bit filters (16 uint64 words, the main case) with about 30% of bits set, made from a
fixed seed; every figure is the median of ``repeats`` (at least 5) timed runs.

- ``dice_pairs_per_s_1core``: all-pairs ``dice_many_to_many`` at threshold 0.8, threads=1.
- ``dice_pairs_per_s``: the same with threads=2 (both cores).
- ``dice_pairs_gather_per_s``: ``dice_pairs`` on ``gather_pairs`` explicit pairs drawn
  uniformly at random (the worst case for memory access; blocked pairs have more locality),
  threads=1; ``dice_pairs_gather_per_s_2threads`` with threads=2.
- ``kernel``: the CPU path in use.

``bench_anonlink_dice`` measures anonlink's ``dice_coefficient_accelerated`` on identical
filters in a separate virtualenv (benchmarks/.peers-venv), so the peer never enters Jigsaw's
own environment. Run ``python -m benchmarks.speed`` from the repository root for both as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linkage.similarity import dice_many_to_many, dice_pairs, kernel_name, popcounts

FILTER_BITS = 1024
DENSITY = 0.3
THRESHOLD = 0.8
PEERS_VENV = Path(__file__).resolve().parent / ".peers-venv"
PEERS_SCRIPT = Path(__file__).resolve().parent / "peers_dice.py"
PEERS_PACKAGES = ["anonlink", "numpy", "bitarray"]


def random_filters(
    rng: np.random.Generator, rows: int, filter_bits: int = FILTER_BITS, density: float = DENSITY
) -> np.ndarray:
    """(rows, filter_bits // 64) uint64 filters, each bit set independently with ``density``."""
    chunks = []
    for start in range(0, rows, 8192):
        bits = rng.random((min(8192, rows - start), filter_bits), dtype=np.float32) < density
        chunks.append(np.packbits(bits, axis=1, bitorder="little"))
    packed = np.concatenate(chunks) if chunks else np.zeros((0, filter_bits // 8), np.uint8)
    return np.ascontiguousarray(packed.view("<u8").astype(np.uint64))


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: page in the arrays, start nothing lazily inside the timed runs
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def bench_dice(
    n_queries: int,
    n_candidates: int,
    *,
    seed: int,
    repeats: int = 5,
    gather_pairs: int = 4_000_000,
) -> dict[str, Any]:
    """Pairs per second of Jigsaw's Dice kernel (see the module docstring for each figure)."""
    repeats = max(5, repeats)
    rng = np.random.default_rng(seed)
    queries = random_filters(rng, n_queries)
    candidates = random_filters(rng, n_candidates)
    query_counts, candidate_counts = popcounts(queries), popcounts(candidates)
    all_pairs = n_queries * n_candidates

    def many_to_many(threads: int) -> Callable[[], object]:
        return lambda: dice_many_to_many(
            queries,
            candidates,
            threshold=THRESHOLD,
            threads=threads,
            query_popcounts=query_counts,
            candidate_popcounts=candidate_counts,
        )

    left_idx = rng.integers(0, n_queries, size=gather_pairs)
    right_idx = rng.integers(0, n_candidates, size=gather_pairs)

    def gather(threads: int) -> Callable[[], object]:
        return lambda: dice_pairs(
            queries,
            candidates,
            left_idx,
            right_idx,
            threads=threads,
            left_popcounts=query_counts,
            right_popcounts=candidate_counts,
        )

    return {
        "kernel": kernel_name(),
        "filter_bits": FILTER_BITS,
        "density": DENSITY,
        "threshold": THRESHOLD,
        "n_queries": n_queries,
        "n_candidates": n_candidates,
        "gather_pairs": gather_pairs,
        "repeats": repeats,
        "pairs_found": len(
            dice_many_to_many(queries, candidates, threshold=THRESHOLD, threads=1)[0]
        ),
        "dice_pairs_per_s_1core": all_pairs / _median_seconds(many_to_many(1), repeats),
        "dice_pairs_per_s": all_pairs / _median_seconds(many_to_many(2), repeats),
        "dice_pairs_gather_per_s": gather_pairs / _median_seconds(gather(1), repeats),
        "dice_pairs_gather_per_s_2threads": gather_pairs / _median_seconds(gather(2), repeats),
    }


def _peers_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def _ensure_peers_venv() -> None:
    """Create benchmarks/.peers-venv with anonlink unless it already imports there."""
    python = _peers_python()
    if python.exists():
        probe = subprocess.run(
            [str(python), "-c", "import anonlink.similarities, bitarray, numpy"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return
    subprocess.run(
        ["python3", "-m", "venv", str(PEERS_VENV)], capture_output=True, check=True, timeout=600
    )
    subprocess.run(
        [str(python), "-m", "pip", "install", *PEERS_PACKAGES],
        capture_output=True,
        check=True,
        timeout=1800,
    )


def bench_anonlink_dice(
    n_queries: int, n_candidates: int, *, seed: int, repeats: int = 5
) -> dict[str, Any]:
    """The all-pairs measurement of ``bench_dice`` run with anonlink, in its own virtualenv.

    Returns ``{"anonlink_error": reason}`` instead of raising when the peer cannot be
    installed or run.
    """
    repeats = max(5, repeats)
    try:
        _ensure_peers_venv()
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None)
        tail = detail.decode(errors="replace")[-500:] if isinstance(detail, bytes) else ""
        return {"anonlink_error": f"could not install anonlink in {PEERS_VENV}: {error} {tail}"}
    rng = np.random.default_rng(seed)
    queries = random_filters(rng, n_queries)
    candidates = random_filters(rng, n_candidates)
    with tempfile.TemporaryDirectory(prefix="jigsaw-peers-") as folder:
        query_path, candidate_path = Path(folder, "queries.npy"), Path(folder, "candidates.npy")
        np.save(query_path, queries)
        np.save(candidate_path, candidates)
        settings = {
            "queries": str(query_path),
            "candidates": str(candidate_path),
            "threshold": THRESHOLD,
            "repeats": repeats,
        }
        try:
            completed = subprocess.run(
                [str(_peers_python()), str(PEERS_SCRIPT), json.dumps(settings)],
                capture_output=True,
                check=True,
                timeout=3600,
                text=True,
            )
            result: dict[str, Any] = json.loads(completed.stdout)
        except subprocess.CalledProcessError as error:
            return {"anonlink_error": f"peer script failed: {error.stderr[-500:]}"}
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            return {"anonlink_error": f"peer script failed: {error}"}
    result.update({"n_queries": n_queries, "n_candidates": n_candidates, "repeats": repeats})
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-anonlink", action="store_true", help="skip the peer measurement")
    options = parser.parse_args(argv)
    result = bench_dice(
        options.queries, options.candidates, seed=options.seed, repeats=options.repeats
    )
    if not options.no_anonlink:
        result["anonlink"] = bench_anonlink_dice(
            options.queries, options.candidates, seed=options.seed, repeats=options.repeats
        )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
