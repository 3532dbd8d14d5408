"""A federation on one machine: its layout, its configs, its data, and its processes.

Role: the one launcher that the demo (``client.demo``), the benchmarks and the end-to-end tests
use to start a matcher and agency nodes, so that none of them imports another's code or the
CLI. Each service runs as its own process (``python -m client.cli <service> serve``) on
loopback with mutual TLS and writes the port it bound to a file; :func:`wait_ready` waits for
those files and :func:`stop_services` (or leaving :func:`running`) sends SIGTERM and waits.

The layout is the demo federation's: four agencies (:data:`AGENCIES`), two unit staff and an
operator, each agency's own CSV column names (:data:`COLUMN_NAMES`) and date layout. Configs
are written with ``tomli_w``; every path in them is relative to the config's own directory,
so a federation directory can be moved whole.

Ports: a service given port 0 binds a free one; nodes that relay to each other (``[peers]``)
need their addresses before they start, so :func:`reserve_ports` picks free ones just before.
Another process could take one in between; that node then fails to start, naming the address.
"""

from __future__ import annotations

import csv
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from linkage import synthetic

AGENCIES = ("police", "health", "school", "childrens_social_care")
STAFF = (("alice", "childrens_social_care"), ("bob", "police"))
OPERATOR = "olivia"
#: The agency whose staff console the demo starts (alice's).
CONSOLE_AGENCY = "childrens_social_care"
#: The demo's PKCS#12 password for staff browsers: a visibly demo-only value.
DEMO_P12_PASSWORD = "jigsaw-demo-only"
#: The fields a node releases to staff on a disclosure, in the demo's configs.
DISCLOSED = ["given_name", "family_name", "date_of_birth", "postcode"]
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0

#: Each agency's own CSV column names (schema field -> column).
COLUMN_NAMES: dict[str, dict[str, str]] = {
    "police": {
        "local_id": "PersonRef",
        "given_name": "Forename",
        "middle_names": "MiddleNames",
        "family_name": "Surname",
        "date_of_birth": "DOB",
        "sex": "Gender",
        "postcode": "Postcode",
        "nhs_number": "NHSNo",
    },
    "health": {
        "local_id": "patient_id",
        "given_name": "first_name",
        "middle_names": "middle_name",
        "family_name": "last_name",
        "date_of_birth": "birth_date",
        "sex": "sex",
        "postcode": "post_code",
        "nhs_number": "nhs_number",
    },
    "school": {
        "local_id": "UPN",
        "given_name": "LegalForename",
        "middle_names": "MiddleNames",
        "family_name": "LegalSurname",
        "date_of_birth": "DateOfBirth",
        "sex": "Sex",
        "postcode": "HomePostcode",
        "nhs_number": "NHSNumber",
    },
    "childrens_social_care": {
        "local_id": "case_person_id",
        "given_name": "forename",
        "middle_names": "other_names",
        "family_name": "surname",
        "date_of_birth": "dob",
        "sex": "gender",
        "postcode": "postcode",
        "nhs_number": "nhs_no",
    },
}

#: The extra (disclosable, not linked) column each agency's synthetic extract carries, and
#: the values it draws from: what ``[source.extra]`` maps in the README's "Set up a federation".
EXTRA_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "police": ("Station", ("Northgate", "Riverside", "Hillcrest")),
    "health": ("gp_practice", ("Elm Surgery", "Park Medical Centre", "Quay Health")),
    "school": ("SchoolName", ("St Anne's Primary", "Oakfield Academy", "Brook High")),
    "childrens_social_care": ("team", ("Assessment", "Child Protection", "Children in Care")),
}


@dataclass
class Service:
    """One running service process and the files it reports through."""

    name: str
    process: subprocess.Popen[bytes]
    port_file: Path
    log_file: Path

    def address(self) -> str:
        return f"127.0.0.1:{self.port_file.read_text().strip()}"


def jigsaw_command(*args: str) -> list[str]:
    """The command line of ``jigsaw <args>`` run by this interpreter."""
    return [sys.executable, "-m", "client.cli", *args]


def start_service(name: str, args: Sequence[str], workdir: Path) -> Service:
    """Start ``jigsaw <args> --port-file <workdir>/<name>.port``, its output in ``<name>.log``."""
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_file = workdir / f"{name}.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            jigsaw_command(*args, "--port-file", str(port_file)),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    return Service(name, proc, port_file, log_file)


def wait_ready(services: Sequence[Service]) -> None:
    """Wait until every service has written its port; a service that exits or is not ready
    within :data:`STARTUP_TIMEOUT_S` raises RuntimeError naming its log."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for s in services:
        while not s.port_file.exists():
            if s.process.poll() is not None:
                raise RuntimeError(f"{s.name} exited during start-up; see {s.log_file}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{s.name} did not start in time; see {s.log_file}")
            time.sleep(0.05)


def stop_services(services: Sequence[Service]) -> list[tuple[str, int]]:
    """SIGTERM every running service, then wait (SIGKILL after :data:`STOP_TIMEOUT_S`);
    returns each service's exit code."""
    for s in services:
        if s.process.poll() is None:
            s.process.send_signal(signal.SIGTERM)
    codes = []
    for s in services:
        try:
            codes.append((s.name, s.process.wait(timeout=STOP_TIMEOUT_S)))
        except subprocess.TimeoutExpired:
            s.process.kill()
            codes.append((s.name, s.process.wait()))
    return codes


@contextmanager
def running(services: list[Service]) -> Iterator[list[Service]]:
    """Stop every service in ``services`` (including those appended inside) on leaving."""
    try:
        yield services
    finally:
        stop_services(services)


