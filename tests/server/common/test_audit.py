"""Tests for server.common.audit: byte format, chain continuation, tamper detection, threads."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.common.audit import (
    FORBIDDEN_DETAIL_KEYS,
    GENESIS_HASH,
    MAX_GROUP_ENTRIES,
    AuditIntegrityError,
    AuditLog,
    verify_audit_log,
)

CANARY = "Zebedee-Canary-1999-03-02"


def fixed_clock() -> datetime.datetime:
    return datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)


def write_entries(path: Path, count: int) -> None:
    with AuditLog(path, clock=fixed_clock) as log:
        for index in range(count):
            log.append(
                actor=f"user{index % 3}",
                action="lookup",
                purpose="s47 enquiry",
                outcome="ok",
                details={"candidates": index, "band": "high", "score": 0.5, "alert": False},
            )


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def rehash(entry: dict[str, object]) -> bytes:
    """What a forger who knows the format would write for ``entry`` (hash recomputed)."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    body_bytes = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    entry = {**body, "hash": hashlib.sha256(body_bytes.encode()).hexdigest()}
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_byte_format_known_answer(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog(path, clock=fixed_clock) as log:
        first = log.append(
            actor="alice",
            action="disclose",
            purpose="s47",
            outcome="ok",
            details={"reference": "ab" * 16, "fields": 3},
        )
        second = log.append(actor="police-node", action="publish", outcome="ok")
    body = {
        "seq": 1,
        "ts": "2026-01-02T03:04:05.678901Z",
        "actor": "alice",
        "action": "disclose",
        "purpose": "s47",
        "outcome": "ok",
        "details": {"reference": "ab" * 16, "fields": 3},
        "prev": "0" * 64,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    expected_hash = hashlib.sha256(canonical).hexdigest()
    assert first.hash == expected_hash and first.prev == GENESIS_HASH == "0" * 64
    first_line, second_line = lines_of(path)
    assert json.loads(first_line) == {**body, "hash": expected_hash}
    assert (
        first_line
        == json.dumps(
            {**body, "hash": expected_hash}, sort_keys=True, separators=(",", ":")
        ).encode()
        + b"\n"
    )
    assert json.loads(second_line)["prev"] == expected_hash
    assert second.seq == 2 and second.purpose == "" and dict(second.details) == {}
    assert (tmp_path / "audit.log.head").read_text() == f"2 {second.hash}\n"
    assert verify_audit_log(path).ok


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 3)
    write_entries(path, 2)
    seqs = [json.loads(line)["seq"] for line in lines_of(path)]
    assert seqs == [1, 2, 3, 4, 5]
    result = verify_audit_log(path)
    assert (result.ok, result.entries, result.first_bad_seq) == (True, 5, None)


def test_empty_and_missing_logs(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    assert not verify_audit_log(path).ok
    AuditLog(path).close()
    assert verify_audit_log(path).ok and verify_audit_log(path).entries == 0


def test_edited_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 5)
    lines = lines_of(path)
    lines[1] = lines[1].replace(b'"actor":"user1"', b'"actor":"user2"')
    rewrite(path, lines)
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 2, 1)
    assert "hash mismatch" in result.reason


def test_edited_entry_with_recomputed_hash_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 5)
    lines = lines_of(path)
    entry = json.loads(lines[2])
    entry["outcome"] = "denied"
    lines[2] = rehash(entry) + b"\n"
    rewrite(path, lines)
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "chain break" in result.reason


def test_inserted_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 5)
    lines = lines_of(path)
    previous = json.loads(lines[1])
    forged = {**previous, "seq": 3, "prev": previous["hash"], "actor": "mallory"}
    lines.insert(2, rehash(forged) + b"\n")
    rewrite(path, lines)
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_duplicated_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 4)
    lines = lines_of(path)
    lines.insert(2, lines[1])
    rewrite(path, lines)
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "sequence" in result.reason


def test_deleted_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 5)
    lines = lines_of(path)
    del lines[1]
    rewrite(path, lines)
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 2, 1)


def test_reordered_entries(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 5)
    lines = lines_of(path)
    lines[2], lines[3] = lines[3], lines[2]
    rewrite(path, lines)
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_truncated_tail_is_detected_and_blocks_appending(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 5)
    rewrite(path, lines_of(path)[:3])
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 4, 3)
    assert "truncated" in result.reason
    with pytest.raises(AuditIntegrityError, match="head"):
        AuditLog(path)


def test_truncated_to_empty(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 2)
    path.write_bytes(b"")
    assert not verify_audit_log(path).ok
    with pytest.raises(AuditIntegrityError):
        AuditLog(path)


def test_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 2)
    with path.open("ab") as handle:
        handle.write(b'{"seq":3,')
    result = verify_audit_log(path)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    with pytest.raises(AuditIntegrityError, match="middle of a line"):
        AuditLog(path)


def test_missing_head_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 3)
    (tmp_path / "audit.log.head").unlink()
    assert not verify_audit_log(path).ok
    with pytest.raises(AuditIntegrityError):
        AuditLog(path)


