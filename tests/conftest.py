"""Shared fixtures: a PKI, the shipped schema, the published test keys, a running federation.

Session-scoped fixtures are built once per session (once per worker under pytest-xdist) and
must be treated as read-only: a test that revokes a certificate, kills a process or changes
a store builds its own (``tmp_path``, :func:`tests.helpers.federation.start_federation`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, load_schema
from server.common.pki import UNIT_AGENCY, init_pki, issue_certificate
from tests.helpers.federation import LiveFederation, start_federation

#: The identities of :func:`shared_pki`: two agencies, their nodes and consoles, three staff,
#: two operators and a load balancer's probe.
PKI_AGENCIES = ("police", "health")
PKI_STAFF = (("alice", "police"), ("bob", "police"), ("harriet", "health"))
PKI_OPERATORS = ("olga", "olive")
PKI_PROBE = "lb-probe"


def make_pki(directory: Path) -> Path:
    """The PKI of :func:`shared_pki` in ``directory`` (for a test that must change its own)."""
    init_pki(
        directory,
        agencies=list(PKI_AGENCIES),
        staff=list(PKI_STAFF),
        operators=list(PKI_OPERATORS),
    )
    for agency in PKI_AGENCIES:
        issue_certificate(directory, f"{agency}-console", agency, "console")
    issue_certificate(directory, PKI_PROBE, UNIT_AGENCY, "probe")
    return directory


@pytest.fixture(scope="session")
def shared_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and bundles (see :data:`PKI_AGENCIES` and the rest); read-only."""
    return make_pki(tmp_path_factory.mktemp("shared-pki"))


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/benchmarks/ is a ``bench`` test (deselect with -m "not bench")."""
    benchmarks = Path(__file__).parent / "benchmarks"
    for item in items:
        if benchmarks in item.path.parents:
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
