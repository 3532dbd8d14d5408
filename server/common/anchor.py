"""Audit heads anchored with another party: signed heads, receipts, and checks against them.

Role: a hash chain (:mod:`server.common.audit`) shows an edit, but a host that rewrites the
whole chain and its head, cuts entries off the end, or wipes the log with its head, leaves a
log that checks out on its own. So each party's head is also held, signed by the log's owner,
by a party the owner cannot reach:

1. An agency node signs its durable head with its certificate key and sends it to the
   matcher (``Matcher.AnchorHead``): every :data:`ANCHOR_INTERVAL_S` when it moved, at
   shutdown, and on an operator's demand (``AgencyNode.AnchorAudit``).
2. The matcher checks it, keeps it with its own signed receipt in its *witnessed* file,
   audits an ``audit_anchor`` entry, and answers the receipt and its own signed head.
3. The node checks both, keeps the receipt and the matcher's head. So each node holds the
   matcher's heads (the matcher dials no node).

Statements, signatures and the receipts/witnessed files: ``proto/FORMATS.md`` ("Anchored
heads").

Invariants: a statement is believed only if its certificate was issued by the federation CA,
its signature verifies and the identity it names is the certificate's; revocation is not
checked (a head signed before a revocation stays evidence). A witness accepts a head only
from the identity that signed it and compares it with the last it holds: a lower count is
``regressed``, the same count with another hash ``conflict``; both are kept, audited and
logged. Heads carry counts, hashes, identity names and times only.

Contract: :func:`verify_against_anchors` checks a log against its owner's heads and reports,
by entry number, a rewrite, a truncation, a wipe and a missing log, besides the local problems
of :func:`server.common.audit.walk_chain`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from linkage.errors import JigsawError
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.audit import AuditLog, canonical_json, walk_chain
from server.common.auth import Identity, identity_from_certificate
from server.common.tls import TlsFiles

logger = logging.getLogger(__name__)

HEAD_TYPE = "jigsaw.audit.head.v1"
HEAD_KEYS = frozenset({"type", "owner", "agency", "role", "seq", "hash", "ts"})
RECEIPT_KEYS = frozenset({"type", "witness", "agency", "role", "head_sha256", "ts"})
_TS = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
RECEIPT_TYPE = "jigsaw.audit.receipt.v1"
#: Seconds between a node's anchorings (when its head moved).
ANCHOR_INTERVAL_S = 300.0
ANCHOR_TIMEOUT_S = 5.0
#: Receipts per GetAnchors page.
ANCHORS_PAGE = 200
#: What a witness makes of a head, compared with the last it holds of that owner.
CHECK_OK, CHECK_REGRESSED, CHECK_CONFLICT = "ok", "regressed", "conflict"


class AnchorError(JigsawError):
    """A signed head or receipt is malformed, not signed by its certificate's key, its
    certificate not issued by the federation CA, or it names another identity."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _identity_json(identity: Identity) -> dict[str, str]:
    return {"agency": identity.agency, "role": identity.role}