def test_interrupted_append_is_accepted_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 3)
    lines = lines_of(path)
    second = json.loads(lines[1])
    (tmp_path / "audit.log.head").write_text(f"2 {second['hash']}\n")  # crash before head
    assert verify_audit_log(path).ok
    with AuditLog(path) as log:
        assert log.last_seq == 3
        log.append(actor="olga", action="rotate", outcome="ok")
    result = verify_audit_log(path)
    assert (result.ok, result.entries, result.reason) == (True, 4, "ok")


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog(path), pytest.raises(AuditIntegrityError, match="open elsewhere"):
        AuditLog(path)


@pytest.mark.parametrize("key", sorted(FORBIDDEN_DETAIL_KEYS))
def test_identifier_detail_keys_are_refused(tmp_path: Path, key: str) -> None:
    with AuditLog(tmp_path / "audit.log") as log:
        with pytest.raises(ValueError) as caught:
            log.append(actor="alice", action="lookup", outcome="ok", details={key: CANARY})
        assert key in str(caught.value)
        assert CANARY not in str(caught.value)
        assert log.last_seq == 0
    assert CANARY.encode() not in (tmp_path / "audit.log").read_bytes()


@pytest.mark.parametrize(
    "details",
    [{"score": float("nan")}, {"nested": {"a": 1}}, {"items": [1, 2]}, {"": 1}, {"x": None}],
)
def test_bad_detail_values_are_refused(tmp_path: Path, details: dict[str, object]) -> None:
    with AuditLog(tmp_path / "audit.log") as log, pytest.raises(ValueError):
        log.append(actor="alice", action="lookup", outcome="ok", details=details)  # type: ignore[arg-type]


def test_required_fields(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.log") as log:
        with pytest.raises(ValueError, match="actor"):
            log.append(actor="", action="lookup", outcome="ok")
        with pytest.raises(ValueError, match="outcome"):
            log.append(actor="alice", action="lookup", outcome="")


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog(path) as log:

        def worker(number: int) -> None:
            for index in range(20):
                log.append(actor=f"t{number}", action="lookup", outcome="ok", details={"i": index})

        threads = [threading.Thread(target=worker, args=(number,)) for number in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result = verify_audit_log(path)
    assert (result.ok, result.entries) == (True, 80)


@settings(deadline=None, max_examples=40)
@given(
    count=st.integers(min_value=2, max_value=8),
    operation=st.sampled_from(["delete", "swap", "edit", "duplicate", "truncate"]),
    data=st.data(),
)
def test_any_single_tamper_is_detected(count: int, operation: str, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "audit.log"
        write_entries(path, count)
        lines = lines_of(path)
        index = data.draw(st.integers(min_value=0, max_value=count - 1))
        if operation == "delete":
            del lines[index]
        elif operation == "swap":
            other = data.draw(
                st.integers(min_value=0, max_value=count - 1).filter(lambda value: value != index)
            )
            lines[index], lines[other] = lines[other], lines[index]
        elif operation == "edit":
            lines[index] = lines[index].replace(b'"lookup"', b'"lookups"')
        elif operation == "duplicate":
            lines.insert(index, lines[index])
        else:
            lines = lines[:index]
        rewrite(path, lines)
        result = verify_audit_log(path)
        assert not result.ok
        assert result.first_bad_seq is not None and 1 <= result.first_bad_seq <= count + 1


# ---------------------------------------------------------------------------- group commit


class FsyncSpy:
    """Wraps ``os.fsync`` for one log: counts its fsyncs and how many lines each made durable."""

    def __init__(self, path: Path, *, delay: float = 0.0, fail_once: bool = False) -> None:
        self.path = path
        self.delay = delay
        self.fail_once = fail_once
        self.log_fsyncs = 0
        self.durable_lines = 0
        self.lock = threading.Lock()
        self.real_fsync = os.fsync

    def __call__(self, descriptor: int) -> None:
        is_log = self.path.exists() and os.fstat(descriptor).st_ino == self.path.stat().st_ino
        if is_log and self.fail_once:
            self.fail_once = False
            raise OSError(5, "simulated I/O error")
        if is_log and self.delay:
            time.sleep(self.delay)
        self.real_fsync(descriptor)
        if is_log:
            lines = self.path.read_bytes().count(b"\n")
            with self.lock:
                self.log_fsyncs += 1
                self.durable_lines = max(self.durable_lines, lines)


def run_threads(log: AuditLog, threads: int, per_thread: int, check: FsyncSpy | None) -> list[Any]:
    entries: list[Any] = []
    problems: list[str] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        for index in range(per_thread):
            entry = log.append(
                actor=f"t{number}", action="lookup", outcome="ok", details={"i": index}
            )
            if check is not None and check.durable_lines < entry.seq:
                problems.append(f"entry {entry.seq} returned before its fsync")
            with lock:
                entries.append(entry)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert problems == []
    return entries


def test_many_threads_one_valid_chain_no_lost_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog(path) as log:
        entries = run_threads(log, threads=16, per_thread=40, check=None)
    result = verify_audit_log(path)
    assert (result.ok, result.entries, result.reason) == (True, 640, "ok")
    written = [json.loads(line) for line in lines_of(path)]
    assert sorted((e.seq, e.hash) for e in entries) == [(w["seq"], w["hash"]) for w in written]
    assert sorted((e.actor, e.details["i"]) for e in entries) == sorted(
        (w["actor"], w["details"]["i"]) for w in written
    )


def test_append_returns_only_after_its_entry_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    spy = FsyncSpy(path, delay=0.002)
    monkeypatch.setattr("server.common.audit.os.fsync", spy)
    with AuditLog(path) as log:
        run_threads(log, threads=8, per_thread=10, check=spy)
        entry = log.append(actor="solo", action="lookup", outcome="ok")
        assert spy.durable_lines >= entry.seq == 81
    assert verify_audit_log(path).ok


def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.log"
    spy = FsyncSpy(path, delay=0.02)  # a slow disk: appends queue up behind each fsync
    monkeypatch.setattr("server.common.audit.os.fsync", spy)
    with AuditLog(path) as log:
        run_threads(log, threads=16, per_thread=5, check=spy)
    assert verify_audit_log(path).ok
    assert spy.log_fsyncs <= 80 // 4, f"{spy.log_fsyncs} fsyncs for 80 concurrent appends"


def test_head_lagging_by_a_group_is_accepted_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 10)
    fourth = json.loads(lines_of(path)[3])
    (tmp_path / "audit.log.head").write_text(f"4 {fourth['hash']}\n")  # crash before head
    result = verify_audit_log(path)
    assert (result.ok, result.entries) == (True, 10)
    assert "head lags" in result.reason
    with AuditLog(path) as log:
        assert log.last_seq == 10
        log.append(actor="olga", action="rotate", outcome="ok")
    result = verify_audit_log(path)
    assert (result.ok, result.entries, result.reason) == (True, 11, "ok")


def test_head_lagging_by_more_than_a_group_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, MAX_GROUP_ENTRIES + 2)
    first = json.loads(lines_of(path)[0])
    (tmp_path / "audit.log.head").write_text(f"1 {first['hash']}\n")
    assert not verify_audit_log(path).ok
    with pytest.raises(AuditIntegrityError, match="head"):
        AuditLog(path)


def test_head_naming_an_entry_the_log_does_not_hold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 6)
    (tmp_path / "audit.log.head").write_text(f"4 {'ab' * 32}\n")
    assert not verify_audit_log(path).ok
    with pytest.raises(AuditIntegrityError, match="head"):
        AuditLog(path)


