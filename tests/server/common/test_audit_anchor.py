"""Audit logs checked against the heads another party holds (server.common.anchor).

Tamper cases (edit, delete, reorder, truncate, wipe with head, rewrite with head, each also
with the chain and head rewritten consistently by a forger who knows the format) on real
files, with heads signed by the PKI's keys; then the whole protocol over real servers on
loopback with mutual TLS: a node anchors with the matcher, an operator fetches the heads each
holds of the other, and ``jigsaw audit verify`` reports a truncated matcher log and a wiped
node log by entry number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from client.cli import main as cli_main
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import retry_after_from_metadata
from server.common.anchor import (
    AnchorError,
    ReceiptFile,
    Signer,
    Witness,
    load_ca,
    verify_against_anchors,
    verify_head,
)
from server.common.audit import AuditLog, verify_audit_log
from server.common.pki import init_pki
from server.common.tls import secure_channel, tls_files_for
from server.matcher.config import AnchorLimitConfig
from tests.helpers.matcher import Running, matcher_config
from tests.helpers.node import start_node, stop_node, write_node_config

Entry = dict[str, Any]
OWNER = "police-node"
ANCHORED_AT = (3, 6, 10)  # the heads the matcher holds of a 10-entry log


def ca_of(pki: Path) -> x509.Certificate:
    return load_ca(tls_files_for(pki, "matcher").ca_cert)


def anchored_log(tmp_path: Path, pki: Path) -> tuple[Path, Path]:
    """A 10-entry log of police-node whose heads at ANCHORED_AT the matcher holds (in its
    witnessed file, which it exports); returns (log, exported heads)."""
    log_path, exported = tmp_path / "police-audit.jsonl", tmp_path / "matcher-witnessed.jsonl"
    owner = Signer.from_tls(tls_files_for(pki, OWNER))
    witness = Witness(
        Signer.from_tls(tls_files_for(pki, "matcher")), ca_of(pki), ReceiptFile(exported)
    )
    with AuditLog(log_path) as log:
        for index in range(1, 11):
            log.append(actor="alice", action="lookup", purpose="s47_enquiry", outcome="ok",
                       details={"candidates": index})  # fmt: skip
            if index in ANCHORED_AT:
                witness.hold(owner.sign_head(*log.durable_head()), owner.identity)
    return log_path, exported


def entries_of(path: Path) -> list[Entry]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_lines(path: Path, entries: list[Entry]) -> None:
    path.write_bytes(b"".join(canonical(entry) + b"\n" for entry in entries))


def canonical(entry: Entry) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def forge(path: Path, entries: list[Entry]) -> None:
    """What a forger who knows the format writes: ``entries`` renumbered and re-chained,
    every hash recomputed, and a head naming the new last entry."""
    previous = "0" * 64
    chained = []
    for seq, entry in enumerate(entries, start=1):
        body = {key: value for key, value in entry.items() if key != "hash"}
        body.update(seq=seq, prev=previous)
        previous = hashlib.sha256(canonical(body)).hexdigest()
        chained.append({**body, "hash": previous})
    write_lines(path, chained)
    head = path.with_name(path.name + ".head")
    if chained:
        head.write_text(f"{len(chained)} {previous}\n")
    else:
        head.unlink(missing_ok=True)


def edit(entries: list[Entry]) -> list[Entry]:
    entries[4] = {**entries[4], "outcome": "denied"}
    return entries


def delete(entries: list[Entry]) -> list[Entry]:
    del entries[4]
    return entries


def reorder(entries: list[Entry]) -> list[Entry]:
    entries[4], entries[5] = entries[5], entries[4]
    return entries


def truncate(entries: list[Entry]) -> list[Entry]:
    return entries[:8]


def wipe(entries: list[Entry]) -> list[Entry]:
    return []


def rewrite(entries: list[Entry]) -> list[Entry]:
    return [{**entry, "actor": "mallory"} for entry in entries]


Tamper = Callable[[list[Entry]], list[Entry]]

# (tamper, forged consistently, first entry reported, a word of the reason)
CASES: list[tuple[str, Tamper, bool, int, str]] = [
    ("edit", edit, False, 5, "hash mismatch"),
    ("delete", delete, False, 5, "sequence break"),
    ("reorder", reorder, False, 5, "sequence break"),
    ("edit, chain and head rewritten", edit, True, 4, "rewritten"),
    ("delete, chain and head rewritten", delete, True, 4, "rewritten"),
    ("reorder, chain and head rewritten", reorder, True, 4, "rewritten"),
    ("truncate, head rewritten", truncate, True, 9, "truncated"),
    ("wipe with head", wipe, True, 1, "wiped"),
    ("rewrite the whole chain and head", rewrite, True, 1, "rewritten"),
]


@pytest.mark.parametrize(
    ("tamper", "forged", "first_bad", "word"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_tampering_is_detected_against_the_heads_held(
    tmp_path: Path, pki: Path, tamper: Tamper, forged: bool, first_bad: int, word: str
) -> None:
    log_path, exported = anchored_log(tmp_path, pki)
    receipts = ReceiptFile(exported).read()
    assert verify_against_anchors(log_path, receipts, owner=OWNER, ca=ca_of(pki)).ok
    tampered = tamper(entries_of(log_path))
    if forged:
        forge(log_path, tampered)
        assert verify_audit_log(log_path).ok  # the local checks cannot see it
    else:
        write_lines(log_path, tampered)
        assert not verify_audit_log(log_path).ok  # the local checks still see it
    result = verify_against_anchors(log_path, receipts, owner=OWNER, ca=ca_of(pki))
    assert (result.ok, result.first_bad_seq, result.anchored_seq) == (False, first_bad, 10)
    assert word in result.reason


def test_the_cli_reports_by_entry_number_from_an_exported_file(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path, exported = anchored_log(tmp_path, pki)
    extract = tmp_path / "police-heads.jsonl"
    ca = str(tls_files_for(pki, "olga").ca_cert)
    args = ["audit", "export-anchors", "--witnessed", str(exported), "--owner", OWNER]
    assert cli_main([*args, "--ca", ca, "--out", str(extract)]) == 0
    verify = ["audit", "verify", str(log_path), "--owner", OWNER, "--ca", ca]
    assert cli_main([*verify, "--anchors", str(extract)]) == 0
    assert "OK, 10 entries" in capsys.readouterr().out
    forge(log_path, truncate(entries_of(log_path)))
    assert cli_main(["audit", "verify", str(log_path)]) == 0  # alone, it reads as clean
    capsys.readouterr()
    assert cli_main([*verify, "--anchors", str(extract)]) == 4
    assert "TAMPERED at entry 9" in capsys.readouterr().out
    log_path.unlink()
    log_path.with_name(log_path.name + ".head").unlink()
    assert cli_main([*verify, "--anchors", str(extract)]) == 4
    assert "log missing" in capsys.readouterr().out


def test_forged_and_foreign_heads_are_not_believed(tmp_path: Path, pki: Path) -> None:
    log_path, exported = anchored_log(tmp_path, pki)
    ca = ca_of(pki)
    receipts = ReceiptFile(exported).read()
    signed = receipts[-1].head
    # a head whose statement was changed after signing, or claimed for another identity
    changed = signed.statement.replace(b'"seq":10', b'"seq":11')
    with pytest.raises(AnchorError, match="signature"):
        verify_head(type(signed)(changed, signed.signature, signed.certificate), ca)
    matcher = Signer.from_tls(tls_files_for(pki, "matcher"))
    with pytest.raises(AnchorError, match="another identity"):
        verify_head(matcher.sign(json.loads(signed.statement)), ca)  # the matcher posing
    # a head signed by a key of another CA
    other = tmp_path / "other-pki"
    init_pki(other, agencies=["police"], staff=[], operators=[])
    stranger = Signer.from_tls(tls_files_for(other, OWNER))
    with pytest.raises(AnchorError, match="not one the federation CA issued"):
        verify_head(stranger.sign_head(10, "0" * 64), ca)
    # a head with a key beyond the format is refused (no free text into the matcher)
    owner = Signer.from_tls(tls_files_for(pki, OWNER))
    extra = owner.sign({**json.loads(signed.statement), "note": "free text"})
    with pytest.raises(AnchorError, match="keys"):
        verify_head(extra, ca)
    # receipts that do not verify are ignored: a log with none left has nothing to go by
    result = verify_against_anchors(log_path, [], owner=OWNER, ca=ca)
    assert not result.ok and "no verifiable head" in result.reason


def test_a_witness_flags_a_head_that_went_back(tmp_path: Path, pki: Path) -> None:
    ca = ca_of(pki)
    owner = Signer.from_tls(tls_files_for(pki, OWNER))
    witnessed = ReceiptFile(tmp_path / "witnessed.jsonl")
    witness = Witness(Signer.from_tls(tls_files_for(pki, "matcher")), ca, witnessed)
    assert witness.hold(owner.sign_head(5, "a" * 64), owner.identity)[2] == "ok"
    again = Witness(Signer.from_tls(tls_files_for(pki, "matcher")), ca, witnessed)  # restart
    assert again.hold(owner.sign_head(5, "b" * 64), owner.identity)[2] == "conflict"
    assert again.hold(owner.sign_head(2, "c" * 64), owner.identity)[2] == "regressed"
    with pytest.raises(AnchorError, match="caller"):
        again.hold(owner.sign_head(6, "d" * 64), again._signer.identity)
    assert len(again.held(OWNER)) == 3


def test_a_witness_reads_only_the_asked_owners_receipts(
    tmp_path: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = ca_of(pki)
    police, matcher = (Signer.from_tls(tls_files_for(pki, n)) for n in (OWNER, "matcher"))
    witnessed = ReceiptFile(tmp_path / "witnessed.jsonl")
    witness = Witness(matcher, ca, witnessed)
    for seq in range(1, 4):
        witness.hold(police.sign_head(seq, f"{seq:064x}"))
        witness.hold(matcher.sign_head(seq, f"{seq + 10:064x}"))
    # the other owner's lines are overwritten with junk of the same length: never read
    lines = witnessed.path.read_bytes().splitlines(keepends=True)
    witnessed.path.write_bytes(
        b"".join(b"x" * (len(line) - 1) + b"\n" if i % 2 else line for i, line in enumerate(lines))
    )
    again = Witness(matcher, ca, witnessed)  # a restart: the junk lines are skipped once
    for reader in (witness, again):
        caplog.clear()
        held = [verify_head(r.head, ca) for r in reader.held(OWNER)]
        assert [h.seq for h in held] == [1, 2, 3] and {h.owner.name for h in held} == {OWNER}
        assert not caplog.records  # not one junk line was read to answer
    assert again.held("matcher") == []
    # an owner nobody has anchored, before the witnessed file exists: nothing, not an error
    empty = Witness(matcher, ca, ReceiptFile(tmp_path / "none-yet.jsonl"))
    assert empty.held(OWNER) == [] and not (tmp_path / "none-yet.jsonl").exists()


def _lookup(stub: Any) -> None:
    stub.Lookup(
        jigsaw_pb2.LookupRequest(
            identifiers={
                "given_name": "Amy",
                "family_name": "Smith",
                "date_of_birth": "2014-03-02",
            },
            purpose_code="s47_enquiry",
            note="case 1",
        ),
        timeout=10,
    )


def test_anchoring_over_real_servers_and_verify_fetching_the_heads(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matcher_dir, node_dir = tmp_path / "matcher", tmp_path / "node"
    matcher_dir.mkdir()
    node_dir.mkdir()
    config = matcher_config(matcher_dir, pki)
    matcher = Running(config, pki)
    node = start_node(write_node_config(node_dir, pki, matcher.address))
    operator = tls_files_for(pki, "olga")
    channels = [secure_channel(node.address, tls_files_for(pki, "alice"))]
    channels.append(secure_channel(node.address, operator))
    staff = jigsaw_pb2_grpc.AgencyNodeStub(channels[0])  # type: ignore[no-untyped-call]
    admin = jigsaw_pb2_grpc.AgencyNodeStub(channels[1])  # type: ignore[no-untyped-call]
    try:
        for _ in range(3):
            _lookup(staff)
        first = admin.AnchorAudit(jigsaw_pb2.AnchorAuditRequest(), timeout=10)
        assert first.seq == 3 and first.HasField("receipt")
        again = admin.AnchorAudit(jigsaw_pb2.AnchorAuditRequest(), timeout=10)
        assert again.seq == 3 and not again.HasField("receipt")  # nothing new
        for _ in range(2):
            _lookup(staff)
        assert admin.AnchorAudit(jigsaw_pb2.AnchorAuditRequest(), timeout=10).seq == 5
        ca = str(operator.ca_cert)
        who = ["--pki", str(pki), "--identity", "olga", "--owner"]
        node_log, matcher_log = node.config.audit_log, config.audit_log
        by_matcher = ["--matcher", matcher.address, *who, OWNER, "--ca", ca]
        assert cli_main(["audit", "verify", str(node_log), *by_matcher]) == 0
        assert "OK, 5 entries" in capsys.readouterr().out
        # the matcher audited each head it holds, and its heads are held by the node
        anchors = [e for e in entries_of(matcher_log) if e["action"] == "audit_anchor"]
        assert [(e["actor"], e["outcome"], e["details"]["owner_seq"]) for e in anchors] == [
            (OWNER, "ok", 3),
            (OWNER, "ok", 5),
        ]
        matcher.stop()
        by_node = ["--node", node.address, "--agency", "police", *who, "matcher", "--ca", ca]
        assert cli_main(["audit", "verify", str(matcher_log), *by_node]) == 0
        kept = entries_of(matcher_log)
        forge(matcher_log, kept[:-2])  # the matcher's host cuts its last two entries
        capsys.readouterr()
        assert cli_main(["audit", "verify", str(matcher_log), *by_node]) == 4
        assert f"TAMPERED at entry {len(kept) - 1}" in capsys.readouterr().out
    finally:
        for channel in channels:
            channel.close()
        stop_node(node)  # its final anchoring fails (the matcher is down): logged, not raised
    matcher = Running(config, pki)
    try:
        node_log.write_bytes(b"")  # the node's host wipes its log and head
        node_log.with_name(node_log.name + ".head").unlink()
        assert cli_main(["audit", "verify", str(node_log)]) == 0  # alone, it reads as clean
        capsys.readouterr()
        by_matcher[1] = matcher.address
        assert cli_main(["audit", "verify", str(node_log), *by_matcher]) == 4
        out = capsys.readouterr().out
        assert "TAMPERED at entry 1" in out and "wiped" in out and "entry 5" in out
        for value in ("Amy", "Smith", "2014"):
            assert value not in out
    finally:
        matcher.stop()


def test_the_matchers_anchor_limit_reaches_the_operator_as_resource_exhausted(
    tmp_path: Path, pki: Path
) -> None:
    matcher_dir, node_dir = tmp_path / "matcher", tmp_path / "node"
    matcher_dir.mkdir()
    limits = AnchorLimitConfig(anchors_per_minute=0.01, burst=1)  # one, then 100 minutes
    matcher = Running(replace(matcher_config(matcher_dir, pki), anchor_limits=limits), pki)
    node = start_node(write_node_config(node_dir, pki, matcher.address))
    channels = [secure_channel(node.address, tls_files_for(pki, who)) for who in ("alice", "olga")]
    staff = jigsaw_pb2_grpc.AgencyNodeStub(channels[0])  # type: ignore[no-untyped-call]
    admin = jigsaw_pb2_grpc.AgencyNodeStub(channels[1])  # type: ignore[no-untyped-call]
    try:
        _lookup(staff)
        assert admin.AnchorAudit(jigsaw_pb2.AnchorAuditRequest(), timeout=10).seq == 1
        _lookup(staff)  # the head moved: the next anchoring asks the matcher again
        with pytest.raises(grpc.RpcError) as caught:
            admin.AnchorAudit(jigsaw_pb2.AnchorAuditRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        wait = retry_after_from_metadata(caught.value.trailing_metadata())
        assert wait is not None and wait > 60
        assert "lookup" not in (caught.value.details() or "")
    finally:
        for channel in channels:
            channel.close()
        stop_node(node)  # its final anchoring is refused too: logged, not raised
        matcher.stop()
