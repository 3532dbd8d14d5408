"""End-to-end: the federation as an operator runs it, through the real CLI.

Real processes (``python -m client.cli ...``) on loopback with mutual TLS, real SQLite files,
real CSV input: a matcher and four agency nodes, ingest, publish, link, lookup, disclose,
audit verification; then the failure paths — a missing or foreign certificate, a wrong
role, a tampered audit log — and a canary identifier that must never reach a log or an
error. Crashes (``kill -9``) and month-first data: ``test_federation_kill.py``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from linkage import forms, synthetic
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from server.launcher import (
    AGENCIES,
    start_service,
    stop_services,
    wait_ready,
)
from tests.helpers.cli_federation import (
    Federation,
    build_federation,
    jigsaw,
    start_federation,
)

pytestmark = pytest.mark.e2e
CANARY = "Zqxcanary"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = build_federation(tmp_path_factory.mktemp("federation"), 400, 11)
    try:
        start_federation(fed)
        yield fed
    finally:
        stop_services(fed.services)


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
