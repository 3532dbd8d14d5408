"""A federation built through the real CLI, as an operator builds one: a test PKI and secret
(``jigsaw pki init``, ``jigsaw secret init``), the agencies' CSV files of a seeded synthetic
population, and the matcher and nodes started as processes (``jigsaw matcher serve``,
``jigsaw node serve``) on loopback with mutual TLS. For the end-to-end tests."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linkage import synthetic
from server.launcher import (
    AGENCIES,
    Service,
    node_addresses,
    start_service,
    wait_ready,
    write_agency_csv,
    write_matcher_config,
    write_node_config,
)

REPO = Path(__file__).resolve().parents[2]


def jigsaw(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"jigsaw {args[0]} failed ({done.returncode}):\n{done.stderr}")
    return done


@dataclass
class Federation:
    root: Path
    population: synthetic.SyntheticData
    services: list[Service] = field(default_factory=list)
    matcher: Service | None = None
    nodes: dict[str, Service] = field(default_factory=dict)
    node_configs: dict[str, Path] = field(default_factory=dict)

    @property
    def pki(self) -> str:
        return str(self.root / "pki")

    def start_matcher(self) -> Service:
        self.matcher = start_service(
            "matcher",
            ["matcher", "serve", "--config", str(self.root / "matcher" / "matcher.toml")],
            self.root / "matcher",
        )
        self.services.append(self.matcher)
        wait_ready([self.matcher])
        return self.matcher

    def kill_matcher(self) -> None:
        assert self.matcher is not None
        self.matcher.process.send_signal(signal.SIGKILL)
        self.matcher.process.wait(timeout=10)

    def matcher_rows(self) -> int:
        con = sqlite3.connect(self.root / "matcher" / "store.sqlite", timeout=10)
        try:
            return int(con.execute("SELECT count(*) FROM encodings").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()

    def matcher_records(self) -> int:
        """Records the matcher holds: its rows, a record published as forms counted once."""
        con = sqlite3.connect(self.root / "matcher" / "store.sqlite", timeout=10)
        try:
            rows = int(con.execute("SELECT count(*) FROM encodings").fetchone()[0])
            forms, records = con.execute(
                "SELECT count(*), count(DISTINCT agency || ' ' || record) FROM forms"
            ).fetchone()
            return rows - int(forms) + int(records)
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()


def build_federation(root: Path, children: int, seed: int) -> Federation:
    """The PKI, secret, CSV files and matcher config of a federation at ``root`` (nothing
    started)."""
    fed = Federation(root, synthetic.generate_population(children, seed=seed))
    jigsaw(
        "pki",
        "init",
        "--dir",
        fed.pki,
        *[f"--agency={a}" for a in AGENCIES],
        "--staff",
        "alice:childrens_social_care",
        "--staff",
        "bob:police",
        "--operator",
        "olivia",
    )
    jigsaw("secret", "init", "--out", str(root / "secret.hex"))
    (root / "data").mkdir()
    for a in AGENCIES:
        write_agency_csv(
            fed.population.agencies[a], root / "data" / f"{a}.csv", bad_row=a == "police"
        )
    write_matcher_config(root)
    return fed


def start_federation(fed: Federation, node_overrides: dict[str, Any] | None = None) -> None:
    """Start the matcher and every node (each node config merged with ``node_overrides``),
    then ingest and publish every agency's file."""
    fed.start_matcher()
    assert fed.matcher is not None
    addresses = node_addresses()
    for a in AGENCIES:
        fed.node_configs[a] = write_node_config(
            fed.root, a, fed.matcher.address(), addresses=addresses, overrides=node_overrides
        )
        fed.nodes[a] = start_service(
            f"{a}-node", ["node", "serve", "--config", str(fed.node_configs[a])], fed.root / a
        )
        fed.services.append(fed.nodes[a])
    wait_ready(list(fed.nodes.values()))
    for a in AGENCIES:
        jigsaw("ingest", "--config", str(fed.node_configs[a]))
        jigsaw("publish", "--config", str(fed.node_configs[a]))