@dataclass(frozen=True)
class Signed:
    """A statement, its signature and the PEM certificate whose key made it."""

    statement: bytes
    signature: bytes
    certificate: bytes

    def to_proto(self) -> jigsaw_pb2.SignedStatement:
        return jigsaw_pb2.SignedStatement(
            statement=self.statement, signature=self.signature, certificate=self.certificate
        )

    @classmethod
    def from_proto(cls, message: jigsaw_pb2.SignedStatement) -> Signed:
        return cls(bytes(message.statement), bytes(message.signature), bytes(message.certificate))

    def to_json(self) -> dict[str, str]:
        return {
            "statement": self.statement.decode("utf-8"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "certificate": self.certificate.decode("ascii"),
        }

    @classmethod
    def from_json(cls, value: Any) -> Signed:
        try:
            return cls(
                value["statement"].encode("utf-8"),
                base64.b64decode(value["signature"], validate=True),
                value["certificate"].encode("ascii"),
            )
        except (KeyError, TypeError, AttributeError, ValueError, binascii.Error):
            raise AnchorError("a signed statement is malformed") from None


@dataclass(frozen=True)
class Receipt:
    """An owner's signed head and a witness's signed receipt for it."""

    head: Signed
    receipt: Signed

    def to_proto(self) -> jigsaw_pb2.AuditReceipt:
        return jigsaw_pb2.AuditReceipt(head=self.head.to_proto(), receipt=self.receipt.to_proto())

    @classmethod
    def from_proto(cls, message: jigsaw_pb2.AuditReceipt) -> Receipt:
        return cls(Signed.from_proto(message.head), Signed.from_proto(message.receipt))

    def to_line(self) -> bytes:
        return canonical_json({"head": self.head.to_json(), "receipt": self.receipt.to_json()})

    @classmethod
    def from_line(cls, line: bytes) -> Receipt:
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise AnchorError("a receipt line is not JSON") from None
        if not isinstance(value, dict):
            raise AnchorError("a receipt line is not a JSON object")
        return cls(Signed.from_json(value.get("head")), Signed.from_json(value.get("receipt")))


@dataclass(frozen=True)
class Head:
    """A verified head: whose log, how many entries, the last entry's hash, when."""

    owner: Identity
    seq: int
    hash: str
    ts: str


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose two signatures and certificates verified."""

    head: Head
    witness: Identity
    received_ts: str


class Signer:
    """Signs statements with one identity's certificate key (its TLS key)."""

    def __init__(self, certificate: bytes, key: ec.EllipticCurvePrivateKey) -> None:
        identity = identity_from_certificate(certificate)
        if identity is None:
            raise AnchorError("the signing certificate carries no Jigsaw identity")
        self.certificate = certificate
        self.identity = identity
        self._key = key

    @classmethod
    def from_tls(cls, tls: TlsFiles) -> Signer:
        _, certificate, key_pem = tls.read()
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AnchorError(f"{tls.key} is not an EC private key")
        return cls(certificate, key)

    def sign(self, statement: dict[str, Any]) -> Signed:
        data = canonical_json(statement)
        return Signed(data, self._key.sign(data, ec.ECDSA(hashes.SHA256())), self.certificate)

    def sign_head(self, seq: int, chain_hash: str) -> Signed:
        """This identity's head: ``seq`` entries, the last with hash ``chain_hash``."""
        return self.sign(
            {
                "type": HEAD_TYPE,
                "owner": self.identity.name,
                **_identity_json(self.identity),
                "seq": seq,
                "hash": chain_hash,
                "ts": _now(),
            }
        )

    def sign_receipt(self, head: Signed) -> Receipt:
        """This identity's receipt for ``head`` (verified by the caller)."""
        statement = {
            "type": RECEIPT_TYPE,
            "witness": self.identity.name,
            **_identity_json(self.identity),
            "head_sha256": hashlib.sha256(head.statement).hexdigest(),
            "ts": _now(),
        }
        return Receipt(head, self.sign(statement))


def load_ca(path: Path) -> x509.Certificate:
    """The federation CA certificate at ``path``."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _verify_signed(
    signed: Signed, ca: x509.Certificate, kind: str, name_key: str
) -> tuple[Identity, dict[str, Any]]:
    try:
        certificate = x509.load_pem_x509_certificate(signed.certificate)
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise AnchorError(f"the {kind}'s certificate is not one the federation CA issued") from None
    identity = identity_from_certificate(signed.certificate)
    public_key = certificate.public_key()
    if identity is None or not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise AnchorError(f"the {kind}'s certificate carries no Jigsaw identity")
    try:
        public_key.verify(signed.signature, signed.statement, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AnchorError(f"the {kind}'s signature does not verify") from None
    try:
        statement = json.loads(signed.statement.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AnchorError(f"the {kind} statement is not JSON") from None
    head = kind == "head"
    if (
        not isinstance(statement, dict)
        or set(statement) != (HEAD_KEYS if head else RECEIPT_KEYS)
        or statement["type"] != (HEAD_TYPE if head else RECEIPT_TYPE)
        or not _TS.fullmatch(str(statement["ts"]))
    ):
        raise AnchorError(f"the {kind} statement is not a {kind} (keys, type or ts)")
    named = (statement.get(name_key), statement.get("agency"), statement.get("role"))
    if named != (identity.name, identity.agency, identity.role):
        raise AnchorError(f"the {kind} names another identity than its certificate")
    return identity, statement


def verify_head(signed: Signed, ca: x509.Certificate) -> Head:
    """The head in ``signed``; :class:`AnchorError` unless it is sound (proto/FORMATS.md)."""
    owner, statement = _verify_signed(signed, ca, "head", "owner")
    seq, chain_hash, ts = statement.get("seq"), statement.get("hash"), statement.get("ts")
    if (
        not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 1
        or not isinstance(chain_hash, str)
        or not _HEX64.fullmatch(chain_hash)
        or not isinstance(ts, str)
    ):
        raise AnchorError("the head statement lacks a sound seq, hash or ts")
    return Head(owner, seq, chain_hash, ts)


def verify_receipt(receipt: Receipt, ca: x509.Certificate) -> VerifiedReceipt:
    """The head and witness of ``receipt``; :class:`AnchorError` unless both are sound and
    the receipt names this head."""
    head = verify_head(receipt.head, ca)
    witness, statement = _verify_signed(receipt.receipt, ca, "receipt", "witness")
    if statement.get("head_sha256") != hashlib.sha256(receipt.head.statement).hexdigest():
        raise AnchorError("the receipt is for another head")
    received = statement.get("ts")
    return VerifiedReceipt(head, witness, received if isinstance(received, str) else "")


class ReceiptFile:
    """An append-only JSONL file of receipts (proto/FORMATS.md); thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @staticmethod
    def receipts_of(audit_log: Path) -> ReceiptFile:
        """The file of receipts for the heads of ``audit_log``'s owner."""
        return ReceiptFile(Path(audit_log).with_name(Path(audit_log).name + ".receipts.jsonl"))

    @staticmethod
    def witnessed_of(audit_log: Path) -> ReceiptFile:
        """The file of other parties' heads held by ``audit_log``'s owner."""
        return ReceiptFile(Path(audit_log).with_name(Path(audit_log).name + ".witnessed.jsonl"))

    def append(self, receipt: Receipt) -> int:
        """Append one receipt durably; returns the byte offset of its line."""
        line = receipt.to_line() + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                offset = os.lseek(descriptor, 0, os.SEEK_END)
                os.write(descriptor, line)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        return offset

    def read(self) -> list[Receipt]:
        """Every well-formed receipt in the file (none when it does not exist), oldest first;
        a malformed line is skipped with a warning (signatures are checked by the reader)."""
        return [receipt for _, receipt in self.scan()]

    def scan(self) -> Iterator[tuple[int, Receipt]]:
        """(byte offset, receipt) of every well-formed line, oldest first, read line by line."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            offset = 0
            for number, line in enumerate(handle, start=1):
                try:
                    yield offset, Receipt.from_line(line.rstrip(b"\n"))
                except AnchorError:
                    logger.warning("%s: line %d is not a receipt; skipped", self.path, number)
                offset += len(line)

    def read_at(self, offsets: Iterable[int]) -> list[Receipt]:
        """The receipts whose lines start at ``offsets`` (as :meth:`scan` or :meth:`append`
        gave them); a line that no longer parses there is skipped with a warning."""
        receipts: list[Receipt] = []
        offsets = list(offsets)
        if not offsets:
            return receipts  # the file need not exist yet
        with open(self.path, "rb") as handle:
            for offset in offsets:
                handle.seek(offset)
                try:
                    receipts.append(Receipt.from_line(handle.readline().rstrip(b"\n")))
                except AnchorError:
                    logger.warning("%s: no receipt at byte %d any more; skipped", self.path, offset)
        return receipts


def receipts_for(receipts: Iterable[Receipt], owner: str, ca: x509.Certificate) -> list[Receipt]:
    """The receipts of ``receipts`` whose head is ``owner``'s and verifies."""
    kept = []
    for receipt in receipts:
        try:
            if verify_receipt(receipt, ca).head.owner.name == owner:
                kept.append(receipt)
        except AnchorError:
            continue
    return kept


def pages(receipts: list[Receipt]) -> Iterator[jigsaw_pb2.GetAnchorsResponse]:
    """``receipts`` as GetAnchors pages of at most :data:`ANCHORS_PAGE`."""
    for start in range(0, len(receipts), ANCHORS_PAGE):
        yield jigsaw_pb2.GetAnchorsResponse(
            receipts=[r.to_proto() for r in receipts[start : start + ANCHORS_PAGE]]
        )


class Witness:
    """Holds other parties' heads: checks each, receipts it, keeps both in a witnessed file.

    Remembers the last head held of each owner (read from the file at start) to tell a head
    that went back (``regressed``) or changed in place (``conflict``) from one that moved on,
    and where each owner's receipts are in the file, so that answering for one owner reads
    that owner's lines only.
    """

    def __init__(self, signer: Signer, ca: x509.Certificate, witnessed: ReceiptFile) -> None:
        self._signer = signer
        self._ca = ca
        self.file = witnessed
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, str]] = {}
        #: per owner, the byte offsets of the receipts of its heads that verified when read
        self._offsets: dict[str, list[int]] = {}
        for offset, receipt in witnessed.scan():
            try:
                head = verify_receipt(receipt, ca).head
            except AnchorError:
                continue
            self._last[head.owner.name] = (head.seq, head.hash)
            self._offsets.setdefault(head.owner.name, []).append(offset)

    def hold(self, signed: Signed, caller: Identity | None = None) -> tuple[Receipt, Head, str]:
        """Receipt ``signed`` (sent by ``caller``, which must be its owner when given), keep
        it, and return (receipt, head, check) with check one of ok, regressed, conflict."""
        head = verify_head(signed, self._ca)
        if caller is not None and head.owner != caller:
            raise AnchorError("the head is signed by another identity than the caller")
        receipt = self._signer.sign_receipt(signed)
        with self._lock:
            last = self._last.get(head.owner.name)
            check = CHECK_OK
            if last is not None and head.seq < last[0]:
                check = CHECK_REGRESSED
            elif last is not None and head.seq == last[0] and head.hash != last[1]:
                check = CHECK_CONFLICT
            offset = self.file.append(receipt)
            self._last[head.owner.name] = (head.seq, head.hash)
            self._offsets.setdefault(head.owner.name, []).append(offset)
        if check != CHECK_OK:
            logger.warning(
                "audit head of %s %s: entry %d, the last held was entry %d",
                head.owner.name, check, head.seq, last[0] if last else 0,
            )  # fmt: skip
        return receipt, head, check

    def held(self, owner: str) -> list[Receipt]:
        """The receipts held for ``owner``'s heads, oldest first: only that owner's lines are
        read (by offset) and checked again, not the whole file."""
        with self._lock:
            offsets = list(self._offsets.get(owner, ()))
        return receipts_for(self.file.read_at(offsets), owner, self._ca)


