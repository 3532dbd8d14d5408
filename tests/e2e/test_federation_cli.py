"""End-to-end: the federation as an operator runs it, through the real CLI.

Real processes (``python -m client.cli ...``) on loopback with mutual TLS, real SQLite files,
real CSV input: a matcher and four agency nodes, ingest, publish, link, lookup, disclose,
audit verification; then the failure paths — a missing or foreign certificate, a wrong
role, a tampered audit log, ``kill -9`` of the matcher mid-publish and mid-link and of a
node mid-ingest — and a canary identifier that must never reach a log or an error.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from linkage import forms, synthetic
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from server.launcher import (
    AGENCIES,
    Service,
    node_addresses,
    start_service,
    stop_services,
    wait_ready,
    write_agency_csv,
    write_matcher_config,
    write_node_config,
)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CANARY = "Zqxcanary"


def jigsaw(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"jigsaw {args[0]} failed ({done.returncode}):\n{done.stderr}")
    return done


@dataclass
class Federation:
    root: Path
    population: synthetic.SyntheticData
    services: list[Service] = field(default_factory=list)
    matcher: Service | None = None
    nodes: dict[str, Service] = field(default_factory=dict)
    node_configs: dict[str, Path] = field(default_factory=dict)

    @property
    def pki(self) -> str:
        return str(self.root / "pki")

    def start_matcher(self) -> Service:
        self.matcher = start_service(
            "matcher",
            ["matcher", "serve", "--config", str(self.root / "matcher" / "matcher.toml")],
            self.root / "matcher",
        )
        self.services.append(self.matcher)
        wait_ready([self.matcher])
        return self.matcher

    def kill_matcher(self) -> None:
        assert self.matcher is not None
        self.matcher.process.send_signal(signal.SIGKILL)
        self.matcher.process.wait(timeout=10)

    def matcher_rows(self) -> int:
        con = sqlite3.connect(self.root / "matcher" / "store.sqlite", timeout=10)
        try:
            return int(con.execute("SELECT count(*) FROM encodings").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()

    def matcher_records(self) -> int:
        """Records the matcher holds: its rows, a record published as forms counted once."""
        con = sqlite3.connect(self.root / "matcher" / "store.sqlite", timeout=10)
        try:
            rows = int(con.execute("SELECT count(*) FROM encodings").fetchone()[0])
            forms, records = con.execute(
                "SELECT count(*), count(DISTINCT agency || ' ' || record) FROM forms"
            ).fetchone()
            return rows - int(forms) + int(records)
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()


def _build(root: Path, children: int, seed: int) -> Federation:
    fed = Federation(root, synthetic.generate_population(children, seed=seed))
    jigsaw(
        "pki",
        "init",
        "--dir",
        fed.pki,
        *[f"--agency={a}" for a in AGENCIES],
        "--staff",
        "alice:childrens_social_care",
        "--staff",
        "bob:police",
        "--operator",
        "olivia",
    )
    jigsaw("secret", "init", "--out", str(root / "secret.hex"))
    (root / "data").mkdir()
    for a in AGENCIES:
        write_agency_csv(
            fed.population.agencies[a], root / "data" / f"{a}.csv", bad_row=a == "police"
        )
    write_matcher_config(root)
    return fed


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = _build(tmp_path_factory.mktemp("federation"), 400, 11)
    try:
        _start_all(fed)
        yield fed
    finally:
        stop_services(fed.services)


def _start_all(fed: Federation) -> None:
    fed.start_matcher()
    assert fed.matcher is not None
    addresses = node_addresses()
    for a in AGENCIES:
        fed.node_configs[a] = write_node_config(
            fed.root, a, fed.matcher.address(), addresses=addresses
        )
        fed.nodes[a] = start_service(
            f"{a}-node", ["node", "serve", "--config", str(fed.node_configs[a])], fed.root / a
        )
        fed.services.append(fed.nodes[a])
    wait_ready(list(fed.nodes.values()))
    for a in AGENCIES:
        jigsaw("ingest", "--config", str(fed.node_configs[a]))
        jigsaw("publish", "--config", str(fed.node_configs[a]))


def _health_query(fed: Federation) -> dict[str, str]:
    health = fed.population.agencies["health"]
    for j in range(len(health)):
        q = {
            f: str(health.columns[f][j]).strip()
            # sex too: the shipped schema salts the date of birth with it, and names are
            # compared only where the (date, sex) filter agrees
            for f in ("given_name", "family_name", "date_of_birth", "sex")
            if health.columns[f][j] and str(health.columns[f][j]).strip()
        }
        if len(q) == 4:
            return q
    raise AssertionError("no complete health record")


def test_ingest_reports_bad_row_by_line_and_field(tmp_path: Path, federation: Federation) -> None:
    out = jigsaw("ingest", "--config", str(federation.node_configs["police"])).stdout
    assert "rejected" in out and "date_of_birth" in out and "5" in out
    assert "31/02/2015" not in out  # the bad value itself is never echoed


def _stored_fields(fed: Federation, agency: str) -> list[dict[str, str | None]]:
    con = sqlite3.connect(fed.root / agency / "store.sqlite")
    try:
        rows = con.execute("SELECT fields FROM records WHERE deleted = 0").fetchall()
    finally:
        con.close()
    return [json.loads(text) for (text,) in rows]


def test_publish_is_idempotent(federation: Federation) -> None:
    before = federation.matcher_rows()
    jigsaw("publish", "--config", str(federation.node_configs["health"]))
    assert federation.matcher_rows() == before
    # one row a record, three (one a sex) for a record with a date of birth but no sex
    schema = load_schema("child")
    keys = KeySet(LinkageSecret.for_tests(), 1)  # how many rows does not depend on the key
    records = rows = 0
    for a in AGENCIES:
        stored = _stored_fields(federation, a)
        columns = {name: [f.get(name) for f in stored] for name in schema.input_names}
        records += len(stored)
        rows += len(forms.encode_forms(schema, keys, columns))
    assert before == rows > records


def _lookup(federation: Federation, query: dict[str, str], note: str) -> dict[str, Any]:
    """Alice's lookup through the social-care node (the CLI, --json): its JSON answer."""
    args = [
        "lookup",
        "--node",
        federation.nodes["childrens_social_care"].address(),
        "--pki",
        federation.pki,
        "--identity",
        "alice",
        "--purpose",
        "s47_enquiry",
        "--note",
        note,
        "--json",
    ]
    for k, v in query.items():
        args += ["--field", f"{k}={v}"]
    answer: dict[str, Any] = json.loads(jigsaw(*args).stdout)
    return answer


