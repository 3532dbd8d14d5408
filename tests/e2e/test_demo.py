"""The main job the README names, ``jigsaw demo``, run as an operator runs it: a subprocess
that builds a federation in a directory, links, looks up, discloses, stops every process and
verifies every audit log (on a small population)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.launcher import AGENCIES

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_and_verifies_every_audit_log(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "demo", "--dir", str(root), "--children", "60"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    verified = re.findall(r"\[8\] audit (\S+): OK, (\d+) entries", out)
    assert {Path(log).parent.name for log, _ in verified} == {"matcher", *AGENCIES}, out
    assert all(int(entries) > 0 for _, entries in verified)
    assert "TAMPERED" not in out
    assert re.search(r"shutdown: .*matcher exit 0", out), out
    assert "demo finished" in out
