"""``jigsaw demo``: the whole federation on one machine, on embedded defaults.

Role: the main job a newcomer runs first (``make demo``). It shows every part working
together exactly as an operator would run them, each in its own process on loopback with
mutual TLS:

1. creates a certificate authority and certificates (matcher, one node per agency, two staff
   members of the multi-agency unit, one operator) and the agencies' shared linkage secret;
2. generates a seeded synthetic population of children seen by police, health, schools and
   children's social care, and writes each agency's records as a CSV file with that agency's
   own column names and date format (plus one deliberately bad row, to show how bad input is
   reported);
3. starts the matcher and four agency nodes as separate processes (``jigsaw matcher serve``,
   ``jigsaw node serve``);
4. ingests each agency's CSV into its node's SQLite store and publishes the encodings;
5. runs a batch link as the operator, and scores it against the synthetic ground truth;
6. makes a few lookups as a unit staff member at her own agency's node, and one disclosure
   with a stated purpose there, which her node relays to the holding agency's node;
7. verifies every audit log, and shuts everything down with SIGTERM.

Everything goes under the directory it prints; nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from client.client import MatcherClient, NodeClient
from client.exports import BAND_NAMES, evidence_text
from linkage import evaluate, synthetic
from linkage.keys import LinkageSecret
from linkage.solve import pairs_from_labels
from proto.jigsaw.v1 import jigsaw_pb2_grpc
from server.common.audit import verify_audit_log
from server.common.pki import UNIT_AGENCY, export_pkcs12, init_pki, issue_certificate, server_name
from server.common.tls import secure_channel, tls_files_for
from server.launcher import (
    AGENCIES,
    CONSOLE_AGENCY,
    DEMO_P12_PASSWORD,
    OPERATOR,
    STAFF,
    Service,
    node_addresses,
    reserve_ports,
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


def run_demo(root: Path, *, children: int, seed: int, console: Console, serve: bool = False) -> int:
    root = root.resolve()
    console.rule("[bold]Jigsaw demo federation")
    console.print(f"data directory: {root}")
    if root.exists() and any(root.iterdir()):
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. keys and certificates
    init_pki(root / "pki", agencies=AGENCIES, staff=STAFF, operators=[OPERATOR])
    issue_certificate(root / "pki", f"{CONSOLE_AGENCY}-console", CONSOLE_AGENCY, "console")
    bundles = [
        export_pkcs12(root / "pki", name, DEMO_P12_PASSWORD.encode()) for name, _agency in STAFF
    ]
    secret_path = root / "secret.hex"
    secret_path.write_text(LinkageSecret.generate().to_hex() + "\n", "ascii")
    os.chmod(secret_path, 0o600)
    console.print(
        f"[1] certificates for {len(AGENCIES)} nodes, {len(STAFF)} staff, "
        "1 operator and the matcher; a fresh linkage secret for the agencies"
    )

    # 2. synthetic data
    population = synthetic.generate_population(children, seed=seed)
    (root / "data").mkdir()
    for name in AGENCIES:
        n = write_agency_csv(
            population.agencies[name], root / "data" / f"{name}.csv", bad_row=name == "police"
        )
        console.print(f"[2] {name}: {n} rows written to data/{name}.csv")

    services: list[Service] = []
    try:
        # 3. matcher and nodes, each its own process
        matcher = start_service(
            "matcher",
            ["matcher", "serve", "--config", str(write_matcher_config(root))],
            root / "matcher",
        )
        services.append(matcher)
        wait_ready([matcher])
        addresses = node_addresses()
        console_listen = f"127.0.0.1:{reserve_ports(1)[0]}"
        node_cfgs = {
            a: write_node_config(
                root,
                a,
                matcher.address(),
                addresses=addresses,
                console_listen=console_listen if a == CONSOLE_AGENCY else None,
            )
            for a in AGENCIES
        }
        nodes = {
            a: start_service(
                f"{a}-node", ["node", "serve", "--config", str(node_cfgs[a])], root / a
            )
            for a in AGENCIES
        }
        services.extend(nodes.values())
        wait_ready(list(nodes.values()))
        console.print(
            f"[3] matcher on {matcher.address()}; nodes: "
            + ", ".join(f"{a} {s.address()}" for a, s in nodes.items())
        )

        # 4. ingest and publish (what `jigsaw ingest` and `jigsaw publish` do)
        for agency in AGENCIES:
            config = load_node_config(node_cfgs[agency])
            store = NodeStore(config.store)
            try:
                for source in config.sources:
                    report = ingest_source(store, source, config.schema)
                    console.print(
                        f"[4] {agency}: ingested {report.inserted} records"
                        + (f", rejected {len(report.rejected)}" if report.rejected else "")
                        + (f", {len(report.warnings)} warnings" if report.warnings else "")
                    )
                    for p in report.rejected:
                        console.print(f"      line {p.line}, field {p.field}: {p.reason}")
                channel = secure_channel(
                    config.matcher, config.tls, expect=server_name("matcher", UNIT_AGENCY)
                )
                try:
                    pub = publish_pending(
                        store,
                        config.schema,
                        read_linkage_keys(config),
                        jigsaw_pb2_grpc.MatcherStub(channel),  # type: ignore[no-untyped-call]
                        batch_size=config.publish_batch_size,
                    )
                finally:
                    channel.close()
                console.print(f"    {agency}: published {pub.published} encodings")
            finally:
                store.close()

        # 5. batch link as the operator
        with MatcherClient(matcher.address(), tls_files_for(root / "pki", OPERATOR)) as mc:
            stages: list[str] = []

            def on_progress(p: object) -> None:
                stage = getattr(p, "stage", "")
                if stage and stage not in stages:
                    stages.append(stage)

            result_id = mc.link(on_progress=on_progress)
            clusters = [c for page in mc.link_result_pages(result_id) for c in page.clusters]
            status = mc.status()
        console.print(
            f"[5] batch link {result_id} ({' → '.join(stages)}): "
            f"{len(clusters)} children held by two or more records, "
            f"{status.indexed_records} records indexed"
        )
        _score_link(root, population, clusters, console)
        # each node fetches its share (the console's "Children known to other agencies")
        operator = tls_files_for(root / "pki", OPERATOR)
        fetched = []
        for agency, node_service in nodes.items():
            with NodeClient(node_service.address(), operator, agency=agency) as node_client:
                fetched.append(f"{agency} {node_client.fetch_linked(result_id).linked_records}")
        console.print(
            "    records known to other agencies, fetched by each node: " + ", ".join(fetched)
        )

        # 6. lookups and one disclosure as unit staff (alice, children's social care)
        alice = tls_files_for(root / "pki", "alice")
        with NodeClient(nodes["childrens_social_care"].address(), alice) as own_node:
            picked = _pick_children(population, 3, seed)
            first_police_ref = ""
            for child_query in picked:
                response = own_node.lookup(
                    child_query,
                    purpose_code="strategy_discussion",
                    note="demo: strategy discussion, case 0001",  # alice's node's audit only
                )
                table = Table(
                    "agency",
                    "reference",
                    "match",
                    "evidence (fields on both sides)",
                    title=f"lookup {response.lookup_id} — query fields: "
                    + ", ".join(sorted(child_query)),
                )
                for c in response.candidates:
                    table.add_row(
                        c.agency,
                        c.reference[:12] + "…",
                        BAND_NAMES.get(c.band, "?"),
                        evidence_text(c.evidence),
                    )
                    if c.agency == "police" and not first_police_ref:
                        first_police_ref = c.reference
                console.print(table)
            if first_police_ref:
                # asked of alice's own node, which relays it to the police node
                disclosed = own_node.disclose(
                    first_police_ref,
                    purpose_code="s47_enquiry",
                    note="demo: case 0001",
                    priority="amber",
                )
        if first_police_ref:
            console.print(
                f"[6] disclosure {disclosed.disclosure_id} from police (through alice's own "
                "node): released "
                f"fields {sorted(disclosed.fields)}; withheld "
                f"{list(disclosed.withheld_fields)} (values not printed)"
            )
        # 7. the staff console of alice's agency, beside its node
        staff_console = start_service(
            "console",
            ["console", "serve", "--config", str(node_cfgs[CONSOLE_AGENCY])],
            root / CONSOLE_AGENCY,
        )
        services.append(staff_console)
        wait_ready([staff_console])
        console.print(
            f"[7] staff console of {CONSOLE_AGENCY}: https://localhost:"
            f"{staff_console.port_file.read_text().strip()}/ — import {bundles[0]} (password "
            f"{DEMO_P12_PASSWORD!r}) into the browser as alice's certificate, and trust "
            f"{root / 'pki' / 'ca' / 'ca.pem'} as a certificate authority"
        )
        if not serve:
            console.print("    (started and stopped here; `make demo-console` keeps it running)")
        else:
            console.print("    serving until Ctrl-C")
            try:
                while all(s.process.poll() is None for s in services):
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        codes = stop_services(services)

    # 8. audit verification
    ok = True
    for log in sorted(root.glob("*/audit.jsonl")):
        result = verify_audit_log(log)
        ok &= result.ok
        console.print(
            f"[8] audit {log.relative_to(root)}: "
            + (
                f"OK, {result.entries} entries"
                if result.ok
                else f"TAMPERED at {result.first_bad_seq}: {result.reason}"
            )
        )
    console.print("    shutdown: " + ", ".join(f"{n} exit {c}" for n, c in codes))
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s; data in {root}")
    clean = all(c == 0 for _, c in codes)
    return 0 if ok and clean else 1


def _pick_children(
    population: synthetic.SyntheticData, count: int, seed: int
) -> list[dict[str, str]]:
    """Queries for children known to police and to children's social care (so the demo can
    show a disclosure), typed as health recorded them (different spelling and format)."""
    police = {int(c) for c in population.agencies["police"].child_id}
    social = {int(c) for c in population.agencies["childrens_social_care"].child_id}
    health = population.agencies["health"]
    rng = np.random.default_rng(seed)
    chosen: list[dict[str, str]] = []
    for j in rng.permutation(len(health)).tolist():
        child = int(health.child_id[j])
        if child not in police or (child not in social and len(chosen) < count - 1):
            continue
        query = {
            f: str(health.columns[f][j]).strip()
            # sex too: the shipped schema salts the date of birth with it (without it the node
            # sends the lookup as one row per sex value)
            for f in ("given_name", "family_name", "date_of_birth", "sex", "postcode")
            if health.columns[f][j] and str(health.columns[f][j]).strip()
        }
        if len(query) == 5:
            chosen.append(query)
        if len(chosen) == count:
            break
    return chosen


def _score_link(
    root: Path, population: synthetic.SyntheticData, clusters: Sequence[object], console: Console
) -> None:
    """Compare the federation's clusters with the synthetic ground truth (demo only)."""

    child_of: dict[tuple[str, str], int] = {}
    for agency in AGENCIES:
        data = population.agencies[agency]
        by_local = dict(zip(data.columns["record_id"], data.child_id.tolist(), strict=True))
        con = sqlite3.connect(root / agency / "store.sqlite")
        try:
            for local_id, reference in con.execute("SELECT local_id, reference FROM records"):
                if local_id in by_local:
                    child_of[(agency, reference)] = by_local[local_id]
        finally:
            con.close()
    keys = sorted(child_of)
    position = {k: i for i, k in enumerate(keys)}
    labels = np.arange(len(keys), dtype=np.int64)
    for c in clusters:
        members = [
            position[(m.agency, m.reference)]
            for m in c.members  # type: ignore[attr-defined]
            if (m.agency, m.reference) in position
        ]
        if members:
            labels[members] = min(members)
    truth = np.array([child_of[k] for k in keys], dtype=np.int64)

    ti, tj = evaluate.true_pairs_from_entities(truth)
    pi, pj = pairs_from_labels(labels)
    q = evaluate.pairwise_quality(pi, pj, ti, tj)
    console.print(
        f"    against the synthetic ground truth: precision {q.precision:.4f}, "
        f"recall {q.recall:.4f}, F1 {q.f1:.4f} ({len(ti)} true pairs)"
    )