def _disclose(federation: Federation, reference: str) -> str:
    """Alice's disclosure request at her own node, the social-care one (the CLI): its output.
    That node relays it to the holding agency's node."""
    return jigsaw(
        "disclose",
        "--node",
        federation.nodes["childrens_social_care"].address(),
        "--pki",
        federation.pki,
        "--identity",
        "alice",
        "--reference",
        reference,
        "--purpose",
        "s47_enquiry",
        "--note",
        "case 4711",
        "--priority",
        "amber",
    ).stdout


@pytest.mark.parametrize("with_sex", [True, False], ids=["with sex", "without sex"])
def test_lookup_finds_the_child_in_health(federation: Federation, with_sex: bool) -> None:
    # without sex the node sends the query once per sex value (the date is salted with it)
    q = _health_query(federation)
    if not with_sex:
        del q["sex"]
    answer = _lookup(federation, q, "e2e test")
    candidates = answer["candidates"]
    agencies = [c["agency"] for c in candidates]
    assert "health" in agencies
    # the staff member is told the query went under each sex value, and nothing else
    assert [note.split(":")[0] for note in answer["notes"]] == (
        [] if with_sex else ["sex not given"]
    )
    top = candidates[0]
    assert top["band"] in ("very high", "high")
    assert "probability" not in top  # staff see bands, never raw scores


