"""Fixtures of the matcher tests: a test PKI, an encoded population and a running matcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.matcher import Running, matcher_config
from tests.helpers.matcher_population import AgencyEncodings, encoded_population, matcher_pki


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return matcher_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def population() -> dict[str, AgencyEncodings]:
    return encoded_population()


@pytest.fixture
def matcher(tmp_path: Path, pki_dir: Path) -> Iterator[Running]:
    running = Running(matcher_config(tmp_path, pki_dir, max_batch=500), pki_dir)
    yield running
    running.stop()
