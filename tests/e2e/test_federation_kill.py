"""End-to-end, each test on a federation of its own built through the real CLI: ``kill -9`` of
the matcher mid-publish and mid-link and of a node mid-ingest lose and duplicate nothing, and a
month-first source stores and encodes as a day-first one."""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from linkage import synthetic
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from server.launcher import (
    start_service,
    stop_services,
    wait_ready,
    write_matcher_config,
    write_node_config,
)
from tests.helpers.cli_federation import (
    REPO,
    build_federation,
    jigsaw,
)

pytestmark = pytest.mark.e2e


def test_kill_matcher_mid_publish_and_mid_link(tmp_path: Path) -> None:
    fed = build_federation(tmp_path, 6000, 5)
    fed.start_matcher()
    assert fed.matcher is not None
    cfg = write_node_config(fed.root, "health", fed.matcher.address())
    text = cfg.read_text().replace("publish_batch_size = 1000", "publish_batch_size = 200")
    cfg.write_text(text)
    jigsaw("ingest", "--config", str(cfg))
    total = (
        sqlite3.connect(fed.root / "health" / "store.sqlite")
        .execute("SELECT count(*) FROM records")
        .fetchone()[0]
    )
    try:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "client.cli", "publish", "--config", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while fed.matcher_rows() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        fed.kill_matcher()
        publisher.wait(timeout=60)
        partial = fed.matcher_records()
        assert 0 < partial < total, "the kill must land mid-publish"
        # restart on the same store and port-file; the node re-sends what was not acknowledged
        fed.start_matcher()
        write_node_config(fed.root, "health", fed.matcher.address())
        jigsaw("publish", "--config", str(cfg))
        assert fed.matcher_records() == total
        jigsaw("publish", "--config", str(cfg))
        assert fed.matcher_records() == total  # nothing duplicated

        # kill -9 in the middle of a link, restart, link again
        linker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "client.cli",
                "link",
                "--matcher",
                fed.matcher.address(),
                "--pki",
                fed.pki,
                "--identity",
                "olivia",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.8)
        fed.kill_matcher()
        linker.wait(timeout=60)
        fed.start_matcher()
        out = jigsaw(
            "link", "--matcher", fed.matcher.address(), "--pki", fed.pki, "--identity", "olivia"
        )
        assert "clusters" in out.stdout
        assert fed.matcher_records() == total
    finally:
        stop_services(fed.services)


@pytest.mark.slow
def test_kill_node_mid_ingest_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    fed = build_federation(tmp_path, 30000, 3)
    cfg = write_node_config(fed.root, "health", "127.0.0.1:1")
    with open(fed.root / "data" / "health.csv", encoding="utf-8") as handle:
        rows = sum(1 for _ in handle) - 1
    ingester = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "ingest", "--config", str(cfg)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = fed.root / "health" / "store.sqlite"

    def stored() -> int:
        try:
            con = sqlite3.connect(store, timeout=10)
            try:
                return int(con.execute("SELECT count(*) FROM records").fetchone()[0])
            finally:
                con.close()
        except sqlite3.OperationalError:
            return 0

    deadline = time.monotonic() + 60
    while stored() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(ingester.pid, signal.SIGKILL)
    ingester.wait()
    partial = stored()
    assert 0 < partial < rows, "the kill must land mid-ingest"
    jigsaw("ingest", "--config", str(cfg))
    assert stored() == rows
    con = sqlite3.connect(store)
    assert con.execute("SELECT count(DISTINCT local_id) FROM records").fetchone()[0] == rows
    con.close()


def test_a_month_first_source_stores_and_encodes_as_a_day_first_one(tmp_path: Path) -> None:
    """The same children written day first by one agency and month first by another (with
    ``day_first = false`` on its source): after ``jigsaw ingest`` and ``jigsaw publish``
    both stores hold the same values and publish encodes them to the same filters."""
    from linkage.errors import InvalidValueError
    from linkage.normalise import date_parts, normalise_date
    from proto.jigsaw.v1 import jigsaw_pb2
    from server.launcher import COLUMN_NAMES
    from server.node.publish import encode_messages
    from server.node.store import NodeStore

    children = synthetic.generate_population(60, seed=5).agencies["health"]
    rows = list(synthetic.rows(children))
    jigsaw("pki", "init", "--dir", str(tmp_path / "pki"), "--agency=police", "--agency=health")
    jigsaw("secret", "init", "--out", str(tmp_path / "secret.hex"))
    write_matcher_config(tmp_path)
    matcher = start_service(
        "matcher", ["matcher", "serve", "--config", str(tmp_path / "matcher" / "matcher.toml")],
        tmp_path / "matcher",
    )  # fmt: skip
    ambiguous = 0
    try:
        wait_ready([matcher])
        configs = {}
        for agency, day_first in (("police", True), ("health", False)):
            names = COLUMN_NAMES[agency]
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(names.values())
            for row in rows:
                try:
                    iso = normalise_date(row["date_of_birth"], field="dob")
                except InvalidValueError:
                    continue
                if iso is None:
                    continue
                year, month, day = date_parts(iso)
                ambiguous += day <= 12 and day != month
                written = f"{day}/{month}/{year}" if day_first else f"{month}/{day}/{year}"
                cells = {**row, "local_id": row["record_id"], "date_of_birth": written}
                writer.writerow([cells[f] or "" for f in names])
            (tmp_path / "data").mkdir(exist_ok=True)
            (tmp_path / "data" / f"{agency}.csv").write_text(buffer.getvalue(), "utf-8")
            configs[agency] = write_node_config(tmp_path, agency, matcher.address())
            if not day_first:
                text = (
                    configs[agency]
                    .read_text("utf-8")
                    .replace("day_first = true", "day_first = false")
                )
                configs[agency].write_text(text, "utf-8")
            jigsaw("ingest", "--config", str(configs[agency]))
            jigsaw("publish", "--config", str(configs[agency]))
    finally:
        stop_services([matcher])
    assert ambiguous > 10  # dates that read differently day first and month first

    stored = {}
    for agency in ("police", "health"):
        with NodeStore(tmp_path / agency / "store.sqlite") as store:
            assert store.counts().pending == 0  # all published
            store.reset_publication()
            stored[agency] = sorted(store.pending_publish_page(0, 10_000), key=lambda r: r.local_id)
    police, health = stored["police"], stored["health"]
    assert len(police) == len(health) > 40
    assert [r.fields for r in police] == [r.fields for r in health]
    schema = load_schema("child")
    keys = KeySet(LinkageSecret.from_hex((tmp_path / "secret.hex").read_text("ascii")), 1)
    header = jigsaw_pb2.EncodingHeader(schema_fingerprint=schema.fingerprint(), key_version=1)

    def encoded(records: list[Any]) -> list[bytes]:
        messages = encode_messages(records, schema, keys, header, 10_000)
        return [
            bytes(part)
            for m in messages
            for part in (*m.columns.field_filters, m.columns.record_filters, m.columns.block_keys)
        ]

    assert encoded(police) == encoded(health)