def test_disclose_releases_only_policy_fields(federation: Federation) -> None:
    q = _health_query(federation)
    ref = next(
        c["reference"]
        for c in _lookup(federation, q, "e2e")["candidates"]
        if c["agency"] == "health"
    )
    out = _disclose(federation, ref)
    assert "given_name" in out and "withheld by policy" in out and "nhs_number" in out


def test_a_record_without_sex_is_found_under_its_own_reference(federation: Federation) -> None:
    """A child whose social-care record lacks sex (published as forms) and whose health record
    has it: a lookup with sex finds both, the social-care record under its own reference with
    its date of birth compared, and that reference is disclosed."""
    population = federation.population
    care, health = population.agencies["childrens_social_care"], population.agencies["health"]

    def value(agency: synthetic.AgencyData, field: str, row: int) -> str:
        return str(agency.columns[field][row] or "").strip()

    pairs = [
        (i, j)
        for i in range(len(care))
        if not value(care, "sex", i) and value(care, "date_of_birth", i)
        for j in range(len(health))
        if health.child_id[j] == care.child_id[i]
        and all(value(health, f, j) for f in ("given_name", "family_name", "date_of_birth", "sex"))
    ]
    assert pairs, "the federation must hold such a child (population seed 11)"
    i, j = pairs[0]
    con = sqlite3.connect(federation.root / "childrens_social_care" / "store.sqlite")
    try:
        (reference,) = con.execute(
            "SELECT reference FROM records WHERE local_id = ?", (value(care, "record_id", i),)
        ).fetchone()
    finally:
        con.close()

    query = {f: value(health, f, j) for f in ("given_name", "family_name", "date_of_birth", "sex")}
    candidates = _lookup(federation, query, "e2e forms")["candidates"]
    assert "health" in [c["agency"] for c in candidates]
    found = [c for c in candidates if c["agency"] == "childrens_social_care"]
    assert [c["reference"] for c in found] == [reference]  # once, as the record, not a form
    assert found[0]["evidence"]["date_of_birth"] in ("exact", "strong")
    assert found[0]["evidence"]["sex"] == "missing"

    out = _disclose(federation, reference)
    assert reference in out and value(care, "family_name", i) in out


def test_link_as_operator_and_denied_to_staff(federation: Federation) -> None:
    assert federation.matcher is not None
    ok = jigsaw(
        "link",
        "--matcher",
        federation.matcher.address(),
        "--pki",
        federation.pki,
        "--identity",
        "olivia",
    )
    assert "clusters" in ok.stdout
    denied = jigsaw(
        "link",
        "--matcher",
        federation.matcher.address(),
        "--pki",
        federation.pki,
        "--identity",
        "alice",
        check=False,
    )
    assert denied.returncode == 3 and "PERMISSION_DENIED" in denied.stderr


def test_staff_are_refused_at_another_agencys_node(federation: Federation) -> None:
    """Alice (social care) at the health node: refused, for lookups and disclosures alike."""
    q = _health_query(federation)
    ref = next(
        c["reference"]
        for c in _lookup(federation, q, "e2e")["candidates"]
        if c["agency"] == "health"
    )
    common = ["--node", federation.nodes["health"].address(), "--pki", federation.pki]
    common += ["--identity", "alice"]
    lookup = jigsaw(
        "lookup",
        *common,
        *["--purpose", "s47_enquiry", "--note", "x", "--field", "given_name=Amelia"],
        check=False,
    )
    disclose = jigsaw(
        "disclose", *common, "--purpose", "s47_enquiry", "--reference", ref, check=False
    )
    for done in (lookup, disclose):
        # the client stops first: it expects its own agency's node (the node's own refusal,
        # PERMISSION_DENIED, is tested in test_node_disclose and test_authorisation_matrix)
        assert done.returncode == 1
        assert "not the expected node of agency childrens_social_care" in " ".join(
            done.stderr.split()
        )


