"""A running federation for tests: the demo layout of :mod:`server.launcher` (a matcher and
the four agencies' nodes, each its own process on loopback with mutual TLS), a small seeded
synthetic population ingested and published, and TLS files per identity.

Built by the ``federation`` fixture of ``tests/conftest.py`` once per session (per xdist
worker); tests that change the federation (kill a process, republish, revoke) build their
own with :func:`start_federation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from linkage import synthetic
from linkage.keys import LinkageSecret
from proto.jigsaw.v1 import jigsaw_pb2_grpc
from server.common.pki import UNIT_AGENCY, init_pki, server_name
from server.common.tls import TlsFiles, secure_channel, tls_files_for
from server.launcher import (
    AGENCIES,
    OPERATOR,
    STAFF,
    Service,
    node_addresses,
    start_service,
    stop_services,
    wait_ready,
    write_agency_csv,
    write_matcher_config,
    write_node_config,
)
from server.node.config import load_node_config, read_linkage_keys
from server.node.ingest import ingest_source
from server.node.publish import publish_pending
from server.node.store import NodeStore


@dataclass
class LiveFederation:
    """A started federation under ``root`` (the launcher's layout)."""

    root: Path
    population: synthetic.SyntheticData
    matcher: Service
    nodes: dict[str, Service] = field(default_factory=dict)
    node_configs: dict[str, Path] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def services(self) -> list[Service]:
        return [self.matcher, *self.nodes.values()]

    def tls(self, identity: str) -> TlsFiles:
        """The TLS files of ``identity`` (``alice``, ``olivia``, ``police-node``, ...)."""
        return tls_files_for(self.pki, identity)

    def stop(self) -> list[tuple[str, int]]:
        return stop_services(self.services)


def _init(root: Path, children: int, seed: int) -> synthetic.SyntheticData:
    init_pki(root / "pki", agencies=list(AGENCIES), staff=list(STAFF), operators=[OPERATOR])
    (root / "secret.hex").write_text(LinkageSecret.for_tests().to_hex(), "ascii")
    population = synthetic.generate_population(children, seed=seed)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for agency in AGENCIES:
        write_agency_csv(
            population.agencies[agency], root / "data" / f"{agency}.csv", bad_row=False
        )
    return population


def ingest_and_publish(config_path: Path) -> None:
    """``jigsaw ingest`` and ``jigsaw publish`` of one node, in this process."""
    config = load_node_config(config_path)
    with NodeStore(config.store) as store:
        for source in config.sources:
            ingest_source(store, source, config.schema)
        channel = secure_channel(
            config.matcher, config.tls, expect=server_name("matcher", UNIT_AGENCY)
        )
        try:
            publish_pending(
                store,
                config.schema,
                read_linkage_keys(config),
                jigsaw_pb2_grpc.MatcherStub(channel),  # type: ignore[no-untyped-call]
                batch_size=config.publish_batch_size,
            )
        finally:
            channel.close()


def start_federation(root: Path, *, children: int = 60, seed: int = 5) -> LiveFederation:
    """Build and start a federation under ``root``: PKI (the demo identities), the published
    test secret, each agency's synthetic extract (``children`` children), the matcher and
    the four nodes (relaying to each other), every node's records ingested and published."""
    population = _init(root, children, seed)
    write_matcher_config(root)
    matcher = start_service(
        "matcher",
        ["matcher", "serve", "--config", str(root / "matcher" / "matcher.toml")],
        root / "matcher",
    )
    fed = LiveFederation(root, population, matcher)
    try:
        wait_ready([matcher])
        addresses = node_addresses()
        for agency in AGENCIES:
            config = write_node_config(root, agency, matcher.address(), addresses=addresses)
            fed.node_configs[agency] = config
            fed.nodes[agency] = start_service(
                f"{agency}-node", ["node", "serve", "--config", str(config)], root / agency
            )
        wait_ready(list(fed.nodes.values()))
        for agency in AGENCIES:
            ingest_and_publish(fed.node_configs[agency])
    except BaseException:
        fed.stop()
        raise
    return fed
