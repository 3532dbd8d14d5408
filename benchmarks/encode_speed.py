"""Encoding throughput: Jigsaw's encoder, and the peer encoder clkhash measured beside it.

``bench_encode`` encodes ``n`` synthetic child records with the shipped child schema (all
seven fields, field-level and record-level filters, five... keyed blocking tokens) on one
core, in a fresh KeySet per repeat (so no key or token survives between runs), and reports
the median records per second over the repeats and the peak resident memory of the process.

``bench_clkhash`` runs clkhash (which pins an old ``cryptography``) in a virtual environment
of its own under ``benchmarks/.clkhash-venv``, on the same kind of records with a comparable
record-level schema (the same fields, bigrams, 1024-bit CLK), in a fresh process, as its users
run it; a failure to install it is reported as ``clkhash_error`` rather than raised.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from linkage import synthetic
from linkage.encode import encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema

CLKHASH_VENV = Path(__file__).resolve().parent / ".clkhash-venv"
CLKHASH_SCRIPT = Path(__file__).resolve().parent / "peers_clkhash.py"
FIELDS = (
    "given_name",
    "middle_names",
    "family_name",
    "date_of_birth",
    "sex",
    "postcode",
    "nhs_number",
)


def _records(n: int, seed: int) -> dict[str, list[str | None]]:
    data = synthetic.generate_population(max(1, int(n / 2.2)), seed=seed)
    combined = data.all_records().columns
    return {f: list(combined[f][:n]) for f in FIELDS}


def bench_encode(
    n_records: int, *, seed: int, repeats: int = 3, salt: str | None = None
) -> dict[str, Any]:
    """Records per second of ``encode_records`` on one core (median of ``repeats``), with the
    shipped schema, or with its name fields salted with ``salt`` instead when given."""
    schema = default_child_schema()
    if salt is not None:
        schema = schema.with_salt(salt, NAME_FIELDS)
    columns = _records(n_records, seed)
    n = len(columns[FIELDS[0]])
    secret = LinkageSecret.generate()
    times = []
    for _ in range(repeats):
        keys = KeySet(secret)  # fresh per run: no derived key or token outlives a job
        start = time.perf_counter()
        encode_records(schema, keys, columns)
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "encode_records": n,
        "encode_records_per_s_1core": n / statistics.median(times),
        "encode_peak_rss_mib": peak_kib / 1024,
    }


def _ensure_clkhash_venv() -> Path:
    python = CLKHASH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", str(CLKHASH_VENV)], check=True, capture_output=True
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "clkhash"],
            check=True,
            capture_output=True,
            timeout=900,
        )
    return python


def bench_clkhash(n_records: int, *, seed: int) -> dict[str, Any]:
    try:
        python = _ensure_clkhash_venv()
    except (OSError, subprocess.SubprocessError) as exc:
        return {"clkhash_error": f"could not install clkhash: {type(exc).__name__}"}
    columns = _records(n_records, seed)
    n = len(columns[FIELDS[0]])
    with tempfile.TemporaryDirectory(prefix="jigsaw-clkhash-") as folder:
        path = Path(folder, "records.json")
        path.write_text(json.dumps({f: [v or "" for v in columns[f]] for f in FIELDS}))
        try:
            done = subprocess.run(
                [str(python), str(CLKHASH_SCRIPT), str(path)],
                capture_output=True,
                text=True,
                check=True,
                timeout=1800,
            )
            result: dict[str, Any] = json.loads(done.stdout)
        except subprocess.CalledProcessError as exc:
            return {"clkhash_error": exc.stderr[-400:]}
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            return {"clkhash_error": f"{type(exc).__name__}"}
    result["clkhash_records"] = n
    return result


#: The name fields the shipped child schema salts (``--salt`` replaces their salt).
NAME_FIELDS = ("given_name", "middle_names", "family_name")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.encode_speed --salt A --salt B``: encoding speed under each
    salt of the name fields, measured in alternating rounds (one JSON line per salt)."""
    parser = argparse.ArgumentParser(description="encoding records/s under name-field salts")
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--salt", action="append", required=True, help="e.g. date_of_birth.value")
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {salt: [] for salt in args.salt}
    for _ in range(args.rounds):
        for salt in args.salt:
            row = bench_encode(args.records, seed=args.seed, repeats=1, salt=salt)
            rates[salt].append(row["encode_records_per_s_1core"])
    for salt, values in rates.items():
        print(
            json.dumps(
                {
                    "salt": salt,
                    "records": args.records,
                    "rounds": args.rounds,
                    "encode_records_per_s_1core_median": statistics.median(values),
                }
            )
        )


if __name__ == "__main__":
    main()