class Anchorer:
    """A node's side: sends its head to the matcher, keeps the receipt, holds the matcher's.

    :meth:`start` anchors every ``interval_s`` (when the head moved) on a daemon thread;
    :meth:`close` stops it and anchors once more (at shutdown). Failures are logged, never
    raised into the node's serving.
    """

    def __init__(
        self,
        audit: AuditLog,
        signer: Signer,
        ca: x509.Certificate,
        matcher: jigsaw_pb2_grpc.MatcherStub,
        *,
        interval_s: float = ANCHOR_INTERVAL_S,
    ) -> None:
        self._audit = audit
        self._signer = signer
        self._ca = ca
        self._matcher = matcher
        self._interval_s = interval_s
        self.receipts = ReceiptFile.receipts_of(audit.path)
        self.witness = Witness(signer, ca, ReceiptFile.witnessed_of(audit.path))
        self._lock = threading.Lock()  # one anchoring at a time
        self._anchored: tuple[int, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def anchor_now(self) -> tuple[Receipt | None, int]:
        """Anchor the durable head with the matcher unless it was anchored already; the
        receipt (None when there was nothing new) and the head's entry count. Raises
        grpc.RpcError or :class:`AnchorError`."""
        with self._lock:
            seq, chain_hash = self._audit.durable_head()
            if seq == 0 or self._anchored == (seq, chain_hash):
                return None, seq
            head = self._signer.sign_head(seq, chain_hash)
            response = self._matcher.AnchorHead(
                jigsaw_pb2.AnchorHeadRequest(head=head.to_proto()), timeout=ANCHOR_TIMEOUT_S
            )
            receipt = Receipt.from_proto(response.receipt)
            verified = verify_receipt(receipt, self._ca)
            if receipt.head != head or verified.witness.role != "matcher":
                raise AnchorError("the matcher's receipt is not for the head sent")
            self.receipts.append(receipt)
            self._anchored = (seq, chain_hash)
            if response.HasField("matcher_head"):
                matcher_head = Signed.from_proto(response.matcher_head)
                if verify_head(matcher_head, self._ca).owner.role != "matcher":
                    raise AnchorError("the matcher's head is not signed by a matcher")
                _, held, check = self.witness.hold(matcher_head)
                if check != CHECK_OK:  # rare: its own entry does not make the next anchoring
                    self._audit.append(
                        actor=held.owner.name,
                        action="audit_anchor",
                        outcome=check,
                        details={"owner_seq": held.seq},
                    )
            return receipt, seq

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._try_anchor()

    def _try_anchor(self) -> None:
        try:
            self.anchor_now()
        except (grpc.RpcError, AnchorError) as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else type(exc).__name__
            logger.warning("audit anchoring with the matcher failed (%s); will retry", code)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-anchor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the periodic anchoring and anchor the final head (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._try_anchor()


@dataclass(frozen=True)
class AnchorVerification:
    """Result of :func:`verify_against_anchors`; ``first_bad_seq`` as in
    :class:`server.common.audit.AuditVerification`; ``anchored_seq`` the highest head held."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str
    anchored_seq: int
    heads: int


def verify_against_anchors(
    path: Path, receipts: Iterable[Receipt], *, owner: str, ca: x509.Certificate
) -> AnchorVerification:
    """Check the log at ``path`` against the heads of ``owner`` in ``receipts`` (those that
    verify; others are ignored) and its own chain; see the module docstring."""
    heads: list[tuple[Head, Identity]] = []
    for receipt in receipts:
        try:
            verified = verify_receipt(receipt, ca)
        except AnchorError:
            continue
        if verified.head.owner.name == owner:
            heads.append((verified.head, verified.witness))
    heads.sort(key=lambda pair: pair[0].seq)
    count = len(heads)
    top = heads[-1][0].seq if heads else 0

    def result(ok: bool, entries: int, first_bad: int | None, reason: str) -> AnchorVerification:
        return AnchorVerification(ok, entries, first_bad, reason, top, count)

    if not heads:
        return result(False, 0, None, f"no verifiable head of {owner} is held")
    top_witness = heads[-1][1].name
    path = Path(path)
    if not path.exists():
        return result(False, 0, 1, f"log missing; {top_witness} holds a head at entry {top}")
    hashes, problem = walk_chain(path.read_bytes())
    sound = len(hashes)
    matched = 0
    for head, witness in heads:
        if head.seq > sound:
            break
        if hashes[head.seq - 1] != head.hash:
            return result(
                False,
                matched,
                matched + 1,
                f"rewritten: entries 1 to {matched} match the heads held, but entry "
                f"{head.seq} differs from the head {witness.name} holds; the change lies in "
                f"entries {matched + 1} to {head.seq}",
            )
        matched = head.seq
    if problem is not None:
        return result(
            False, sound, problem[0], f"{problem[1]}; {top_witness} holds a head at entry {top}"
        )
    if top > sound:
        what = "wiped: the log is empty" if sound == 0 else f"truncated: the log ends at {sound}"
        return result(False, sound, sound + 1, f"{what}; {top_witness} holds a head at entry {top}")
    return result(True, sound, None, f"matches {count} heads held, up to entry {top}")
