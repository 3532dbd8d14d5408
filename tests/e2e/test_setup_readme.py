"""The README's "Set up a federation", run literally: its marked shell blocks, in order.

Every ``sh`` block preceded by ``<!-- setup-step -->`` in that section is run, in one bash
process (``set -euo pipefail``) in an empty directory, with ``jigsaw`` on the PATH running
this repository's CLI (whatever the installed one is). Then the files and output the section
tells a newcomer to read are checked against the synthetic ground truth (``truth.csv``).
The servers the blocks start are stopped by the section's last block, and by the process
ids they saved when a block fails.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# the README's fixed ports: its tests share one module-scoped walk, so they stay on one
# pytest-xdist worker (--dist loadscope, pyproject's addopts; the group for --dist loadgroup)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("readme-fixed-ports")]

ROOT = Path(__file__).resolve().parents[2]
AGENCIES = ("police", "health", "school", "childrens_social_care")
PORTS = (17400, 17401, 17402, 17403, 17404)
STEP = "<!-- setup-step -->"


def setup_blocks() -> list[str]:
    """The marked ``sh`` blocks of the README's "Set up a federation", in order."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("\n## Set up a federation\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(re.escape(STEP) + r"\n```sh\n(.*?)```\n", section, re.S)
    assert len(blocks) == section.count(STEP), "every marker is followed by a ```sh block"
    return blocks


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_saved(workdir: Path) -> None:
    """SIGTERM every server whose saved process id is still alive; SIGKILL after 20 s."""
    pids = [int(p.read_text()) for p in workdir.glob("*/serve.pid") if p.read_text().strip()]

    def alive() -> list[int]:
        running = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            running.append(pid)
        return running

    for pid in alive():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive():
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[int, str]]]:
    """Run the section; yields its directory and each block's standard output."""
    taken = [p for p in PORTS if port_taken(p)]
    if taken:
        pytest.fail(f"the README's fixed ports {taken} are in use on this machine")
    workdir = tmp_path_factory.mktemp("setup")
    bin_dir = tmp_path_factory.mktemp("bin")
    wrapper = bin_dir / "jigsaw"  # this repository's CLI, as `.venv/bin/jigsaw` would be
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" -m client.cli "$@"\n'
    )
    wrapper.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)  # as in an activated .venv
    script = ["set -euo pipefail"]
    for i, block in enumerate(setup_blocks()):
        script += [f"echo '>>> step {i}'", block]
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            logs = "\n".join(
                f"--- {log.relative_to(workdir)}\n{log.read_text()[-2000:]}"
                for log in sorted(workdir.glob("*/serve.log"))
            )
            pytest.fail(
                f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n"
                f"--- stderr\n{done.stderr[-4000:]}\n{logs}"
            )
        parts = re.split(r"^>>> step (\d+)\n", done.stdout, flags=re.M)[1:]
        steps = zip(parts[::2], parts[1::2], strict=True)
        outputs = {int(n): " ".join(text.split()) for n, text in steps}
        yield workdir, outputs
    finally:
        stop_saved(workdir)


def output_of(outputs: dict[int, str], command: str) -> str:
    """The output of the one block whose text runs ``command``."""
    (index,) = [i for i, block in enumerate(setup_blocks()) if command in block]
    return outputs[index]


def truth(workdir: Path) -> dict[tuple[str, str], str]:
    """(agency, local id) -> the synthetic child."""
    with open(workdir / "data" / "truth.csv", newline="") as handle:
        return {(r["agency"], r["local_id"]): r["child"] for r in csv.DictReader(handle)}


def references(workdir: Path, agency: str) -> dict[str, str]:
    """reference -> local id, from the node's store (the test's own ground truth)."""
    con = sqlite3.connect(workdir / agency / "store.sqlite")
    try:
        return dict(con.execute("SELECT reference, local_id FROM records").fetchall())
    finally:
        con.close()


def test_the_blocks_stop_every_server_they_start(walked: tuple[Path, dict[int, str]]) -> None:
    workdir, _ = walked
    deadline = time.monotonic() + 20
    for pid_file in sorted(workdir.glob("*/serve.pid")):
        pid = int(pid_file.read_text())
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"{pid_file.parent.name} still running"
            time.sleep(0.1)
    assert len(list(workdir.glob("*/serve.pid"))) == 5


def test_config_check_and_ingest_report_as_the_text_says(
    walked: tuple[Path, dict[int, str]],
) -> None:
    _, outputs = walked
    assert output_of(outputs, "jigsaw config check").count(": OK") == 5
    ingest = output_of(outputs, "jigsaw ingest")
    assert "1 rejected" in ingest and "date_of_birth" in ingest  # the one impossible date
    for agency in AGENCIES:
        assert f"{agency}.csv" in ingest


def test_link_out_clusters_agree_with_the_truth(walked: tuple[Path, dict[int, str]]) -> None:
    workdir, _ = walked
    child = truth(workdir)
    refs = {a: references(workdir, a) for a in AGENCIES}
    with open(workdir / "clusters.csv", newline="") as handle:
        edges = list(csv.DictReader(handle))
    assert len(edges) > 100
    right = sum(
        child[(e["left_agency"], refs[e["left_agency"]][e["left_reference"]])]
        == child[(e["right_agency"], refs[e["right_agency"]][e["right_reference"]])]
        for e in edges
    )
    assert right / len(edges) >= 0.9


def test_linked_lists_only_the_agencys_own_records(walked: tuple[Path, dict[int, str]]) -> None:
    workdir, outputs = walked
    child = truth(workdir)
    for agency in AGENCIES:
        own = references(workdir, agency)
        with open(workdir / agency / "linked.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows, agency
        assert all(own.get(r["reference"]) == r["local_id"] for r in rows), agency
        assert all(r["agency"] != agency for r in rows), agency
        # another agency named holds the same child
        held = {(a, c) for (a, _), c in child.items()}
        right = sum((r["agency"], child[(agency, r["local_id"])]) in held for r in rows)
        assert right / len(rows) >= 0.9, agency
    assert "(audited)" in output_of(outputs, "jigsaw resolve")


def test_quality_reports_the_police_records(walked: tuple[Path, dict[int, str]]) -> None:
    workdir, outputs = walked
    quality = output_of(outputs, "jigsaw quality")
    stored = len(references(workdir, "police"))
    assert f"{stored} records in the store" in quality
    assert "1 rejected" in quality and "linked to other agencies" in quality


def test_the_lookup_finds_the_child_and_the_disclosure_releases_the_policy(
    walked: tuple[Path, dict[int, str]],
) -> None:
    workdir, outputs = walked
    lookup = output_of(outputs, "--identity alice \\\n    --purpose")
    assert all(agency in lookup for agency in ("police", "health", "school"))
    disclosed = output_of(outputs, "jigsaw disclose")
    with open(workdir / "data" / "police.csv", newline="") as handle:
        station = next(
            r["Station"] for r in csv.DictReader(handle) if r["Forename"].strip() == "Efua"
        )
    assert disclosed.startswith("police record ")
    assert "station" in disclosed and station in disclosed
    assert "withheld by policy: middle_names, sex, nhs_number" in disclosed
    audit = (workdir / "police" / "audit.jsonl").read_text()
    assert '"priority":"amber"' in audit.replace(" ", "")