def test_a_disclosure_without_a_lookup_is_refused(federation: Federation) -> None:
    reference = "e" * 32  # no lookup of alice's returned it
    done = jigsaw(
        "disclose",
        "--node",
        federation.nodes["childrens_social_care"].address(),
        "--pki",
        federation.pki,
        "--identity",
        "alice",
        "--reference",
        reference,
        "--purpose",
        "s47_enquiry",
        check=False,
    )
    assert done.returncode == 3 and "FAILED_PRECONDITION" in done.stderr


def test_foreign_certificate_is_refused(federation: Federation, tmp_path: Path) -> None:
    jigsaw(
        "pki",
        "init",
        "--dir",
        str(tmp_path / "rogue"),
        "--agency",
        "police",
        "--staff",
        "mallory:police",
    )
    out = jigsaw(
        "lookup",
        "--node",
        federation.nodes["police"].address(),
        "--pki",
        str(tmp_path / "rogue"),
        "--identity",
        "mallory",
        "--purpose",
        "s47_enquiry",
        "--note",
        "x",
        "--field",
        "given_name=Amelia",
        check=False,
    )
    assert out.returncode == 3 and "UNAVAILABLE" in out.stderr


def test_bad_lookup_field_is_invalid_argument_without_value(federation: Federation) -> None:
    out = jigsaw(
        "lookup",
        "--node",
        federation.nodes["police"].address(),
        "--pki",
        federation.pki,
        "--identity",
        "bob",
        "--purpose",
        "s47_enquiry",
        "--note",
        "x",
        "--field",
        f"date_of_birth={CANARY}",
        "--field",
        "given_name=Amelia",
        check=False,
    )
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr  # bad input: exit 1
    assert "date_of_birth" in out.stderr and CANARY.lower() not in out.stderr.lower()


def test_audit_verify_detects_tampering(federation: Federation, tmp_path: Path) -> None:
    log = federation.root / "childrens_social_care" / "audit.jsonl"
    assert jigsaw("audit", "verify", str(log)).returncode == 0
    copy = tmp_path / "audit.jsonl"
    lines = log.read_text().splitlines()
    assert lines, "lookups must have been audited"
    lines[0] = lines[0].replace("e2e", "E2E")
    copy.write_text("\n".join(lines) + "\n")
    head = Path(str(log) + ".head")
    if head.exists():
        Path(str(copy) + ".head").write_text(head.read_text())
    out = jigsaw("audit", "verify", str(copy), check=False)
    assert out.returncode == 4 and "TAMPERED" in out.stdout


def test_no_canary_in_any_log(federation: Federation) -> None:
    for path in federation.root.rglob("*"):
        if path.suffix in (".log", ".jsonl"):
            assert CANARY.lower() not in path.read_text(errors="replace").lower(), path


