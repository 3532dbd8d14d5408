"""A real agency node over mutual TLS on 127.0.0.1 (port 0), in this process, and a fake
matcher beside it: what the node, authorisation, revocation, health and audit tests share.

:func:`write_node_config` writes a node directory (the published test secret, a two-record
CSV holding the canary values of :data:`IDENTIFIER_VALUES`, a config) and ingests it;
:func:`start_node` and :func:`stop_node` run it. The fixtures ``matcher`` (module-scoped: the
fake matcher, the generated Matcher base class behind the real AuthInterceptor with
MATCHER_POLICY, recording what nodes send it) and ``fresh_node`` (a factory of nodes closed
after the test) need a ``pki`` fixture: a test module imports them to use them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from linkage.keys import TEST_SECRET_HEX
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.auth import MATCHER_POLICY, AuthInterceptor, Identity, current_identity
from server.common.pki import init_pki
from server.common.revocation import RevocationChecker
from server.common.tls import secure_channel, server_credentials, tls_files_for
from server.common.wire import request_references
from server.node.config import NodeConfig, load_node_config
from server.node.ingest import ingest_source
from server.node.publish import message_forms
from server.node.service import NodeRuntime, build_node
from server.node.store import NodeStore
from tests.helpers.matcher import tls_section

# Identifier values of the test records: none may appear in an audit line or status message.
CANARY_GIVEN = "Zebedee"
CANARY_FAMILY = "Quixotic"
CANARY_DOB = "17/09/2013"
CANARY_DOB_STORED = "2013-09-17"  # ingest stores a date in its canonical form
CANARY_ADDRESS = "99 Canary Wharf"
CANARY_NHS = "9434765919"
CANARY_LOCAL_ID = "LOCAL-ID-CANARY"
CSV = (
    "record_id,forename,surname,dob,postcode,nhs,address\n"
    f"{CANARY_LOCAL_ID},{CANARY_GIVEN},{CANARY_FAMILY},{CANARY_DOB},SW1A 1AA,"
    f"{CANARY_NHS},{CANARY_ADDRESS}\n"
    "c2,Amy,Smith,02/03/2014,B1 1AA,,\n"
)
IDENTIFIER_VALUES = (
    CANARY_GIVEN,
    CANARY_FAMILY,
    CANARY_DOB,
    CANARY_DOB_STORED,
    CANARY_ADDRESS,
    CANARY_NHS,
    CANARY_LOCAL_ID,
)


#: A lookup's identifiers (not a real child)
AMY = {"given_name": "Amy", "family_name": "Smith", "date_of_birth": "2/3/2014"}


# --------------------------------------------------------------------------- fake matcher


@dataclass
class MatcherLog:
    matches: list[tuple[Identity, jigsaw_pb2.MatchRequest]] = field(default_factory=list)
    published: list[jigsaw_pb2.PublishRequest] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (agency, reference) of the candidates every Match answers with
    answers: list[tuple[str, str]] = field(default_factory=lambda: [("health", "ab" * 16)])


class FakeMatcher(jigsaw_pb2_grpc.MatcherServicer):
    def __init__(self, log: MatcherLog) -> None:
        self.log = log

    def Match(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.log.lock:
            self.log.matches.append((current_identity(context), request))
            answers = list(self.log.answers)
        return jigsaw_pb2.MatchResponse(
            candidates=[
                jigsaw_pb2.Candidate(
                    agency=agency,
                    reference=reference,
                    band=jigsaw_pb2.PROBABILITY_BAND_HIGH,
                    evidence=[
                        jigsaw_pb2.FieldEvidence(
                            field="family_name", agreement=jigsaw_pb2.AGREEMENT_EXACT, weight=7.5
                        )
                    ],
                )
                for agency, reference in answers
            ]
        )

    def Publish(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        messages = list(request_iterator)
        with self.log.lock:
            self.log.published.extend(messages)
        received = sum(len(request_references(m)) for m in messages)
        forms = sum(message_forms(m) for m in messages)
        return jigsaw_pb2.PublishResponse(received=received, inserted=received, forms=forms)

    def Withdraw(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.log.lock:
            self.log.withdrawn.extend(request.references)
        return jigsaw_pb2.WithdrawResponse(withdrawn=len(request.references))


def matcher_revocations(pki: Path) -> RevocationChecker:
    return RevocationChecker.for_tls(tls_files_for(pki, "matcher"))


@pytest.fixture(scope="module")
def matcher(pki: Path) -> Iterator[tuple[str, MatcherLog]]:
    log = MatcherLog()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[AuthInterceptor(MATCHER_POLICY, revocations=matcher_revocations(pki))],
    )
    jigsaw_pb2_grpc.add_MatcherServicer_to_server(FakeMatcher(log), server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls_files_for(pki, "matcher")))
    server.start()
    yield f"localhost:{port}", log
    server.stop(grace=None).wait()


# --------------------------------------------------------------------------- node


def write_node_config(
    directory: Path,
    pki: Path,
    matcher_address: str,
    *,
    agency: str = "police",
    peers: str = "",
    limits: str = "",
    per_minute: int = 600,
    burst: int = 100,
    alert: int = 1000,
    disclosure: str = 'staff = ["given_name", "family_name", "date_of_birth", "address"]',
) -> NodeConfig:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "secret.hex").write_text(TEST_SECRET_HEX, "ascii")
    (directory / "police.csv").write_text(CSV, "utf-8")
    text = f"""
