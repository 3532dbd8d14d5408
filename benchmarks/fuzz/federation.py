"""The fuzzed federation: a real matcher and police node on loopback with mutual TLS."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import tomli_w

from benchmarks.fuzz.common import (
    CALL_TIMEOUT_S,
    CANARY_DOB,
    CANARY_DOB_ISO,
    CANARY_FAMILY,
    CANARY_GIVEN,
    CANARY_NHS,
    SCHEMA_NAME,
    FileTail,
)
from linkage import synthetic
from linkage.encode import encode_records
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret
from linkage.schema import Schema, load_schema
from proto.jigsaw.v1 import jigsaw_pb2
from server import launcher
from server.common.pki import init_pki
from server.common.tls import secure_channel, tls_files_for
from server.matcher.config import parse_matcher_config
from server.matcher.service import MatcherRuntime, build_matcher
from server.node.config import NodeConfig, load_node_config
from server.node.ingest import ingest_source
from server.node.service import NodeRuntime, build_node
from server.node.store import NodeStore

logger = logging.getLogger(__name__)

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
