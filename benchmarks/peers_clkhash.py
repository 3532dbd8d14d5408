"""Peer measurement: clkhash (anonlink's encoder) on the records benchmarks/encode_speed.py encodes.

Runs inside the separate virtualenv benchmarks/.clkhash-venv (clkhash pins an old
``cryptography``), never in Jigsaw's own environment, and is started by
``benchmarks.encode_speed.bench_clkhash`` through subprocess as
``python benchmarks/peers_clkhash.py RECORDS.json``. RECORDS.json is one JSON object mapping
each of the seven child fields (given_name, middle_names, family_name, date_of_birth, sex,
postcode, nhs_number) to a list of strings, one per record, with ``""`` for a missing value.

The clkhash linkage schema (format version 3) is built to be comparable to the record-level
filter of Jigsaw's child schema (linkage/schemas/child.toml, read here with tomllib so the two
cannot drift): one CLK of ``record_filter_bits`` (1024) bits for the whole record; every field
tokenised into bigrams (clkhash pads with one space at each end, so "ann" gives " a", "an",
"nn", "n "; an empty value gives no token); each token inserted ``record_hashes_per_token``
times (clkhash's ``bitsPerToken`` strategy, the v3 name of the older ``k``); positions from
``blakeHash`` (independent positions, like Jigsaw's, rather than double hashing). Dates arrive
in mixed formats that clkhash cannot normalise, so date_of_birth is a plain string feature
tokenised like the others; sex is likewise a string rather than an enum.

Jigsaw's encoder also builds field-level filters and keyed blocking tokens; this script builds
only the record-level CLK, so it measures less work than ``bench_encode`` does.

The timed region is the schema build plus ``clkhash.clk.generate_clks`` over all records with
one worker process (Jigsaw's figure is for one core; clkhash would otherwise fork one worker
per CPU at 10,000 records or more), in this fresh process; reading the JSON is not timed.
Output: one JSON object on stdout, ``clkhash_records_per_s`` (records over the median of three
runs), ``clkhash_seconds`` (that median) and ``clkhash_version``; nothing else.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

from clkhash.clk import generate_clks
from clkhash.schema import from_json_dict

FIELDS = (
    "given_name",
    "middle_names",
    "family_name",
    "date_of_birth",
    "sex",
    "postcode",
    "nhs_number",
)
CHILD_SCHEMA = Path(__file__).resolve().parent.parent / "linkage" / "schemas" / "child.toml"
REPEATS = 3


def schema_dict(child: dict[str, Any]) -> dict[str, Any]:
    """The clkhash v3 schema mirroring the record-level filter of Jigsaw's child schema."""
    hashes = {field["name"]: field["record_hashes_per_token"] for field in child["field"]}
    features = [
        {
            "identifier": name,
            "format": {"type": "string", "encoding": "utf-8", "case": "mixed"},
            "hashing": {
                "comparison": {"type": "ngram", "n": 2},
                "strategy": {"bitsPerToken": hashes[name]},
                "hash": {"type": "blakeHash"},
            },
        }
        for name in FIELDS
    ]
    return {
        "version": 3,
        "clkConfig": {
            "l": child["schema"]["record_filter_bits"],
            "kdf": {"type": "HKDF", "hash": "SHA256", "keySize": 64},
        },
        "features": features,
    }


def main() -> None:
    columns = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    rows = [list(row) for row in zip(*(columns[name] for name in FIELDS), strict=True)]
    with CHILD_SCHEMA.open("rb") as handle:
        settings = schema_dict(tomllib.load(handle))
    secret = secrets.token_bytes(32)
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        schema = from_json_dict(settings)
        clks = generate_clks(rows, schema, secret, max_workers=1)
        seconds.append(time.perf_counter() - start)
        if len(clks) != len(rows) or any(len(clk) != schema.l for clk in clks):
            sys.exit("clkhash returned the wrong number or length of CLKs")
    median = statistics.median(seconds)
    json.dump(
        {
            "clkhash_records_per_s": len(rows) / median,
            "clkhash_version": version("clkhash"),
            "clkhash_seconds": median,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