def test_matcher_limits_a_node_calling_match_directly(
    federation: Federation, tmp_path: Path
) -> None:
    """Issue 4: a node that holds the key probes the matcher itself, past its own limits."""
    import grpc

    from linkage.encode import encode_records
    from linkage.keys import KeySet, LinkageSecret
    from linkage.schema import load_schema
    from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
    from proto.jigsaw.v1.transport import retry_after_from_metadata
    from server.common.tls import secure_channel, tls_files_for
    from server.common.wire import encoded_to_proto
    from tests.helpers.matcher import tls_section

    pki = Path(federation.pki)
    workdir = tmp_path / "matcher"
    workdir.mkdir()
    config = workdir / "matcher.toml"
    config.write_text(
        f"""[matcher]
schema = "child"
store = "store.sqlite"
audit_log = "audit.jsonl"
listen = "127.0.0.1:0"
{tls_section(pki, "matcher")}
[match_limits]
burst = 3
person_share = 1.0
""",
        "utf-8",
    )
    matcher = start_service("matcher", ["matcher", "serve", "--config", str(config)], workdir)
    stopped: list[tuple[str, int]] = []
    try:
        wait_ready([matcher])
        schema = load_schema("child")
        columns: dict[str, list[str | None]] = {name: [None] for name in schema.input_names}
        columns.update(given_name=["Amelia"], family_name=["Jones"], date_of_birth=["2015-02-03"])
        query = encoded_to_proto(
            encode_records(schema, KeySet(LinkageSecret.for_tests(), 1), columns), ["0" * 32]
        )[0]
        request = jigsaw_pb2.MatchRequest(
            header=jigsaw_pb2.EncodingHeader(
                schema_fingerprint=schema.fingerprint(), key_version=1
            ),
            queries=[query],
            purpose_code="s47_enquiry",
            on_behalf_of="nobody",
        )
        node = f"{AGENCIES[0]}-node"
        with secure_channel(matcher.address(), tls_files_for(pki, node)) as channel:
            stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
            for _ in range(3):
                assert list(stub.Match(request, timeout=30).candidates) == []
            with pytest.raises(grpc.RpcError) as caught:
                stub.Match(request, timeout=30)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        retry_after = retry_after_from_metadata(caught.value.trailing_metadata())
        assert retry_after is not None and 0 < retry_after <= 0.5  # 120 a minute
    finally:
        stopped = stop_services([matcher])
    assert stopped == [("matcher", 0)]
    entries = [json.loads(line) for line in (workdir / "audit.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in entries if e["action"] == "match"] == ["ok"] * 3
    # the refused call is counted in the one entry written at shutdown
    refusals = [e["details"] for e in entries if e["action"] == "refused"]
    assert [(d["refused"], d["match.rate_limited"]) for d in refusals] == [(1, 1)]


# ------------------------------------------------------------------ crashes (own federation)


@pytest.mark.slow
def test_kill_matcher_mid_publish_and_mid_link(tmp_path: Path) -> None:
    fed = _build(tmp_path, 6000, 5)
    fed.start_matcher()
    assert fed.matcher is not None
    cfg = write_node_config(fed.root, "health", fed.matcher.address())
    text = cfg.read_text().replace("publish_batch_size = 1000", "publish_batch_size = 200")
    cfg.write_text(text)
    jigsaw("ingest", "--config", str(cfg))
    total = (
        sqlite3.connect(fed.root / "health" / "store.sqlite")
        .execute("SELECT count(*) FROM records")
        .fetchone()[0]
    )
    try:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "client.cli", "publish", "--config", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while fed.matcher_rows() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        fed.kill_matcher()
        publisher.wait(timeout=60)
        partial = fed.matcher_records()
        assert 0 < partial < total, "the kill must land mid-publish"
        # restart on the same store and port-file; the node re-sends what was not acknowledged
        fed.start_matcher()
        write_node_config(fed.root, "health", fed.matcher.address())
        jigsaw("publish", "--config", str(cfg))
        assert fed.matcher_records() == total
        jigsaw("publish", "--config", str(cfg))
        assert fed.matcher_records() == total  # nothing duplicated

        # kill -9 in the middle of a link, restart, link again
        linker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "client.cli",
                "link",
                "--matcher",
                fed.matcher.address(),
                "--pki",
                fed.pki,
                "--identity",
                "olivia",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.8)
        fed.kill_matcher()
        linker.wait(timeout=60)
        fed.start_matcher()
        out = jigsaw(
            "link", "--matcher", fed.matcher.address(), "--pki", fed.pki, "--identity", "olivia"
        )
        assert "clusters" in out.stdout
        assert fed.matcher_records() == total
    finally:
        stop_services(fed.services)


@pytest.mark.slow
def test_kill_node_mid_ingest_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    fed = _build(tmp_path, 30000, 3)
    cfg = write_node_config(fed.root, "health", "127.0.0.1:1")
    with open(fed.root / "data" / "health.csv", encoding="utf-8") as handle:
        rows = sum(1 for _ in handle) - 1
    ingester = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "ingest", "--config", str(cfg)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = fed.root / "health" / "store.sqlite"

    def stored() -> int:
        try:
            con = sqlite3.connect(store, timeout=10)
            try:
                return int(con.execute("SELECT count(*) FROM records").fetchone()[0])
            finally:
                con.close()
        except sqlite3.OperationalError:
            return 0

    deadline = time.monotonic() + 60
    while stored() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(ingester.pid, signal.SIGKILL)
    ingester.wait()
    partial = stored()
    assert 0 < partial < rows, "the kill must land mid-ingest"
    jigsaw("ingest", "--config", str(cfg))
    assert stored() == rows
    con = sqlite3.connect(store)
    assert con.execute("SELECT count(DISTINCT local_id) FROM records").fetchone()[0] == rows
    con.close()


def test_a_month_first_source_stores_and_encodes_as_a_day_first_one(tmp_path: Path) -> None:
    """The same children written day first by one agency and month first by another (with
    ``day_first = false`` on its source): after ``jigsaw ingest`` and ``jigsaw publish``
    both stores hold the same values and publish encodes them to the same filters."""
    from linkage.errors import InvalidValueError
    from linkage.normalise import date_parts, normalise_date
    from proto.jigsaw.v1 import jigsaw_pb2
    from server.launcher import COLUMN_NAMES
    from server.node.publish import encode_messages
    from server.node.store import NodeStore

    children = synthetic.generate_population(60, seed=5).agencies["health"]
    rows = list(synthetic.rows(children))
    jigsaw("pki", "init", "--dir", str(tmp_path / "pki"), "--agency=police", "--agency=health")
    jigsaw("secret", "init", "--out", str(tmp_path / "secret.hex"))
    write_matcher_config(tmp_path)
    matcher = start_service(
        "matcher", ["matcher", "serve", "--config", str(tmp_path / "matcher" / "matcher.toml")],
        tmp_path / "matcher",
    )  # fmt: skip
    ambiguous = 0
    try:
        wait_ready([matcher])
        configs = {}
        for agency, day_first in (("police", True), ("health", False)):
            names = COLUMN_NAMES[agency]
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(names.values())
            for row in rows:
                try:
                    iso = normalise_date(row["date_of_birth"], field="dob")
                except InvalidValueError:
                    continue
                if iso is None:
                    continue
                year, month, day = date_parts(iso)
                ambiguous += day <= 12 and day != month
                written = f"{day}/{month}/{year}" if day_first else f"{month}/{day}/{year}"
                cells = {**row, "local_id": row["record_id"], "date_of_birth": written}
                writer.writerow([cells[f] or "" for f in names])
            (tmp_path / "data").mkdir(exist_ok=True)
            (tmp_path / "data" / f"{agency}.csv").write_text(buffer.getvalue(), "utf-8")
            configs[agency] = write_node_config(tmp_path, agency, matcher.address())
            if not day_first:
                text = (
                    configs[agency]
                    .read_text("utf-8")
                    .replace("day_first = true", "day_first = false")
                )
                configs[agency].write_text(text, "utf-8")
            jigsaw("ingest", "--config", str(configs[agency]))
            jigsaw("publish", "--config", str(configs[agency]))
    finally:
        stop_services([matcher])
    assert ambiguous > 10  # dates that read differently day first and month first

    stored = {}
    for agency in ("police", "health"):
        with NodeStore(tmp_path / agency / "store.sqlite") as store:
            assert store.counts().pending == 0  # all published
            store.reset_publication()
            stored[agency] = sorted(store.pending_publish_page(0, 10_000), key=lambda r: r.local_id)
    police, health = stored["police"], stored["health"]
    assert len(police) == len(health) > 40
    assert [r.fields for r in police] == [r.fields for r in health]
    schema = load_schema("child")
    keys = KeySet(LinkageSecret.from_hex((tmp_path / "secret.hex").read_text("ascii")), 1)
    header = jigsaw_pb2.EncodingHeader(schema_fingerprint=schema.fingerprint(), key_version=1)

    def encoded(records: list[Any]) -> list[bytes]:
        messages = encode_messages(records, schema, keys, header, 10_000)
        return [
            bytes(part)
            for m in messages
            for part in (*m.columns.field_filters, m.columns.record_filters, m.columns.block_keys)
        ]

    assert encoded(police) == encoded(health)