def reserve_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (see the module's note on ports)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def node_addresses() -> dict[str, str]:
    """A loopback address for every agency's node (see :func:`reserve_ports`)."""
    ports = reserve_ports(len(AGENCIES))
    return {a: f"127.0.0.1:{port}" for a, port in zip(AGENCIES, ports, strict=True)}


def merged(document: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``document`` with ``overrides`` merged in, table by table (a copy; neither is changed)."""
    out = dict(document)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_toml(path: Path, title: str, document: dict[str, Any]) -> Path:
    """Write ``document`` as TOML under a one-line comment ``title``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n" + tomli_w.dumps(document), "utf-8")
    return path


def write_node_config(
    root: Path,
    agency: str,
    matcher_address: str,
    *,
    addresses: dict[str, str] | None = None,
    console_listen: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """``root/<agency>/node.toml``: the demo config of ``agency``'s node. With ``addresses``
    (agency -> host:port) it listens on its own and relays disclosures to the others
    (``[peers]``); with ``console_listen`` it has a ``[console]`` section (the
    ``<agency>-console`` certificate); ``overrides`` are merged in (:func:`merged`)."""
    listen = (addresses or {}).get(agency, "127.0.0.1:0")
    document: dict[str, Any] = {
        "node": {
            "agency": agency,
            "schema": "child",
            "secret_file": "../secret.hex",
            "key_version": 1,
            "store": "store.sqlite",
            "audit_log": "audit.jsonl",
            "listen": listen,
            "matcher": matcher_address,
            "publish_batch_size": 1000,
        },
        "tls": {
            "ca_cert": f"../pki/{agency}-node/ca.pem",
            "cert": f"../pki/{agency}-node/{agency}-node.pem",
            "key": f"../pki/{agency}-node/{agency}-node.key",
        },
        "source": [
            {
                "kind": "csv",
                "path": f"../data/{agency}.csv",
                "day_first": True,
                "columns": dict(COLUMN_NAMES[agency]),
            }
        ],
        "disclosure": {"staff": list(DISCLOSED)},
        "peers": {a: address for a, address in (addresses or {}).items() if a != agency},
        "rate_limits": {
            "lookups_per_minute": 120,
            "burst": 20,
            "enumeration_alert_per_hour": 200,
        },
    }
    if console_listen is not None:
        document["console"] = {
            "listen": console_listen,
            "node": listen,
            "cert": f"../pki/{agency}-console/{agency}-console.pem",
            "key": f"../pki/{agency}-console/{agency}-console.key",
            "activity": "console-activity.sqlite",
        }
    path = root / agency / "node.toml"
    return write_toml(path, f"Demo agency node: {agency}", merged(document, overrides))


def write_matcher_config(root: Path, overrides: dict[str, Any] | None = None) -> Path:
    """``root/matcher/matcher.toml``: the demo matcher, its Match limits written out (they are
    the defaults: per calling node, and each person's share of it); ``overrides`` are merged
    in (:func:`merged`)."""
    document = {
        "matcher": {
            "schema": "child",
            "key_version": 1,
            "store": "store.sqlite",
            "audit_log": "audit.jsonl",
            "listen": "127.0.0.1:0",
        },
        "tls": {
            "ca_cert": "../pki/matcher/ca.pem",
            "cert": "../pki/matcher/matcher.pem",
            "key": "../pki/matcher/matcher.key",
        },
        "match_limits": {
            "matches_per_minute": 120,
            "burst": 60,
            "enumeration_alert_per_hour": 300,
            "max_matches_per_hour": 1000,
            "person_share": 0.25,
        },
    }
    return write_toml(
        root / "matcher" / "matcher.toml", "Demo matcher", merged(document, overrides)
    )


def write_agency_csv(agency: synthetic.AgencyData, path: Path, *, bad_row: bool) -> int:
    """Write one agency's records with its own headers; with ``bad_row`` one extra row with an
    impossible date of birth (ingest reports its line and field and skips it). Returns the
    data rows written."""
    names = COLUMN_NAMES[agency.name]
    fields = list(names)
    rows = list(synthetic.rows(agency))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([names[f] for f in fields])
        for i, row in enumerate(rows):
            writer.writerow([row["record_id"] if f == "local_id" else row[f] for f in fields])
            if bad_row and i == 2:
                bad = dict(row, record_id=row["record_id"] + "-X", date_of_birth="31/02/2015")
                writer.writerow([bad["record_id"] if f == "local_id" else bad[f] for f in fields])
    return len(rows) + (1 if bad_row else 0)


def write_synthetic_extracts(root: Path, *, children: int, seed: int) -> dict[str, int]:
    """Write each agency's synthetic extract (``<agency>.csv``: its own column names and
    formats, one impossible date of birth in the police file, and its extra column) and
    ``truth.csv`` (agency, local id, the true child); returns the data rows per agency."""
    population = synthetic.generate_population(children, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    rng = np.random.default_rng(seed)
    with open(root / "truth.csv", "w", newline="", encoding="utf-8") as truth_handle:
        truth = csv.writer(truth_handle)
        truth.writerow(["agency", "local_id", "child"])
        for name in AGENCIES:
            data = population.agencies[name]
            path = root / f"{name}.csv"
            written[name] = write_agency_csv(data, path, bad_row=name == "police")
            column, choices = EXTRA_COLUMNS[name]
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            picks = rng.integers(0, len(choices), size=len(rows))
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow([*rows[0], column])
                for row, pick in zip(rows[1:], picks[1:].tolist(), strict=True):
                    writer.writerow([*row, choices[pick]])
            for local_id, child in zip(
                data.columns["record_id"], data.child_id.tolist(), strict=True
            ):
                truth.writerow([name, local_id, child])
    return written
