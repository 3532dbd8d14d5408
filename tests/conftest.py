"""Shared fixtures: a PKI, the shipped schema, the published test keys, a running federation.

Session-scoped fixtures are built once per session (once per worker under pytest-xdist) and
must be treated as read-only: a test that revokes a certificate, kills a process or changes
a store builds its own (``tmp_path``, :func:`tests.helpers.federation.start_federation`).

Each test process does its matrix products on one BLAS thread (``OPENBLAS_NUM_THREADS=1``
unless the environment sets it), set before numpy is first imported: pytest-xdist already
runs a worker per core, and OpenBLAS's own threads, one per core in every worker, fought
over the same cores (the attack benchmark's tests ran three times slower, whatever their
population size). Products agree across thread counts up to rounding; processes the tests
start inherit the setting.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest

from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, load_schema
from tests.helpers.federation import LiveFederation, start_federation
from tests.helpers.pki import make_pki


@pytest.fixture(scope="session")
def shared_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and bundles (see :data:`PKI_AGENCIES` and the rest); read-only."""
    return make_pki(tmp_path_factory.mktemp("shared-pki"))


@pytest.fixture(scope="session")
def pki(shared_pki: Path) -> Path:
    """The shared PKI under the name most modules use (a module may define its own)."""
    return shared_pki


@pytest.fixture(scope="session")
def child_schema() -> Schema:
    """The shipped ``child`` schema."""
    return load_schema("child")


@pytest.fixture(scope="session")
def test_secret() -> LinkageSecret:
    """The published test secret (never a real one)."""
    return LinkageSecret.for_tests()


@pytest.fixture(scope="session")
def linkage_keys(test_secret: LinkageSecret) -> KeySet:
    """Key version 1 under the published test secret."""
    return KeySet(test_secret, 1)


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFederation]:
    """A matcher and the four agencies' nodes as processes (server.launcher), 60 synthetic
    children ingested and published; read-only (build your own to change it)."""
    fed = start_federation(tmp_path_factory.mktemp("federation"))
    try:
        yield fed
    finally:
        fed.stop()


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test under tests/benchmarks/ is a ``bench`` test (deselect with -m "not bench")."""
    if Path(__file__).parent / "benchmarks" in item.path.parents:
        item.add_marker(pytest.mark.bench)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collects no test fails (pytest's exit status 5), and says so loudly."""
    if session.testscollected == 0 and not hasattr(session.config, "workerinput"):
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "ERROR: no tests were collected: this run checked nothing", red=True
            )