[node]
agency = "{agency}"
schema = "child"
secret_file = "secret.hex"
store = "police.sqlite"
audit_log = "police-audit.jsonl"
listen = "127.0.0.1:0"
matcher = "{matcher_address}"
{tls_section(pki, f"{agency}-node")}
[[source]]
kind = "csv"
path = "police.csv"
[source.columns]
local_id = "record_id"
given_name = "forename"
family_name = "surname"
date_of_birth = "dob"
postcode = "postcode"
nhs_number = "nhs"
[source.extra]
address = "address"
[disclosure]
{disclosure}
[peers]
{peers}
[rate_limits]
lookups_per_minute = {per_minute}
burst = {burst}
enumeration_alert_per_hour = {alert}
{limits}
"""
    (directory / "node.toml").write_text(text, "utf-8")
    config = load_node_config(directory / "node.toml")
    with NodeStore(config.store) as store:
        report = ingest_source(store, config.sources[0], config.schema)
        assert report.inserted == 2 and not report.rejected
    return config


@dataclass
class Node:
    config: NodeConfig
    runtime: NodeRuntime
    address: str

    def stub(self, pki: Path, who: str) -> jigsaw_pb2_grpc.AgencyNodeStub:
        channel = secure_channel(self.address, tls_files_for(pki, who))
        self.channels.append(channel)
        return jigsaw_pb2_grpc.AgencyNodeStub(channel)  # type: ignore[no-untyped-call]

    channels: list[grpc.Channel] = field(default_factory=list)

    def reference_of(self, local_id: str) -> str:
        with NodeStore(self.config.store) as store:
            row = store._conn.execute(
                "SELECT reference FROM records WHERE local_id = ?", (local_id,)
            ).fetchone()
        return str(row[0])

    def audit_lines(self) -> list[dict[str, Any]]:
        self.runtime.refusals.flush()  # the refused calls counted so far (nothing once closed)
        lines = self.config.audit_log.read_text("utf-8").splitlines()
        return [json.loads(line) for line in lines]


def served(node: Node) -> list[dict[str, Any]]:
    """The node's audit entries of calls it served (without the refused calls' counts)."""
    return [entry for entry in node.audit_lines() if entry["action"] != "refused"]


def start_node(config: NodeConfig) -> Node:
    runtime = build_node(config)
    runtime.server.start()
    return Node(config, runtime, f"localhost:{runtime.port}")


def stop_node(node: Node) -> None:
    for channel in node.channels:
        channel.close()
    node.runtime.stop()


@pytest.fixture(scope="module")
def node(
    pki: Path, matcher: tuple[str, MatcherLog], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    config = write_node_config(tmp_path_factory.mktemp("node"), pki, matcher[0])
    started = start_node(config)
    yield started
    stop_node(started)


@pytest.fixture
def fresh_node(pki: Path, tmp_path: Path) -> Iterator[Any]:
    """A factory for a node with its own config (rate limits, matcher address)."""
    started: list[Node] = []

    def make(matcher_address: str, **options: Any) -> Node:
        config = write_node_config(tmp_path / f"n{len(started)}", pki, matcher_address, **options)
        started.append(start_node(config))
        return started[-1]

    yield make
    for item in started:
        stop_node(item)


def assert_no_identifier(text: str) -> None:
    for value in IDENTIFIER_VALUES:
        assert value not in text


def look_up(
    node: Node, pki: Path, log: MatcherLog, who: str, answers: list[tuple[str, str]]
) -> None:
    """A lookup by ``who`` at ``node`` to which the (fake) matcher answers ``answers``."""
    with log.lock:
        held, log.answers = log.answers, answers
    try:
        node.stub(pki, who).Lookup(
            jigsaw_pb2.LookupRequest(
                identifiers=AMY, purpose_code="strategy_discussion", note="strategy meeting"
            ),
            timeout=10,
        )
    finally:
        with log.lock:
            log.answers = held


def node_pki(directory: Path) -> Path:
    """A test PKI for the node tests: police and health, staff alice and bob (police) and
    harriet (health), and an operator, olive."""
    init_pki(
        directory,
        agencies=["police", "health"],
        staff=[("alice", "police"), ("bob", "police"), ("harriet", "health")],
        operators=["olive"],
    )
    return directory
