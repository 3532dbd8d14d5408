"""The shared test PKI's identities and a function that builds it (the ``shared_pki``
fixture of tests/conftest.py; a test that must change its PKI builds its own with it)."""

from __future__ import annotations

from pathlib import Path

from server.common.pki import UNIT_AGENCY, init_pki, issue_certificate

#: The identities of the shared PKI: two agencies, their nodes and consoles, three staff,
#: two federation operators, one operator of each agency and a load balancer's probe.
PKI_AGENCIES = ("police", "health")
PKI_STAFF = (("alice", "police"), ("bob", "police"), ("harriet", "health"))
PKI_OPERATORS = ("olga", "olive")
PKI_AGENCY_OPERATORS = (("percy", "police"), ("hana", "health"))
PKI_PROBE = "lb-probe"


def make_pki(directory: Path) -> Path:
    """The shared PKI in ``directory`` (for a test that must change its own)."""
    init_pki(
        directory,
        agencies=list(PKI_AGENCIES),
        staff=list(PKI_STAFF),
        operators=list(PKI_OPERATORS),
    )
    for agency in PKI_AGENCIES:
        issue_certificate(directory, f"{agency}-console", agency, "console")
    for name, agency in PKI_AGENCY_OPERATORS:
        issue_certificate(directory, name, agency, "operator")
    issue_certificate(directory, PKI_PROBE, UNIT_AGENCY, "probe")
    return directory
