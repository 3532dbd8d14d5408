"""A run of the suite that collects no test fails loudly (exit status 5), as ``make test``
needs: a test path that moved, or a marker expression that matches nothing, must never pass
as a green run that checked nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args",
    [
        ["tests/helpers"],  # with pytest-xdist's workers (pyproject's addopts)
        ["-n", "0", "tests/client/test_protocheck.py", "-k", "no_such_test_name"],
    ],
    ids=["no test files", "everything deselected"],
)
def test_a_run_that_collects_nothing_exits_5(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, done.stdout + done.stderr
    assert "no tests were collected" in done.stdout
