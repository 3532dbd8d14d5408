"""Append-only, hash-chained audit log of lookups, disclosures and administrative actions.

Role: nodes and the matcher append one entry per lookup, disclosure, publish, link run and
refusal (who, when, what, the stated purpose, the outcome); an auditor runs
:func:`verify_audit_log` to prove nothing was edited, inserted, deleted, reordered or cut
off. Line format, hash chain and ``<path>.head`` sidecar: ``proto/FORMATS.md`` ("Audit log").

Invariants:

* an entry that :meth:`AuditLog.append` returned is on disk: appends are written by one
  writer thread per log, in sequence order, as groups (at most :data:`MAX_GROUP_ENTRIES`)
  sharing one ``fsync``, and the head is rewritten after each group;
* the head fails closed: a torn head, or one naming an entry the log does not hold or a
  later one than its last, is refused by the open and by :func:`verify_audit_log`; a log
  ahead of its head by at most one group (a crash between the two writes) is accepted and
  repaired on the next open;
* no identifier value (names, dates of birth, postcodes, NHS numbers, local record ids) is
  written: callers log references, counts and purposes, and ``details`` keys that are
  identifier field names (:data:`FORBIDDEN_DETAIL_KEYS`) are refused;
* a log is created readable by its owner only (0600), as its head is: a node's entries hold
  its staff's free-text notes;
* refused calls (role, rate limit, malformed) are not appended one by one: a
  :class:`server.common.refusals.RefusalTally` counts them and writes one ``refused`` entry
  per identity per interval.

The chain is unkeyed: it shows tampering by anyone who does not also rewrite every later
entry and the head. :mod:`server.common.anchor` has another party hold signed heads, against
which a truncated, wiped or rewritten log shows too (:meth:`AuditLog.durable_head`,
:func:`walk_chain`).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from linkage.errors import JigsawError

GENESIS_HASH = "0" * 64
#: At most this many entries share one fsync (and so the head may lag the log by this many).
MAX_GROUP_ENTRIES = 256
ENTRY_KEYS = frozenset(
    {"seq", "ts", "actor", "action", "purpose", "outcome", "details", "prev", "hash"}
)
FORBIDDEN_DETAIL_KEYS: frozenset[str] = frozenset(
    {
        "given_name",
        "middle_names",
        "family_name",
        "first_name",
        "last_name",
        "surname",
        "forename",
        "name",
        "full_name",
        "date_of_birth",
        "dob",
        "birth_date",
        "sex",
        "gender",
        "postcode",
        "address",
        "nhs_number",
        "local_id",
        "record_id",
        "identifiers",
    }
)

DetailValue = str | int | float | bool

logger = logging.getLogger(__name__)


class AuditIntegrityError(JigsawError):
    """The audit log on disk does not match its head or ends mid-line; refuse to append."""


@dataclass(frozen=True)
class AuditEntry:
    """One audit-log line, as written."""

    seq: int
    ts: str
    actor: str
    action: str
    purpose: str
    outcome: str
    details: Mapping[str, DetailValue]
    prev: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The entry as the JSON object written to the log."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "purpose": self.purpose,
            "outcome": self.outcome,
            "details": dict(self.details),
            "prev": self.prev,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AuditVerification:
    """Result of :func:`verify_audit_log`.

    ``entries`` counts the entries verified before the first problem (all of them when ok);
    ``first_bad_seq`` is the sequence number expected where the problem was found.
    """

    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The canonical UTF-8 JSON bytes that are hashed and written (proto/FORMATS.md)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_hash(entry_without_hash: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of an entry without its "hash" key."""
    return hashlib.sha256(canonical_json(entry_without_hash)).hexdigest()


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _format_ts(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_details(details: Mapping[str, DetailValue] | None) -> dict[str, DetailValue]:
    checked: dict[str, DetailValue] = {}
    for key, value in (details or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError("audit details keys must be non-empty strings")
        if key.lower() in FORBIDDEN_DETAIL_KEYS:
            raise ValueError(
                f"audit details key {key!r} is an identifier field name; audit entries must not "
                "carry identifier values"
            )
        if not isinstance(value, str | int | float | bool):
            raise ValueError(f"audit details key {key!r}: value must be str, int, float or bool")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"audit details key {key!r}: float value must be finite")
        checked[key] = value
    return checked


def _read_head(head_path: Path) -> tuple[int, str] | None:
    if not head_path.exists():
        return None
    parts = head_path.read_text(encoding="ascii").split()
    if len(parts) != 2 or not parts[0].isdigit():
        raise AuditIntegrityError(f"audit head file {head_path} is malformed")
    return int(parts[0]), parts[1]


def _read_last_lines(path: Path, count: int) -> list[bytes]:
    """The last ``count`` lines of ``path`` (fewer if it has fewer), oldest first, without
    their newlines, reading from the end."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return []
        handle.seek(size - 1)
        if handle.read(1) != b"\n":
            raise AuditIntegrityError(f"audit log {path} ends in the middle of a line")
        tail = b""
        position = size - 1  # the tail holds bytes [position, size - 1): no final newline
        while position > 0 and tail.count(b"\n") < count:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
        lines = tail.split(b"\n")
        if position > 0:
            lines = lines[1:]  # the first piece may be the end of an earlier line
        return lines[-count:]


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AuditLog:
    """An open, append-only audit log at ``path`` (plus its ``<path>.head`` sidecar).

    Thread-safe; concurrent appends share fsyncs (group commit, see the module docstring)
    through a writer thread that lives until :meth:`close`. One process at a time: the log
    file is locked (``flock``) while open. Opening an existing log reads its last lines and
    head to continue the chain, and refuses (:class:`AuditIntegrityError`) when they disagree,
    e.g. after the tail was cut off. After a failed write the log refuses every later append
    (reopen it: the open checks what reached the disk).
    """

    def __init__(self, path: Path, *, clock: Callable[[], datetime.datetime] = _utc_now) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._clock = clock
        # guards the chain state, the queue and the writer's progress; both conditions use it
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)  # the writer waits for work here
        self._written = threading.Condition(self._lock)  # appenders wait for their fsync here
        self._pending: list[tuple[int, str, bytes]] = []  # (seq, hash, line) not yet written
        self._closing = False
        self._failure: BaseException | None = None
        self._head_descriptor: int | None = None  # open once the head was replaced
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only when created (a node's entries hold its staff's free-text notes)
        self._file = os.fdopen(
            os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab"
        )
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise AuditIntegrityError(f"audit log {self.path} is open elsewhere") from None
        try:
            self._seq, self._last_hash = self._recover_tail()
        except BaseException:
            self._file.close()
            raise
        self._durable_seq, self._durable_hash = self._seq, self._last_hash
        self._has_head = self.head_path.exists()
        self._writer = threading.Thread(
            target=self._write_groups, name=f"audit-writer-{self.path.name}", daemon=True
        )
        self._writer.start()

    def _recover_tail(self) -> tuple[int, str]:
        last_lines = _read_last_lines(self.path, 1)
        head = _read_head(self.head_path)
        if not last_lines:
            if head is not None:
                raise AuditIntegrityError(f"audit log {self.path} is empty but its head is not")
            return 0, GENESIS_HASH
        seq, last_hash, _ = self._parse_tail_line(last_lines[0])
        if head == (seq, last_hash):
            return seq, last_hash
        if (head is None and seq == 1) or (head is not None and self._head_lags(head, seq)):
            self._write_head(seq, last_hash)  # a group was interrupted before its head
            return seq, last_hash
        raise AuditIntegrityError(
            f"audit log {self.path} does not match its head file (truncated or edited)"
        )

    def _parse_tail_line(self, line: bytes) -> tuple[int, str, str]:
        """(seq, hash, prev) of one log line; a malformed line is an integrity error."""
        try:
            entry = json.loads(line.decode("utf-8"))
            return int(entry["seq"]), str(entry["hash"]), str(entry["prev"])
        except (ValueError, KeyError, TypeError):
            raise AuditIntegrityError(
                f"a tail line of audit log {self.path} is malformed"
            ) from None

    def _head_lags(self, head: tuple[int, str], last_seq: int) -> bool:
        """Whether ``head`` names an entry at most one group before the last, chained to it."""
        head_seq, head_hash = head
        if not last_seq - MAX_GROUP_ENTRIES <= head_seq < last_seq:
            return False
        tail = [
            self._parse_tail_line(line)
            for line in _read_last_lines(self.path, 1 + last_seq - head_seq)
        ]
        if not tail or tail[0][:2] != (head_seq, head_hash):
            return False
        return all(
            (seq, prev) == (earlier_seq + 1, earlier_hash)
            for (earlier_seq, earlier_hash, _), (seq, _, prev) in itertools.pairwise(tail)
        )

    def _write_head(self, seq: int, last_hash: str) -> None:
        line = f"{seq} {last_hash}\n".encode("ascii")
        # The first write of an open log replaces the head atomically (temp file, fsync,
        # rename); later ones overwrite it in place, one sync instead of three. The line is
        # under 100 bytes, in the first sector, and never shorter than the one before, so an
        # overwrite replaces it whole; a torn sector write would read as a malformed head,
        # which the open and verify_audit_log refuse (fail closed, as SQLite's powersafe
        # overwrite assumes the same of the disk).
        if self._head_descriptor is not None:
            os.pwrite(self._head_descriptor, line, 0)
            os.fdatasync(self._head_descriptor)
            return
        self._replace_head(line)
        self._head_descriptor = os.open(self.head_path, os.O_WRONLY)

    def _replace_head(self, line: bytes) -> None:
        descriptor, temp_name = tempfile.mkstemp(
            dir=self.head_path.parent, prefix=f".{self.head_path.name}."
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, self.head_path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(self.head_path.parent)

    def _write_groups(self) -> None:
        """The writer thread: write queued lines a group at a time until closed and drained."""
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._queued.wait()
                if not self._pending:
                    return
                # a log without a head starts with a one-entry group, so that a missing head
                # is excused only for a one-entry log
                limit = MAX_GROUP_ENTRIES if self._has_head else 1
                group = self._pending[:limit]
                del self._pending[:limit]
            last_seq, last_hash, _ = group[-1]
            try:
                self._file.write(b"".join(line for _, _, line in group))
                self._file.flush()
                os.fsync(self._file.fileno())
            except BaseException as exc:
                self._fail(exc)
                return
            with self._lock:
                self._durable_seq, self._durable_hash = last_seq, last_hash
                self._written.notify_all()
            try:
                self._write_head(last_seq, last_hash)
            except BaseException as exc:
                self._fail(exc)
                return
            self._has_head = True

    def _fail(self, exc: BaseException) -> None:
        logger.error("audit log %s: write failed (%s); refusing further appends", self.path, exc)
        with self._lock:
            self._failure = exc
            self._pending.clear()
            self._written.notify_all()

    @property
    def last_seq(self) -> int:
        """Sequence number of the last entry (0 when empty)."""
        return self._seq

    def durable_head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry on disk: (0, :data:`GENESIS_HASH`) when empty. What
        :mod:`server.common.anchor` signs and hands to another party."""
        with self._lock:
            return self._durable_seq, self._durable_hash

    def append(
        self,
        *,
        actor: str,
        action: str,
        purpose: str = "",
        outcome: str,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEntry:
        """Append one entry durably and return it. Raises ValueError for a forbidden key.

        Returns once the entry is fsynced; raises :class:`AuditIntegrityError` if the write
        failed (this one or an earlier one).
        """
        for field_name, value, required in (
            ("actor", actor, True),
            ("action", action, True),
            ("purpose", purpose, False),
            ("outcome", outcome, True),
        ):
            if not isinstance(value, str) or (required and not value):
                raise ValueError(f"audit field {field_name!r} must be a non-empty string")
        checked = _check_details(details)
        with self._lock:
            if self._closing:
                raise ValueError("audit log is closed")
            self._raise_if_failed()
            body: dict[str, Any] = {
                "seq": self._seq + 1,
                "ts": _format_ts(self._clock()),
                "actor": actor,
                "action": action,
                "purpose": purpose,
                "outcome": outcome,
                "details": checked,
                "prev": self._last_hash,
            }
            digest = entry_hash(body)
            line = canonical_json({**body, "hash": digest}) + b"\n"
            self._seq, self._last_hash = body["seq"], digest
            self._pending.append((body["seq"], digest, line))
            self._queued.notify()
            while self._durable_seq < body["seq"] and self._failure is None:
                self._written.wait()
            if self._durable_seq < body["seq"]:
                self._raise_if_failed()
        return AuditEntry(
            seq=body["seq"],
            ts=body["ts"],
            actor=actor,
            action=action,
            purpose=purpose,
            outcome=outcome,
            details=MappingProxyType(checked),
            prev=body["prev"],
            hash=digest,
        )

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise AuditIntegrityError(
                f"audit log {self.path}: a write failed; reopen the log to continue"
            ) from self._failure

    def close(self) -> None:
        """Write what is queued, stop the writer and release the file (and its lock)."""
        with self._lock:
            self._closing = True
            self._queued.notify()
        if self._writer is not threading.current_thread():
            self._writer.join()
        with self._lock:
            if not self._file.closed:
                self._file.close()
            if self._head_descriptor is not None:
                os.close(self._head_descriptor)
                self._head_descriptor = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def verify_audit_log(path: Path) -> AuditVerification:
    """Check every entry's hash, sequence and chain link, and the head against the last entry.

    Detects an edited entry (hash mismatch), an inserted, deleted or reordered entry (sequence
    gap or chain break) and tail truncation (head names a later entry than the log's last).
    """
    path = Path(path)
    head_path = path.with_name(path.name + ".head")

    def bad(seq: int, reason: str) -> AuditVerification:
        return AuditVerification(ok=False, entries=seq - 1, first_bad_seq=seq, reason=reason)

    if not path.exists():
        return AuditVerification(ok=False, entries=0, first_bad_seq=None, reason="log missing")
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        lines_before = data.count(b"\n")
        return bad(lines_before + 1, "log ends in the middle of a line")
    hashes, problem = walk_chain(data)
    if problem is not None:
        return bad(*problem)
    expected_seq = len(hashes) + 1
    prev_hash = hashes[-1] if hashes else GENESIS_HASH
    try:
        head = _read_head(head_path)
    except AuditIntegrityError:
        return bad(expected_seq, "head file is malformed")
    last_seq = expected_seq - 1
    if head is None:
        if last_seq == 0:
            return AuditVerification(ok=True, entries=0, first_bad_seq=None, reason="empty log")
        if last_seq == 1:
            return AuditVerification(
                ok=True, entries=1, first_bad_seq=None, reason="ok; head lags (interrupted group)"
            )
        return bad(last_seq + 1, "head file missing")
    head_seq, head_hash = head
    if head == (last_seq, prev_hash):
        return AuditVerification(ok=True, entries=last_seq, first_bad_seq=None, reason="ok")
    if head_seq > last_seq:
        return bad(
            last_seq + 1, f"log truncated: head names entry {head_seq}, log ends at {last_seq}"
        )
    lags = last_seq - MAX_GROUP_ENTRIES <= head_seq < last_seq
    if lags and head_hash == _hash_of_entry(data, head_seq):
        return AuditVerification(
            ok=True,
            entries=last_seq,
            first_bad_seq=None,
            reason="ok; head lags (interrupted group)",
        )
    return bad(min(head_seq, last_seq) if head_seq >= 1 else 1, "head does not match the log")


def walk_chain(data: bytes) -> tuple[list[str], tuple[int, str] | None]:
    """The hashes of the entries of log bytes ``data`` that form a sound chain from the
    first, and the first problem after them as (entry number, reason), or None.

    Checks each entry's keys, hash, sequence number, link to the previous entry and
    canonical form; :func:`verify_audit_log` adds the head, :mod:`server.common.anchor` the
    heads held by another party.
    """
    hashes: list[str] = []
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        cut: tuple[int, str] | None = (data.count(b"\n") + 1, "log ends in the middle of a line")
    else:
        cut = None
    expected_seq, prev_hash = 1, GENESIS_HASH
    for line in data.splitlines():
        seq = expected_seq
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return hashes, (seq, "line is not valid JSON")
        if not isinstance(entry, dict) or set(entry) != ENTRY_KEYS:
            return hashes, (seq, "entry does not have exactly the audit keys")
        body = {key: value for key, value in entry.items() if key != "hash"}
        try:
            recomputed = entry_hash(body)
        except ValueError:
            return hashes, (seq, "entry cannot be canonicalised")
        if entry["seq"] != seq:
            return hashes, (seq, f"sequence break: expected {seq}, found {entry['seq']!r}")
        if entry["prev"] != prev_hash:
            return hashes, (seq, "chain break: prev does not match the previous entry's hash")
        if entry["hash"] != recomputed:
            return hashes, (seq, "hash mismatch: entry was edited")
        if canonical_json(entry) != line:
            return hashes, (seq, "line is not in canonical form")
        prev_hash = entry["hash"]
        hashes.append(prev_hash)
        expected_seq += 1
    return hashes, cut


def _hash_of_entry(data: bytes, seq: int) -> str | None:
    lines = data.splitlines()
    if not 1 <= seq <= len(lines):
        return None
    value = json.loads(lines[seq - 1].decode("utf-8"))["hash"]
    return value if isinstance(value, str) else None
