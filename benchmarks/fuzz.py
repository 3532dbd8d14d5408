"""Fuzzing the services and ingest, measured: malformed RPCs and malformed CSV rows.

Two targets, each driven by Hypothesis:

* RPCs: every RPC of the agency node and of the matcher, called through a generic channel
  call (raw bytes, unchecked by the client) with random field values, wrong lengths, huge
  repeated fields, and raw-byte mutations (truncated protobufs, random bytes, wrong wire
  types, invalid UTF-8, another RPC's message). The servers are real (:mod:`server.launcher`
  configs, loopback, mutual TLS from a fresh test PKI), each call made with a real identity's
  certificate, mostly one the method admits.
* CSV rows: good rows mixed with malformed ones (random bytes, stray quotes, other encodings,
  control and bidirectional characters, overlong cells, wrong column counts, formula-like
  names, impossible dates), ingested with :func:`server.node.ingest.ingest_source`.

Properties checked on every input:

* no crash: every call ends with a status in :data:`EXPECTED_CODES` (never ``UNKNOWN``,
  ``INTERNAL`` or a deadline), both servers still answer ``Status``, and ingest raises
  nothing (a broken header may raise :class:`server.node.ingest.SourceError`);
* no leak: no canary identifier (:data:`CANARIES`) planted in the input appears,
  case-insensitively, in a status message, a log record of either server, a line of either
  audit log, or an ingest problem or warning;
* no good row lost: every good row (:func:`good_row`) is stored with its values, and
  ``rows_read == inserted + updated + unchanged + superseded + rejected rows``.

Run: ``python -m benchmarks.fuzz --inputs 100000 --report`` (a JSON line on stdout, progress on
stderr; ``--report`` writes the ``fuzz`` section of benchmarks/RESULTS.md). The test suite
runs the same properties on a few hundred inputs (tests/benchmarks/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import tomli_w
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from linkage import synthetic
from linkage.encode import encode_records
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret
from linkage.normalise import NORMALISERS
from linkage.schema import Schema, load_schema
from proto.jigsaw.v1 import jigsaw_pb2
from server import launcher
from server.common.pki import init_pki
from server.common.purposes import DEFAULT_PURPOSE_CODES
from server.common.tls import secure_channel, tls_files_for
from server.matcher.config import parse_matcher_config
from server.matcher.service import MatcherRuntime, build_matcher
from server.node.config import NodeConfig, load_node_config
from server.node.ingest import IngestReport, SourceError, ingest_source
from server.node.service import NodeRuntime, build_node
from server.node.store import NodeStore

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- canaries

CANARY_GIVEN = "Zebedina"
CANARY_FAMILY = "Quixotesque"
CANARY_DOB = "17/09/2013"
CANARY_DOB_ISO = "2013-09-17"
CANARY_NHS = "9434765919"  # a valid NHS number (check digit 9)
CANARY_NHS_SPACED = "943 476 5919"
#: Every identifier value planted; none may come out anywhere but a response's own fields.
CANARIES = (CANARY_GIVEN, CANARY_FAMILY, CANARY_DOB, CANARY_DOB_ISO, CANARY_NHS, CANARY_NHS_SPACED)
_NEEDLES = tuple(c.lower() for c in CANARIES)

#: The statuses a call may end with: a refusal of some kind, or success.
EXPECTED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)
CALL_TIMEOUT_S = 30.0
SCHEMA_NAME = "child"


def leaked(text: str) -> list[str]:
    """The canaries found in ``text`` (case-insensitive)."""
    lowered = text.lower()
    return [needle for needle in _NEEDLES if needle in lowered]


# --------------------------------------------------------------------------- results


@dataclass
class Findings:
    """What a run saw: inputs tried, and every crash, leak and lost good row (described
    without the input's values, by RPC and code or by CSV line)."""

    rpc_calls: int = 0
    csv_files: int = 0
    csv_rows: int = 0
    csv_good_rows: int = 0
    crashes: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    good_rows_lost: int = 0
    count_mismatches: int = 0
    codes: Counter[str] = field(default_factory=Counter)

    @property
    def inputs(self) -> int:
        """RPC calls made and CSV rows written (each row is one fuzzed input)."""
        return self.rpc_calls + self.csv_rows

    def problems(self) -> list[str]:
        lost = [f"{self.good_rows_lost} good rows lost"] if self.good_rows_lost else []
        counts = (
            [f"{self.count_mismatches} ingests whose counts do not add up"]
            if self.count_mismatches
            else []
        )
        return self.crashes + self.leaks + lost + counts


# --------------------------------------------------------------------------- log capture


class CapturedLogs(logging.Handler):
    """Every log record of the process (root logger, every level), kept as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._lock_texts = threading.Lock()
        self._texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
        except Exception:  # a record whose arguments do not format: keep what it has
            text = f"{record.name}: {record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + "".join(logging.Formatter().formatException(record.exc_info))
        with self._lock_texts:
            self._texts.append(text)

    def take(self) -> list[str]:
        with self._lock_texts:
            texts, self._texts = self._texts, []
        return texts


@contextmanager
def captured_logs() -> Iterator[CapturedLogs]:
    handler = CapturedLogs()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class FileTail:
    """The text appended to a file since the last read (an audit log)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def take(self) -> str:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return ""
        self._offset += len(data)
        return data.decode("utf-8", "replace")


# --------------------------------------------------------------------------- federation

#: The canary child, as the police write it (demo column names: see client.launcher.COLUMN_NAMES).
CANARY_ROW = {
    "local_id": "canary-1",
    "given_name": CANARY_GIVEN,
    "middle_names": "",
    "family_name": CANARY_FAMILY,
    "date_of_birth": CANARY_DOB,
    "sex": "F",
    "postcode": "SW1A 1AA",
    "nhs_number": CANARY_NHS,
}
#: Children per agency in the federation's synthetic population (seeded).
POPULATION = 150
LIMITS = {
    "lookups_per_minute": 10_000_000,
    "burst": 10_000_000,
    "enumeration_alert_per_hour": 1000,
    "disclosures_per_minute": 10_000_000,
    "disclosure_burst": 10_000_000,
    "disclosure_alert_per_hour": 1000,
}
MATCH_LIMITS = {
    "matches_per_minute": 10_000_000,
    "burst": 10_000_000,
    "enumeration_alert_per_hour": 1000,
    "max_matches_per_hour": 10_000_000,
    "person_share": 1.0,
}
ANCHOR_LIMITS = {"anchors_per_minute": 10_000_000, "burst": 10_000_000, "alert_per_hour": 1000}


def _tls(pki: Path, name: str) -> dict[str, str]:
    tls = tls_files_for(pki, name)
    return {"ca_cert": str(tls.ca_cert), "cert": str(tls.cert), "key": str(tls.key)}


#: identity -> the services' methods it may call (the rest refuse it)
NODE_CALLERS = {
    "Lookup": ("alice",),
    "Disclose": ("alice", "health-node"),
    "Status": ("olga",),
    "AnchorAudit": ("olga",),
    "GetAnchors": ("olga",),
    "FetchLinked": ("olga",),
    "ListLinked": ("alice", "olga"),
    "ResolveReference": ("alice", "olga"),
}
MATCHER_CALLERS = {
    "Publish": ("police-node",),
    "Withdraw": ("police-node",),
    "Match": ("police-node",),
    "Link": ("olga",),
    "GetLinkResult": ("olga",),
    "GetLinkedRecords": ("police-node",),
    "Status": ("olga",),
    "AnchorHead": ("police-node",),
    "GetAnchors": ("olga",),
}
#: server-streaming methods (the rest answer once; Publish is client-streaming)
STREAMING = {("Matcher", "Link"), ("Matcher", "GetAnchors"), ("AgencyNode", "GetAnchors")}
IDENTITIES = ("alice", "harriet", "olga", "police-node", "health-node", "matcher")


class Federation:
    """A real matcher and a real police node on loopback, mutual TLS, in this process (so
    that their logs can be captured), with the police records (one of them the canary
    child) ingested and published; channels per identity."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = root / "pki"
        init_pki(
            self.pki,
            agencies=["police", "health"],
            staff=[("alice", "police"), ("harriet", "health")],
            operators=["olga"],
        )
        self.schema: Schema = load_schema(SCHEMA_NAME)
        self._stack = ExitStack()
        matcher_dir = root / "matcher"
        matcher_dir.mkdir()
        matcher_document = {
            "matcher": {
                "schema": SCHEMA_NAME,
                "key_version": 1,
                "store": "matcher.sqlite",
                "audit_log": "audit.jsonl",
                "listen": "127.0.0.1:0",
            },
            "tls": _tls(self.pki, "matcher"),
            "match_limits": MATCH_LIMITS,
            "anchor_limits": ANCHOR_LIMITS,
        }
        matcher_config = parse_matcher_config(tomli_w.dumps(matcher_document), base_dir=matcher_dir)
        self.matcher: MatcherRuntime = build_matcher(matcher_config)
        self.matcher.server.start()
        self._stack.callback(self._stop_matcher)
        self.matcher_address = f"127.0.0.1:{self.matcher.port}"
        population = synthetic.generate_population(POPULATION, seed=15)
        configs = {}
        for agency in ("police", "health"):
            configs[agency] = self._write_node_config(root / agency, agency)
            csv_path = root / agency / f"{agency}.csv"
            launcher.write_agency_csv(population.agencies[agency], csv_path, bad_row=False)
            if agency == "police":
                with open(csv_path, "a", newline="", encoding="utf-8") as handle:
                    csv.writer(handle).writerow(CANARY_ROW.values())
            with NodeStore(configs[agency].store) as store:
                ingest_source(store, configs[agency].sources[0], self.schema)
            self._publish(configs[agency])
        self.node_config = configs["police"]
        with NodeStore(self.node_config.store) as store:
            self.references = sorted(
                str(row[0]) for row in store._conn.execute("SELECT reference FROM records")
            )[:20]
        with secure_channel(self.matcher_address, tls_files_for(self.pki, "olga")) as channel:
            link = channel.unary_stream("/jigsaw.v1.Matcher/Link")
            for _ in link(jigsaw_pb2.LinkRequest().SerializeToString(), timeout=120):
                pass  # a first link fits the model that Match scores with
        self.node: NodeRuntime = build_node(self.node_config)
        self.node.server.start()
        self._stack.callback(self._stop_node)
        self.node_address = f"127.0.0.1:{self.node.port}"
        self.audit_tails = [
            FileTail(self.node_config.audit_log),
            FileTail(matcher_config.audit_log),
        ]
        self._channels: dict[tuple[str, str], grpc.Channel] = {}
        self._stack.callback(self._close_channels)
        self.fingerprint = self.schema.fingerprint()
        self.valid_queries = self._valid_records()

    def _write_node_config(self, directory: Path, agency: str) -> NodeConfig:
        directory.mkdir()
        (directory / "secret.hex").write_text(TEST_SECRET_HEX, "ascii")
        document = {
            "node": {
                "agency": agency,
                "schema": SCHEMA_NAME,
                "secret_file": "secret.hex",
                "store": "store.sqlite",
                "audit_log": "audit.jsonl",
                "listen": "127.0.0.1:0",
                "matcher": self.matcher_address,
            },
            "tls": _tls(self.pki, f"{agency}-node"),
            "source": [
                {
                    "kind": "csv",
                    "path": f"{agency}.csv",
                    "day_first": True,
                    "columns": dict(launcher.COLUMN_NAMES[agency]),
                }
            ],
            "disclosure": {"staff": ["given_name", "family_name", "date_of_birth", "postcode"]},
            "rate_limits": LIMITS,
        }
        launcher.write_toml(directory / "node.toml", f"Fuzz node: {agency}", document)
        return load_node_config(directory / "node.toml")

    def _publish(self, config: NodeConfig) -> None:
        from proto.jigsaw.v1 import jigsaw_pb2_grpc
        from server.node.config import read_linkage_keys
        from server.node.publish import publish_pending

        with (
            NodeStore(config.store) as store,
            secure_channel(self.matcher_address, config.tls) as channel,
        ):
            publish_pending(
                store,
                self.schema,
                read_linkage_keys(config),
                jigsaw_pb2_grpc.MatcherStub(channel),  # type: ignore[no-untyped-call]
                batch_size=100,
            )

    def _valid_records(self) -> list[bytes]:
        """Serialised EncodedRecords of real encodings (the canary child among them), for
        requests that get past the first checks."""
        from server.common.wire import encoded_to_proto

        columns: dict[str, list[str | None]] = {n: [None, None] for n in self.schema.input_names}
        columns.update(
            given_name=[CANARY_GIVEN, "Amy"],
            family_name=[CANARY_FAMILY, "Smith"],
            date_of_birth=[CANARY_DOB_ISO, "2014-03-02"],
            sex=["f", "f"],
            nhs_number=[CANARY_NHS, None],
        )
        batch = encode_records(self.schema, KeySet(LinkageSecret.for_tests(), 1), columns)
        return [r.SerializeToString() for r in encoded_to_proto(batch, ["ab" * 16, "cd" * 16])]

    def channel(self, service: str, identity: str) -> grpc.Channel:
        key = (service, identity)
        if key not in self._channels:
            address = self.node_address if service == "AgencyNode" else self.matcher_address
            self._channels[key] = secure_channel(address, tls_files_for(self.pki, identity))
        return self._channels[key]

    def call(self, service: str, method: str, identity: str, payloads: Sequence[bytes]) -> Any:
        """Send raw ``payloads`` (one, or a stream for Publish) to ``service/method`` as
        ``identity``; return (code, details)."""
        channel = self.channel(service, identity)
        path = f"/jigsaw.v1.{service}/{method}"
        try:
            if service == "Matcher" and method == "Publish":
                channel.stream_unary(path)(iter(payloads), timeout=CALL_TIMEOUT_S)
            elif (service, method) in STREAMING:
                for _ in channel.unary_stream(path)(payloads[0], timeout=CALL_TIMEOUT_S):
                    pass
            else:
                channel.unary_unary(path)(payloads[0], timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    def serving(self) -> bool:
        """Both servers answer Status (as the operator)."""
        empty = b""
        return all(
            self.call(service, "Status", "olga", [empty])[0] == grpc.StatusCode.OK
            for service in ("AgencyNode", "Matcher")
        )

    def _close_channels(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def _stop_matcher(self) -> None:
        self.matcher.stop()

    def _stop_node(self) -> None:
        self.node.stop()

    def close(self) -> None:
        self._stack.close()


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


# --------------------------------------------------------------------------- CSV strategies

CSV_HEADER = ("id", "forename", "surname", "dob", "sex", "postcode", "nhs", "address")
CSV_COLUMNS = {
    "local_id": "id",
    "given_name": "forename",
    "family_name": "surname",
    "date_of_birth": "dob",
    "sex": "sex",
    "postcode": "postcode",
    "nhs_number": "nhs",
}
GOOD_NAMES = (
    CANARY_GIVEN,
    CANARY_FAMILY,
    "Amelia",
    "José",
    "Müller",
    "Nguyễn",
    "O'Brien",
    "van der Berg",
    "Smith, Jr",
    'Jo "JJ" Jones',
    "Zoë-Ann",
)
GOOD_POSTCODES = ("SW1A 1AA", "B1 1AA", "M1 1AE", "EH1 1YZ", "")
GOOD_SEXES = ("M", "F", "male", "Female", "1", "2", "")


def _nhs_number(first_nine: int) -> str | None:
    digits = f"{first_nine:09d}"
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11
    if check == 10:
        return None
    return digits + str(0 if check == 11 else check)


@st.composite
def good_row(draw: st.DrawFn, number: int) -> list[str]:
    """A row that ingest must store: one line, every value valid (or empty).

    On one line because that is ingest's contract: a runaway quote never takes a row written
    on one line (one closing inside a later row's own multi-line value can take that row's
    first line: :func:`server.node.ingest._read_csv`)."""
    name = st.one_of(
        st.sampled_from(GOOD_NAMES),
        st.text("abcdefghijklmnopqrstuvwxyzé", min_size=3, max_size=20).map(str.title),
    )
    year, month, day = (
        draw(st.integers(2000, 2020)),
        draw(st.integers(1, 12)),
        draw(st.integers(1, 28)),
    )
    dob = draw(
        st.sampled_from(
            [f"{day:02d}/{month:02d}/{year}", f"{year}-{month:02d}-{day:02d}", CANARY_DOB, ""]
        )
    )
    nhs = _nhs_number(draw(st.integers(100_000_000, 999_999_999))) or ""
    return [
        f"good-{number:05d}",
        draw(name),
        draw(name),
        dob,
        draw(st.sampled_from(GOOD_SEXES)),
        draw(st.sampled_from(GOOD_POSTCODES)),
        draw(st.sampled_from([nhs, CANARY_NHS, CANARY_NHS_SPACED, ""])),
        draw(st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), max_size=60)),
    ]


_UNSAFE = ("\x00", "\x1b[31m", "\u202e", "\u2028", "\x07", "\ufeff", "\u200b", "\ue000")


@st.composite
def bad_line(draw: st.DrawFn, number: int) -> bytes:
    """A malformed row (as bytes, newline excluded; some kinds span several lines)."""
    canary = draw(st.sampled_from(CANARIES))
    base = [f"bad-{number:05d}", canary, CANARY_FAMILY, CANARY_DOB, "F", "B1 1AA", CANARY_NHS, ""]
    kind = draw(st.integers(0, 11))
    column = draw(st.integers(0, len(base) - 1))
    if kind == 0:  # random bytes
        return draw(st.binary(max_size=120)) + canary.encode()
    if kind == 1:  # a quote that opens and never closes
        base[column] = '"' + base[column]
        return ",".join(base).encode()
    if kind == 2:  # quotes in the wrong places
        base[column] = draw(st.sampled_from(['a"b', '"a"b', 'a""', '"', '""x"'])) + canary
        return ",".join(base).encode()
    if kind == 3:  # another encoding
        text = _row_text([*base[:1], "Zoë " + canary, *base[2:]])
        encoding = draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-le"]))
        return text.encode(encoding)
    if kind == 4:  # control, bidirectional, invisible characters
        base[column] = canary + draw(st.sampled_from(_UNSAFE)) + canary
        return _row_text(base).encode("utf-8", "surrogatepass")
    if kind == 5:  # overlong cell
        base[column] = canary + "x" * draw(st.sampled_from([257, 5000, 200_000]))
        return _row_text(base).encode()
    if kind == 6:  # missing columns
        return _row_text(base[: draw(st.integers(1, len(base) - 1))]).encode()
    if kind == 7:  # extra columns
        return _row_text(base + [canary] * draw(st.integers(1, 5))).encode()
    if kind == 8:  # a formula for a name
        base[1] = draw(st.sampled_from("=+-@")) + "cmd|' /C calc'!A0 " + canary
        return _row_text(base).encode()
    if kind == 9:  # an impossible or future date of birth
        base[3] = draw(st.sampled_from(["31/02/2013", "2099-01-01", "13/13/2013", canary]))
        base[1] = canary
        return _row_text(base).encode()
    if kind == 10:  # no local id
        base[0] = draw(st.sampled_from(["", "   "]))
        return _row_text(base).encode()
    # random text cells, any characters
    cells = draw(st.lists(st.text(max_size=30), min_size=1, max_size=10))
    return _row_text([*cells, canary]).encode("utf-8", "surrogatepass")


def _row_text(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()


@dataclass
class CsvCase:
    data: bytes
    good: dict[str, list[str]]  # local id -> the row as written
    rows_written: int


@st.composite
def csv_file(draw: st.DrawFn) -> CsvCase:
    """A CSV file: the mapped header, then good and malformed rows in any order."""
    newline = draw(st.sampled_from(["\n", "\r\n"])).encode()
    lines = [(b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + ",".join(CSV_HEADER).encode()]
    good: dict[str, list[str]] = {}
    kinds = draw(st.lists(st.booleans(), min_size=1, max_size=24))
    for number, is_good in enumerate(kinds):
        if is_good:
            row = draw(good_row(number))
            good[row[0]] = row
            lines.append(_row_text(row).encode())
        else:
            lines.append(draw(bad_line(number)))
    data = newline.join(lines) + (newline if draw(st.booleans()) else b"")
    return CsvCase(data, good, len(kinds))


def _stored_name(written: str, kind: str) -> str:
    """What the store holds for a good name cell: the value as written, or nothing for a
    null marker ("Null", "N/A", ...), which is a missing value."""
    return "" if NORMALISERS[kind](written, field=kind) is None else written.strip()


def check_csv(
    workdir: Path, schema: Schema, logs: CapturedLogs, findings: Findings, case: CsvCase
) -> list[str]:
    """Ingest one CSV into a fresh store and check it; returns the problems found."""
    from server.node.config import SourceConfig

    findings.csv_files += 1
    findings.csv_rows += case.rows_written
    findings.csv_good_rows += len(case.good)
    number = findings.csv_files
    path = workdir / f"fuzz-{number}.csv"
    store_path = workdir / f"fuzz-{number}.sqlite"
    path.write_bytes(case.data)
    source = SourceConfig(
        kind="csv",
        path=path,
        table="",
        day_first=True,
        columns=CSV_COLUMNS,
        extra={"address": "address"},
    )
    problems: list[str] = []
    report: IngestReport | None = None
    try:
        with NodeStore(store_path) as store:
            try:
                report = ingest_source(store, source, schema)
            except SourceError as exc:
                problems.append("crash: ingest refused the file (a good header)")
                texts = [str(exc)]
            else:
                texts = [f"{p.field} {p.reason}" for p in report.rejected + report.warnings]
            stored = {
                str(local_id): json.loads(fields)
                for local_id, fields in store._conn.execute("SELECT local_id, fields FROM records")
            }
    except Exception as exc:
        problems.append(f"crash: ingest raised {type(exc).__name__}")
        findings.crashes.append(problems[-1])
        return problems
    finally:
        path.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(store_path) + suffix).unlink(missing_ok=True)
    if problems:
        findings.crashes.extend(problems)
    for text in texts + logs.take():
        if leaked(text):
            problems.append("leak: a canary in an ingest problem or log record")
            findings.leaks.append(problems[-1])
    lost = [
        local_id
        for local_id, row in case.good.items()
        if local_id not in stored
        or (stored[local_id].get("given_name") or "") != _stored_name(row[1], "name")
        or (stored[local_id].get("family_name") or "") != _stored_name(row[2], "family_name")
    ]
    if lost:
        findings.good_rows_lost += len(lost)
        problems.append(f"{len(lost)} good rows lost")
    if report is not None:
        outcome = (
            report.inserted
            + report.updated
            + report.unchanged
            + report.superseded
            + report.rejected_rows
        )
        if report.rows_read != outcome or report.inserted != len(stored):
            findings.count_mismatches += 1
            problems.append(
                f"counts: {report.rows_read} read, {outcome} accounted for, "
                f"{report.inserted} inserted, {len(stored)} stored"
            )
    return problems


# --------------------------------------------------------------------------- runs


def hypothesis_settings(examples: int, *, search: bool) -> settings:
    """``search``: a benchmark's plain generation (no shrinking, nothing stored); otherwise
    the test suite's derandomised run, shrinking a failure to a small example."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not search,
        phases=[Phase.generate] if search else [Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


@contextmanager
def fuzz_workdir() -> Iterator[Path]:
    """A scratch directory, in memory where the machine has one (stores are fsynced)."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() else None
    directory = Path(tempfile.mkdtemp(prefix="jigsaw-fuzz-", dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_rpcs(fed: Federation, logs: CapturedLogs, findings: Findings, examples: int) -> None:
    @seed(15)
    @hypothesis_settings(examples, search=True)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        check_rpc(fed, logs, findings, data.draw(rpc_request(fed)))

    run()


def run_csvs(
    workdir: Path, schema: Schema, logs: CapturedLogs, findings: Findings, examples: int
) -> None:
    @seed(15)
    @hypothesis_settings(examples, search=True)
    @given(csv_file())
    def run(case: CsvCase) -> None:
        check_csv(workdir, schema, logs, findings, case)

    run()


def run_fuzz(
    inputs: int, *, rpc_share: float = 0.5, progress: Callable[[str], None] | None = None
) -> tuple[Findings, float]:
    """Fuzz about ``inputs`` inputs (RPC calls and CSV rows, ``rpc_share`` of them RPCs);
    returns the findings and the seconds taken. Hypothesis runs in batches so that progress
    can be reported; every batch uses the same seed, and the servers' state moves on."""
    findings = Findings()
    started = time.perf_counter()
    rpc_target = round(inputs * rpc_share)
    csv_target = inputs - rpc_target
    batch = 5000
    with fuzz_workdir() as workdir, captured_logs() as logs:
        fed = Federation(workdir / "federation")
        try:
            logs.take()
            while findings.rpc_calls < rpc_target:
                before = findings.rpc_calls
                run_rpcs(fed, logs, findings, min(batch, rpc_target - findings.rpc_calls))
                if progress:
                    progress(
                        f"rpc: {findings.rpc_calls} calls, {len(findings.problems())} problems"
                    )
                if findings.rpc_calls == before:
                    break
            serving = fed.serving()
        finally:
            fed.close()
        if not serving:
            findings.crashes.append("crash: a server stopped answering Status")
        schema = load_schema(SCHEMA_NAME)
        csv_dir = workdir / "csv"
        csv_dir.mkdir()
        while findings.csv_rows < csv_target:
            before = findings.csv_rows
            files = min(batch, (csv_target - findings.csv_rows) // 5 + 1)
            run_csvs(csv_dir, schema, logs, findings, files)
            if progress:
                progress(
                    f"csv: {findings.csv_files} files, {findings.csv_rows} rows, "
                    f"{len(findings.problems())} problems"
                )
            if findings.csv_rows == before:
                break
    return findings, time.perf_counter() - started


def report_rows(findings: Findings, seconds: float) -> list[dict[str, object]]:
    return [
        {
            "inputs tried": findings.inputs,
            "RPC calls": findings.rpc_calls,
            "CSV files": findings.csv_files,
            "CSV rows": findings.csv_rows,
            "good CSV rows": findings.csv_good_rows,
            "crashes": len(findings.crashes),
            "identifier leaks": len(findings.leaks),
            "good rows lost": findings.good_rows_lost,
            "count mismatches": findings.count_mismatches,
            "seconds": round(seconds),
        }
    ]


DESCRIPTION = (
    "Malformed RPCs to every method of a real matcher and police node (mutual TLS on "
    "loopback; random field values, wrong lengths, huge repeated fields, truncated and "
    "mutated protobufs, invalid UTF-8, wrong wire types) and malformed CSV files (random "
    "bytes, stray quotes, other encodings, control characters, overlong cells, missing and "
    "extra columns) mixed with good rows, generated with Hypothesis (see benchmarks/fuzz.py). "
    "Inputs = RPC calls + CSV rows. A crash is a status outside OK, INVALID_ARGUMENT, "
    "PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, NOT_FOUND, a server that "
    "stops answering, or an ingest exception; a leak is a planted canary identifier (name, "
    "date of birth, NHS number) in a status message, log record, audit line or ingest "
    "problem; a good row is lost when it is not stored with its values; counts must satisfy "
    "read = stored + superseded + rejected."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--inputs", type=int, default=10_000, help="RPC calls + CSV rows")
    parser.add_argument("--rpc-share", type=float, default=0.5)
    parser.add_argument("--report", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    logging.getLogger("hypothesis").setLevel(logging.WARNING)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    findings, seconds = run_fuzz(args.inputs, rpc_share=args.rpc_share, progress=progress)
    rows = report_rows(findings, seconds)
    print(json.dumps({**rows[0], "problems": findings.problems()[:20]}))
    if args.report:
        from benchmarks.report import write_table_section

        detail = ""
        if findings.problems():
            detail = "\n\nProblems seen (first 20):\n\n" + "\n".join(
                f"- {p}" for p in findings.problems()[:20]
            )
        write_table_section(
            "fuzz", "Fuzzing: malformed RPCs and CSV rows", "benchmarks.fuzz", argv,
            DESCRIPTION + detail, rows,
        )  # fmt: skip
    return 0 if not findings.problems() else 1


if __name__ == "__main__":
    raise SystemExit(main())
