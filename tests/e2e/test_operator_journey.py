"""The operator's and the agency's journey through the real CLI, with real processes.

A matcher and four agency nodes on fixed loopback ports with mutual TLS, built from the
synthetic population: ingest, publish, ``link --out`` (CSV and JSON Lines), ``linked`` on
each node (fetched by the operator, listed by the agency's staff), ``resolve``; every file's
content is checked against the synthetic ground truth (which child each record is).
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.common.refusals import REFUSAL_INTERVAL_S
from server.launcher import AGENCIES, stop_services
from tests.helpers.cli_federation import Federation, build_federation, jigsaw, start_federation

pytestmark = pytest.mark.e2e

STAFF_OF = {"childrens_social_care": "alice", "police": "bob"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = build_federation(tmp_path_factory.mktemp("journey"), 300, 5)
    try:
        start_federation(federation)
        yield federation
    finally:
        stop_services(federation.services)


def child_of(fed: Federation) -> dict[tuple[str, str], int]:
    """(agency, local id) -> the synthetic child the record is of (the ground truth)."""
    truth = {}
    for a in AGENCIES:
        data = fed.population.agencies[a]
        for local_id, child in zip(data.columns["record_id"], data.child_id.tolist(), strict=True):
            truth[(a, str(local_id))] = int(child)
    return truth


def local_ids(fed: Federation, agency: str) -> dict[str, str]:
    """reference -> local id, read from the node's store (the test's own ground truth)."""
    con = sqlite3.connect(fed.root / agency / "store.sqlite")
    try:
        return dict(con.execute("SELECT reference, local_id FROM records").fetchall())
    finally:
        con.close()


@pytest.fixture(scope="module")
def linked_out(fed: Federation) -> Path:
    assert fed.matcher is not None
    out = fed.root / "out"
    for name in ("clusters.csv", "clusters.jsonl"):
        done = jigsaw(
            "link", "--matcher", fed.matcher.address(), "--pki", fed.pki,
            "--identity", "olivia", "--out", str(out / name),
        )  # fmt: skip
        assert "clusters" in done.stdout
    return out


def test_link_out_files_hold_every_cluster_with_full_references(
    fed: Federation, linked_out: Path
) -> None:
    truth = child_of(fed)
    refs = {a: local_ids(fed, a) for a in AGENCIES}
    clusters = [
        json.loads(line) for line in (linked_out / "clusters.jsonl").read_text().splitlines()
    ]
    assert clusters and (linked_out / "clusters.jsonl").stat().st_mode & 0o777 == 0o600
    right = wrong = 0
    for cluster in clusters:
        members = cluster["members"]
        assert len(members) >= 2 and cluster["edges"]
        ends = {i for e in cluster["edges"] for i in (e["left"], e["right"])}
        assert ends == set(range(len(members)))  # every member is held by an edge
        for edge in cluster["edges"]:
            assert edge["band"] in ("very high", "high", "possible", "low")
            left, right_ = members[edge["left"]], members[edge["right"]]
            a = truth[(left["agency"], refs[left["agency"]][left["reference"]])]
            b = truth[(right_["agency"], refs[right_["agency"]][right_["reference"]])]
            right += a == b
            wrong += a != b
    assert right / (right + wrong) > 0.9
    with open(linked_out / "clusters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(c["edges"]) for c in clusters)
    assert {"cluster_id", "left_reference", "right_reference", "band", "family_name"} <= set(
        rows[0]
    )
    assert all(len(r["left_reference"]) == 32 for r in rows)


def test_each_agency_learns_which_of_its_records_others_hold(
    fed: Federation, linked_out: Path
) -> None:
    truth = child_of(fed)
    children_at: dict[str, set[int]] = defaultdict(set)
    for (agency, _), child in truth.items():
        children_at[agency].add(child)
    for a in AGENCIES:
        out = linked_out / f"{a}-linked.csv"
        jigsaw(
            "linked", "--config", str(fed.node_configs[a]), "--agency", a,
            "--pki", fed.pki, "--identity", "olivia", "--fetch", "--out", str(out),
        )  # fmt: skip
        with open(out, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows, a
        correct = sum(truth[(a, r["local_id"])] in children_at[r["agency"]] for r in rows)
        assert correct / len(rows) > 0.9, a
        assert all(r["agency"] != a for r in rows)
        # never another agency's reference: every reference is this agency's own
        own = local_ids(fed, a)
        assert all(own.get(r["reference"]) == r["local_id"] for r in rows)
        truly = {
            lid for (ag, lid), child in truth.items()
            if ag == a and any(child in children_at[o] for o in AGENCIES if o != a)
        }  # fmt: skip
        assert len({r["local_id"] for r in rows} & truly) / len(truly) > 0.6, a
    # the agency's own staff list it too (JSON Lines), and resolve a reference
    staff_out = linked_out / "police-staff.jsonl"
    jigsaw(
        "linked", "--config", str(fed.node_configs["police"]),
        "--pki", fed.pki, "--identity", "bob", "--out", str(staff_out),
    )  # fmt: skip
    first = json.loads(staff_out.read_text().splitlines()[0])
    resolved = jigsaw(
        "resolve", "--config", str(fed.node_configs["police"]), "--pki", fed.pki,
        "--identity", "bob", "--reference", first["reference"], "--purpose", "case 12",
    )  # fmt: skip
    assert first["local_id"] in resolved.stdout
    # staff of another agency are refused, and fetching is for operators only
    refused = jigsaw(
        "resolve", "--config", str(fed.node_configs["police"]), "--agency", "police",
        "--pki", fed.pki, "--identity", "alice", "--reference", first["reference"],
        "--purpose", "case 12", check=False,
    )  # fmt: skip
    assert refused.returncode == 3 and "PERMISSION_DENIED" in refused.stderr
    refused = jigsaw(
        "linked", "--config", str(fed.node_configs["police"]), "--pki", fed.pki,
        "--identity", "bob", "--fetch", "--out", str(staff_out), check=False,
    )  # fmt: skip
    assert refused.returncode == 3 and "PERMISSION_DENIED" in refused.stderr
    audit = (fed.root / "police" / "audit.jsonl").read_text()
    assert '"action":"resolve"' in audit and '"action":"list_linked"' in audit
    assert first["local_id"] not in audit  # a local id is an identifier: never audited


def test_a_bad_lookup_value_is_exit_1_naming_the_field(fed: Federation) -> None:
    done = jigsaw(
        "lookup", "--config", str(fed.node_configs["police"]), "--pki", fed.pki,
        "--identity", "bob", "--purpose", "s47_enquiry", "--note", "x",
        "--field", "nhs_number=9434765918", "--field", "given_name=Amelia", check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "nhs_number" in done.stderr and "9434765918" not in done.stderr


def test_batch_lookups_paced_past_the_limits_resumable(fed: Federation, tmp_path: Path) -> None:
    """Rows of health's records looked up by bob at police, faster than the matcher's
    per-person pace: gRPC's retries with the server's pushback absorb the refusals; a bad
    row is reported by line and field; a second run resumes without repeating a lookup."""
    health = fed.population.agencies["health"]
    own = {lid: ref for ref, lid in local_ids(fed, "health").items()}
    queries = tmp_path / "queries.csv"
    fields = ("given_name", "family_name", "date_of_birth", "sex", "postcode")
    expected = {}
    with open(queries, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "First", "Last", "DOB", "Sex", "PC", "NHS"])
        for j in range(24):
            values = [str(health.columns[f][j] or "") for f in fields]
            local_id = str(health.columns["record_id"][j])
            expected[f"case-{j}"] = own[local_id]
            writer.writerow([f"case-{j}", *values, ""])
        writer.writerow(["case-bad", "Amelia", "Baker", "", "", "", "9434765918"])
    mapping = [
        "--column=given_name=First", "--column=family_name=Last",
        "--column=date_of_birth=DOB", "--column=sex=Sex", "--column=postcode=PC",
        "--column=nhs_number=NHS",
    ]  # fmt: skip
    out = tmp_path / "results.jsonl"
    args = [
        "lookup", "--config", str(fed.node_configs["police"]), "--pki", fed.pki,
        "--identity", "bob", "--purpose", "s47_enquiry", "--note", "batch",
        "--from", str(queries), "--out", str(out), "--id-column", "case",
        "--per-minute", "1200", *mapping,
    ]  # fmt: skip
    first = jigsaw(*args)
    assert "25 rows" in first.stdout
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["line"] for r in results) == list(range(2, 27))
    bad = [r for r in results if "error" in r]
    assert len(bad) == 1 and bad[0]["id"] == "case-bad" and "nhs_number" in bad[0]["error"]
    assert "9434765918" not in out.read_text()
    found = sum(
        any(c["reference"] == expected[r["id"]] for c in r["candidates"])
        for r in results
        if "error" not in r
    )
    assert found >= 21
    # interrupted after ten rows: the rerun does only the rest
    out.write_text("\n".join(out.read_text().splitlines()[:10]) + "\n")
    audit = fed.root / "police" / "audit.jsonl"

    def answered() -> int:
        entries = [json.loads(x) for x in audit.read_text().splitlines()]
        return sum(e["action"] == "lookup" and e["outcome"] == "ok" for e in entries)

    before = answered()
    again = jigsaw(*args)
    assert "10 already done" in " ".join(again.stdout.split())
    assert answered() - before == 14  # the 15 rows left, one of them the invalid one
    assert sorted(json.loads(x)["line"] for x in out.read_text().splitlines()) == list(range(2, 27))

    def refused_lookups() -> int:
        entries = [json.loads(x) for x in audit.read_text().splitlines()]
        return sum(
            count
            for e in entries
            if e["action"] == "refused" and e["actor"] == "bob"
            for kind, count in e["details"].items()
            if kind in ("lookup.rate_limited", "lookup.matcher_rate_limited")
        )

    # the limits were met, and absorbed: the node counts refused lookups per person and
    # writes the count at the end of each interval (a minute)
    deadline = time.monotonic() + REFUSAL_INTERVAL_S + 15
    while refused_lookups() == 0 and time.monotonic() < deadline:
        time.sleep(1.0)
    assert refused_lookups() > 0


def test_config_check_passes_every_config_and_lists_every_problem(
    fed: Federation, tmp_path: Path
) -> None:
    configs = [str(p) for p in fed.node_configs.values()]
    ok = jigsaw("config", "check", *configs, str(fed.root / "matcher" / "matcher.toml"))
    assert ok.stdout.count(": OK") == 5
    # a node config with a wrong certificate, a missing source column and a bad key
    text = fed.node_configs["police"].read_text()
    broken = fed.node_configs["police"].parent / "broken.toml"
    broken.write_text(
        text.replace("police-node/police-node.pem", "health-node/health-node.pem")
        .replace('family_name = "Surname"', 'family_name = "Surnme"')
        .replace("publish_batch_size = 1000", "publish_batch_size = 1000\nbatch_sise = 3")
    )
    bad = jigsaw("config", "check", str(broken), check=False)
    assert bad.returncode == 1 and "unknown key" in bad.stderr
    broken.write_text(
        text.replace("police-node/police-node.pem", "health-node/health-node.pem").replace(
            'family_name = "Surname"', 'family_name = "Surnme"'
        )
    )
    bad = jigsaw("config", "check", str(broken), check=False)
    message = " ".join(bad.stderr.split())
    assert bad.returncode == 1 and "3 problem(s)" in message, message
    assert "agency health" in message and "Surnme" in message


def test_data_quality_per_agency_through_the_cli_and_status(
    fed: Federation, linked_out: Path
) -> None:
    """``jigsaw quality`` per node after the link (against the generator's labels and the
    node's own linked list), and the same figures in the node's Status."""
    truth_missing_nhs = {
        a: {
            str(lid)
            for lid, missing in zip(
                fed.population.agencies[a].columns["record_id"],
                fed.population.agencies[a].errors["nhs_missing"].tolist(),
                strict=True,
            )
            if missing
        }
        for a in AGENCIES
    }
    for a in AGENCIES:
        listed = linked_out / f"{a}-quality-linked.csv"
        jigsaw(
            "linked", "--config", str(fed.node_configs[a]), "--agency", a,
            "--pki", fed.pki, "--identity", "olivia", "--fetch", "--out", str(listed),
        )  # fmt: skip
        with open(listed, newline="") as handle:
            linked_ids = {r["local_id"] for r in csv.DictReader(handle)}
        done = jigsaw("quality", "--config", str(fed.node_configs[a]), "--json")
        quality = json.loads(done.stdout)
        stored = set(local_ids(fed, a).values())
        (source,) = quality["sources"]
        assert source["source"] == f"{a}.csv"
        if a == "police":  # the demo data's one impossible date of birth
            assert int(source["rejected_rows"]) == 1
            assert source["rejected"] == [
                {"reason": "invalid_value", "field": "date_of_birth", "rows": "1"}
            ]
        else:
            assert int(source["rejected_rows"]) == 0 and source["rejected"] == []
        assert int(quality["records"]) == len(stored)
        without = len(stored & truth_missing_nhs[a])
        assert int(quality["without_nhs_number"]) == without
        link = quality["link"]
        assert link["result_id"] and int(link["linked"]) == len(linked_ids)
        assert link["linked_share"] == pytest.approx(len(linked_ids) / len(stored))
        assert int(link["linked_without_nhs_number"]) == len(linked_ids & truth_missing_nhs[a])
    text = jigsaw("quality", "--config", str(fed.node_configs["police"])).stdout
    assert "police.csv" in text and "linked to other agencies" in text
    # the node's Status carries the same figures (for the operator here)
    status = jigsaw(
        "status", "--node", fed.nodes["police"].address(), "--agency", "police",
        "--pki", fed.pki, "--identity", "olivia",
    ).stdout  # fmt: skip
    assert "police.csv" in status and "with an NHS number" in status