def test_failed_write_refuses_this_and_later_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    write_entries(path, 2)
    monkeypatch.setattr("server.common.audit.os.fsync", FsyncSpy(path, fail_once=True))
    with AuditLog(path) as log:
        with pytest.raises(AuditIntegrityError, match="reopen"):
            log.append(actor=CANARY, action="lookup", outcome="ok")
        with pytest.raises(AuditIntegrityError, match="reopen") as refused:
            log.append(actor="alice", action="lookup", outcome="ok")
        assert CANARY not in str(refused.value)
    with AuditLog(path) as log:  # the line reached the file (only its fsync failed)
        assert log.last_seq == 3
    assert verify_audit_log(path).ok


def test_head_overwritten_in_place_names_the_last_entry_across_digit_growth(
    tmp_path: Path,
) -> None:
    """The head is replaced once per open log and then overwritten in place: sequential
    appends (one group each, so one head write each) must leave exactly ``"<seq> <hash>\\n"``
    of the last entry, also when seq grows a digit (9 -> 10) and after a reopen (whose first
    write replaces the file)."""
    path = tmp_path / "audit.log"
    head = tmp_path / "audit.log.head"
    with AuditLog(path, clock=fixed_clock) as log:
        for _ in range(11):
            entry = log.append(actor="alice", action="lookup", outcome="ok")
    assert entry.seq == 11
    assert head.read_text() == f"11 {entry.hash}\n"
    assert head.stat().st_mode & 0o777 == 0o600
    with AuditLog(path, clock=fixed_clock) as log:
        for _ in range(90):
            entry = log.append(actor="alice", action="lookup", outcome="ok")
    assert head.read_text() == f"101 {entry.hash}\n"
    result = verify_audit_log(path)
    assert result.ok and result.entries == 101


def test_a_new_log_and_its_head_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """A node's log holds its staff's free-text notes (which may name a child)."""
    old = os.umask(0o022)  # the usual umask, which would leave a plain open's file 0644
    try:
        path = tmp_path / "audit.jsonl"
        with AuditLog(path) as log:
            log.append(actor="alice", action="lookup", outcome="ok", details={"note": "s47"})
        for found in (path, path.with_name("audit.jsonl.head")):
            assert stat.S_IMODE(os.stat(found).st_mode) == 0o600, found.name
    finally:
        os.umask(old)
