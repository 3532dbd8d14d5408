"""Malformed RPCs: Hypothesis strategies for every method, and the property each call must keep."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from benchmarks.fuzz.common import (
    CANARIES,
    CANARY_DOB,
    CANARY_FAMILY,
    CANARY_GIVEN,
    CANARY_NHS_SPACED,
    EXPECTED_CODES,
    CapturedLogs,
    Findings,
    leaked,
)
from benchmarks.fuzz.federation import IDENTITIES, MATCHER_CALLERS, NODE_CALLERS, Federation
from proto.jigsaw.v1 import jigsaw_pb2
from server.common.purposes import DEFAULT_PURPOSE_CODES

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- RPC strategies

_TEXT = st.text(max_size=40)
#: text a person could type an identifier into: often a canary, alone or inside other text
IDENTIFYING_TEXT = st.one_of(
    st.sampled_from([*CANARIES, f"{CANARY_GIVEN} {CANARY_FAMILY}"]),
    st.builds(lambda a, c, b: a + c + b, _TEXT, st.sampled_from(CANARIES), _TEXT),
    _TEXT,
    st.text(min_size=200, max_size=5000).map(lambda t: t + CANARY_FAMILY),
)
#: free text the audit log records by design, so no canaries: a lookup's ``note``, a
#: disclosure's purpose, a relaying node's ``on_behalf_of`` person (the node keeps those words
#: in its own audit log on purpose; the matcher never receives them). Canaries go into every
#: other field a person could type an identifier into, and into the raw bytes.
FREE_TEXT = st.one_of(
    st.just("strategy meeting"),
    st.just("strategy meeting"),
    _TEXT,
    st.text(min_size=400, max_size=3000),
    st.just(""),
)
PURPOSE_CODE = st.one_of(
    st.sampled_from(DEFAULT_PURPOSE_CODES), st.sampled_from(DEFAULT_PURPOSE_CODES), IDENTIFYING_TEXT
)
CANARY_QUERY = {
    "given_name": CANARY_GIVEN,
    "family_name": CANARY_FAMILY,
    "date_of_birth": CANARY_DOB,
    "sex": "F",
    "nhs_number": CANARY_NHS_SPACED,
}


@st.composite
def _subset(draw: st.DrawFn, values: dict[str, str]) -> dict[str, str]:
    keys = draw(st.lists(st.sampled_from(sorted(values)), min_size=1, unique=True))
    return {key: values[key] for key in keys}


HEX_REFERENCE = st.text("0123456789abcdef", min_size=32, max_size=32)
UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1)
FILTER_LENGTHS = (0, 1, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 127, 128, 129, 256)


def _sized_bytes(draw: st.DrawFn) -> bytes:
    size = draw(st.one_of(st.sampled_from(FILTER_LENGTHS), st.integers(0, 300)))
    return draw(st.binary(min_size=size, max_size=size))


@st.composite
def _references(draw: st.DrawFn, known: Sequence[str]) -> str:
    reference: str = draw(st.one_of(st.sampled_from(known), HEX_REFERENCE, IDENTIFYING_TEXT))
    return reference


@st.composite
def _header(draw: st.DrawFn, fingerprint: str) -> jigsaw_pb2.EncodingHeader:
    return jigsaw_pb2.EncodingHeader(
        schema_fingerprint=draw(st.one_of(st.just(fingerprint), IDENTIFYING_TEXT)),
        key_version=draw(st.one_of(st.just(1), UINT32)),
    )


@st.composite
def _encoded_record(
    draw: st.DrawFn, valid: Sequence[bytes], known: Sequence[str]
) -> jigsaw_pb2.EncodedRecord:
    record = jigsaw_pb2.EncodedRecord()
    if draw(st.integers(0, 2)):
        record.ParseFromString(draw(st.sampled_from(valid)))
        mutation = draw(st.integers(0, 9))
        if mutation == 1 and record.field_filters:
            index = draw(st.integers(0, len(record.field_filters) - 1))
            record.field_filters[index] = record.field_filters[index][:-1]
        elif mutation == 2:
            record.field_filters.append(_sized_bytes(draw))
        elif mutation == 3:
            record.reference = draw(_references(known))
        elif mutation == 4:
            record.record_filter = _sized_bytes(draw)
        elif mutation == 5:
            del record.block_keys[:]
            record.block_keys.extend(draw(st.lists(UINT64, max_size=20)))
        return record
    record.reference = draw(_references(known))
    for _ in range(draw(st.integers(0, 12))):
        record.field_filters.append(_sized_bytes(draw))
    record.record_filter = _sized_bytes(draw)
    record.block_keys.extend(draw(st.lists(UINT64, max_size=12)))
    record.salt_tags.extend(draw(st.lists(UINT64, max_size=6)))
    return record


@st.composite
def _columns(draw: st.DrawFn, known: Sequence[str]) -> jigsaw_pb2.EncodedColumns:
    rows = draw(st.integers(0, 6))
    return jigsaw_pb2.EncodedColumns(
        references=draw(st.lists(_references(known), min_size=rows, max_size=rows + 1)),
        field_filters=[_sized_bytes(draw) for _ in range(draw(st.integers(0, 12)))],
        field_present=_sized_bytes(draw),
        record_filters=_sized_bytes(draw),
        block_keys=_sized_bytes(draw),
        salt_tags=_sized_bytes(draw),
        form_of=draw(st.lists(_references(known), max_size=rows)),
    )


def _huge_references(draw: st.DrawFn) -> list[str]:
    """A repeated field of many entries: past the per-call bounds, sometimes past 4 MiB."""
    count = draw(st.sampled_from([1_001, 10_001, 150_000]))
    return [draw(HEX_REFERENCE)] * count


@st.composite
def rpc_request(draw: st.DrawFn, fed: Federation) -> tuple[str, str, str, list[bytes]]:
    """(service, method, identity, serialised request messages) of one malformed call."""
    service, method = draw(
        st.sampled_from(
            [("AgencyNode", m) for m in NODE_CALLERS] + [("Matcher", m) for m in MATCHER_CALLERS]
        )
    )
    callers = (NODE_CALLERS if service == "AgencyNode" else MATCHER_CALLERS)[method]
    identity = draw(
        st.one_of(st.sampled_from(callers), st.sampled_from(IDENTITIES))
        if draw(st.integers(0, 9)) == 0
        else st.sampled_from(callers)
    )
    known = fed.references
    messages: list[Any]
    if method == "Lookup":
        names = st.sampled_from(fed.schema.input_names)
        keys = st.one_of(names, names, names, IDENTIFYING_TEXT)
        identifiers = draw(st.dictionaries(keys, IDENTIFYING_TEXT, max_size=6))
        if draw(st.booleans()):  # the canary child, as a person would type it, or most of it
            identifiers = {**draw(_subset(CANARY_QUERY)), **identifiers}
        messages = [
            jigsaw_pb2.LookupRequest(
                identifiers=identifiers,
                max_candidates=draw(st.one_of(st.just(0), UINT32)),
                purpose_code=draw(PURPOSE_CODE),
                note=draw(FREE_TEXT),
            )
        ]
    elif method == "Disclose":
        messages = [
            jigsaw_pb2.DiscloseRequest(
                reference=draw(_references(known)),
                purpose_code=draw(PURPOSE_CODE),
                note=draw(FREE_TEXT),
                priority=draw(st.sampled_from(["", "red", "amber", "green"]) | FREE_TEXT),
                on_behalf_of=draw(FREE_TEXT),
            )
        ]
    elif method == "Status":
        messages = [
            jigsaw_pb2.NodeStatusRequest()
            if service == "AgencyNode"
            else jigsaw_pb2.MatcherStatusRequest()
        ]
    elif method == "Publish":
        messages = [
            jigsaw_pb2.PublishRequest(
                header=draw(_header(fed.fingerprint)) if draw(st.integers(0, 4)) else None,
                columns=draw(_columns(known)) if draw(st.booleans()) else None,
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
    elif method == "Withdraw":
        references = (
            _huge_references(draw)
            if draw(st.integers(0, 30)) == 0
            else draw(st.lists(_references(known), max_size=10))
        )
        messages = [jigsaw_pb2.WithdrawRequest(references=references)]
    elif method == "Match":
        queries = draw(st.lists(_encoded_record(fed.valid_queries, known), max_size=4))
        if draw(st.integers(0, 30)) == 0:
            queries = queries * draw(st.sampled_from([100, 20_000]))
        messages = [
            jigsaw_pb2.MatchRequest(
                header=draw(_header(fed.fingerprint)) if draw(st.integers(0, 4)) else None,
                max_candidates=draw(UINT32),
                on_behalf_of=draw(st.one_of(st.just("alice"), st.just("alice"), FREE_TEXT)),
                queries=queries,
                purpose_code=draw(PURPOSE_CODE),
            )
        ]
    elif method == "Link":
        # a valid threshold (0 included: the default) runs a whole link: one call in a
        # hundred, so that the run stays fast
        valid = draw(st.integers(0, 99)) == 0
        messages = [
            jigsaw_pb2.LinkRequest(
                min_probability=draw(
                    st.floats(0.5, 0.99)
                    if valid
                    else st.one_of(
                        st.floats(max_value=-1e-300),
                        st.floats(min_value=1.0),
                        st.sampled_from([math.nan, math.inf, -math.inf]),
                    )
                )
            )
        ]
    elif method == "AnchorHead":
        messages = [
            jigsaw_pb2.AnchorHeadRequest(
                head=jigsaw_pb2.SignedStatement(
                    statement=draw(st.binary(max_size=300)),
                    signature=draw(st.binary(max_size=80)),
                    certificate=draw(st.binary(max_size=300)),
                )
            )
        ]
    elif method == "GetAnchors":
        messages = [jigsaw_pb2.GetAnchorsRequest(owner=draw(IDENTIFYING_TEXT))]
    elif method == "AnchorAudit":
        messages = [jigsaw_pb2.AnchorAuditRequest()]
    elif method == "FetchLinked":
        messages = [
            jigsaw_pb2.FetchLinkedRequest(
                result_id=draw(st.one_of(HEX_REFERENCE, IDENTIFYING_TEXT))
            )
        ]
    elif method == "ListLinked":
        messages = [
            jigsaw_pb2.ListLinkedRequest(page_size=draw(UINT32), page_token=draw(IDENTIFYING_TEXT))
        ]
    elif method == "ResolveReference":
        messages = [
            jigsaw_pb2.ResolveReferenceRequest(
                reference=draw(_references(known)), purpose=draw(FREE_TEXT)
            )
        ]
    elif method == "GetLinkedRecords":
        messages = [
            jigsaw_pb2.GetLinkedRecordsRequest(
                result_id=draw(st.one_of(HEX_REFERENCE, IDENTIFYING_TEXT)),
                page_size=draw(UINT32),
                page_token=draw(IDENTIFYING_TEXT),
            )
        ]
    else:  # GetLinkResult
        messages = [
            jigsaw_pb2.GetLinkResultRequest(
                result_id=draw(st.one_of(HEX_REFERENCE, IDENTIFYING_TEXT)),
                page_size=draw(UINT32),
                page_token=draw(IDENTIFYING_TEXT),
            )
        ]
    payloads = [m.SerializeToString() for m in messages] or [b""]
    return service, method, identity, [draw(_mutated(p)) for p in payloads]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@st.composite
def _mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    """``payload`` as it is (mostly), or broken at the byte level."""
    kind = draw(st.integers(0, 12))
    if kind <= 5:
        return payload
    if kind == 6 and payload:  # truncated
        return payload[: draw(st.integers(0, len(payload) - 1))]
    if kind == 7:  # random bytes, sometimes with a canary inside
        noise = draw(st.binary(max_size=200))
        return noise + draw(st.sampled_from(CANARIES)).encode() if draw(st.booleans()) else noise
    if kind == 8:  # a field with the wrong wire type (varint, fixed64, length, fixed32); no
        # canary here: it could land in a free-text field that is audited by design
        number = draw(st.integers(1, 8))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        body = {
            0: _varint(draw(UINT64)),
            1: draw(st.binary(min_size=8, max_size=8)),
            2: _varint(8) + draw(st.binary(min_size=8, max_size=8)),
            5: draw(st.binary(min_size=4, max_size=4)),
        }[wire]
        return payload + _varint(number << 3 | wire) + body
    if kind == 9:  # a string field (field 1 of most requests) holding invalid UTF-8
        bad = b"\xff\xfe" + CANARY_GIVEN.encode() + b"\xc3"
        return _varint(1 << 3 | 2) + _varint(len(bad)) + bad + payload
    if kind == 10:  # a length prefix that runs past the end
        return payload + _varint(2 << 3 | 2) + _varint(draw(st.integers(1, 2**31)))
    if kind == 11:  # another RPC's message (a lookup's identifiers, say)
        other = jigsaw_pb2.LookupRequest(
            identifiers={"given_name": CANARY_GIVEN, "date_of_birth": CANARY_DOB},
            purpose_code="s47_enquiry",
        )
        return other.SerializeToString()
    return payload + draw(st.binary(min_size=1, max_size=50))  # trailing junk


# --------------------------------------------------------------------------- RPC property


def check_rpc(
    fed: Federation,
    logs: CapturedLogs,
    findings: Findings,
    case: tuple[str, str, str, list[bytes]],
) -> list[str]:
    """Make one call and check it; returns the problems found (also added to ``findings``)."""
    service, method, identity, payloads = case
    code, details = fed.call(service, method, identity, payloads)
    findings.rpc_calls += 1
    findings.codes[f"{service}/{method} {code.name}"] += 1
    name = f"{service}/{method} as {identity}"
    problems: list[str] = []
    if code not in EXPECTED_CODES:
        problems.append(f"crash: {name} ended {code.name}")
        findings.crashes.append(problems[-1])
    for where, texts in (
        ("status", [details]),
        ("log", logs.take()),
        ("audit", [tail.take() for tail in fed.audit_tails]),
    ):
        for text in texts:
            if leaked(text):
                problems.append(f"leak: {name}: a canary in a {where} ({code.name})")
                findings.leaks.append(problems[-1])
    if findings.rpc_calls % 200 == 0 and not fed.serving():
        problems.append(f"crash: a server stopped answering Status after {name}")
        findings.crashes.append(problems[-1])
    return problems
