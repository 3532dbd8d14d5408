"""``jigsaw lookup --from queries.csv --out results.jsonl`` end to end, through the CLI, against
real matcher and node processes whose per-person limits are set small (the node's
``[rate_limits]``, the matcher's ``[match_limits]`` and its per-person share), with the batch
asked to go ten times faster than they allow: every row is answered, no error reaches the
caller, and the refusals the limits made are counted in the node's audit log, waited out.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.common.refusals import REFUSAL_INTERVAL_S
from server.launcher import (
    stop_services,
    write_matcher_config,
)
from tests.helpers.cli_federation import Federation, build_federation, jigsaw, start_federation

pytestmark = pytest.mark.e2e

ROWS = 24
#: a person's lookups: the node's bucket, one a second after a burst of 3
NODE_LIMITS = {"rate_limits": {"lookups_per_minute": 60, "burst": 3}}
#: the matcher's bucket for the node, and each person's half of it: 45 a minute, burst 2
MATCHER_LIMITS = {"match_limits": {"matches_per_minute": 90, "burst": 4, "person_share": 0.5}}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = build_federation(tmp_path_factory.mktemp("batch-cli"), 200, 11)
    write_matcher_config(federation.root, overrides=MATCHER_LIMITS)
    try:
        start_federation(federation, node_overrides=NODE_LIMITS)
        yield federation
    finally:
        stop_services(federation.services)


def test_a_batch_faster_than_the_limits_finishes_with_no_error(
    fed: Federation, tmp_path: Path
) -> None:
    health = fed.population.agencies["health"]
    con = sqlite3.connect(fed.root / "health" / "store.sqlite")
    try:
        reference_of = dict(con.execute("SELECT local_id, reference FROM records").fetchall())
    finally:
        con.close()
    fields = ("given_name", "family_name", "date_of_birth", "sex", "postcode")
    queries = tmp_path / "queries.csv"
    expected = {}
    with open(queries, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", *fields])
        for j in range(ROWS):
            local_id = str(health.columns["record_id"][j])
            expected[f"case-{j}"] = reference_of[local_id]
            writer.writerow([f"case-{j}", *(str(health.columns[f][j] or "") for f in fields)])
    out = tmp_path / "results.jsonl"
    done = jigsaw(
        "lookup", "--config", str(fed.node_configs["police"]), "--pki", fed.pki,
        "--identity", "bob", "--purpose", "s47_enquiry", "--note", "batch",
        "--from", str(queries), "--out", str(out), "--id-column", "case",
        "--per-minute", "600", check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{ROWS} rows: {ROWS} looked up, 0 refused as invalid" in done.stdout
    for word in ("RESOURCE_EXHAUSTED", "rate limit", "error", "Traceback"):
        assert word not in done.stdout + done.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["line"] for r in results) == list(range(2, ROWS + 2))
    assert all("error" not in r and r["lookup_id"] for r in results)
    found = sum(any(c["reference"] == expected[r["id"]] for c in r["candidates"]) for r in results)
    assert found >= ROWS - 3
    audit_log = fed.root / "police" / "audit.jsonl"

    def entries() -> list[dict[str, Any]]:
        return [json.loads(x) for x in audit_log.read_text().splitlines()]

    lookups = [e for e in entries() if e["action"] == "lookup" and e["actor"] == "bob"]
    assert sum(e["outcome"] == "ok" for e in lookups) == ROWS

    def refused_lookups() -> int:
        return sum(
            count
            for e in entries()
            if e["action"] == "refused" and e["actor"] == "bob"
            for kind, count in e["details"].items()
            if kind in ("lookup.rate_limited", "lookup.matcher_rate_limited")
        )

    # the limits were met, and waited out: the node counts bob's refused lookups (its own
    # bucket's and the matcher's) and writes the count at the end of each interval
    deadline = time.monotonic() + REFUSAL_INTERVAL_S + 15
    while refused_lookups() == 0 and time.monotonic() < deadline:
        time.sleep(1.0)
    assert refused_lookups() > 0
