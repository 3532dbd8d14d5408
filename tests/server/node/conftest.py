"""Fixtures of the node's gRPC tests: their test PKI and one running node per module (its
fake matcher, ``matcher``, comes from :mod:`tests.helpers.node`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.node import MatcherLog, Node, node_pki, start_node, stop_node, write_node_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return node_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(
    pki: Path, matcher: tuple[str, MatcherLog], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    config = write_node_config(tmp_path_factory.mktemp("node"), pki, matcher[0])
    started = start_node(config)
    yield started
    stop_node(started)
