"""Tests of client.output and the CLI's printing: no control character from a server ever
reaches the terminal, CSV files the client writes hold no live formula and are private."""

from __future__ import annotations

import csv
import os
import stat
import unicodedata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from client import cli
from client.commands import staff
from client.output import printable, spreadsheet_safe, write_private_csv

HOSTILE = (
    "Amy\x1b[2J\x1b]0;owned\x07",
    "Smith\u202eevil",
    "line\u2028break\u2029para",
    "nul\x00del\x7fc1\x9b",
    "[bold red]markup[/]",
    "zero\u200bwidth\ufeff",
)


def _no_control(text: str) -> None:
    for char in text:
        assert char == "\n" or unicodedata.category(char) not in {"Cc", "Cf", "Zl", "Zp"}, (
            f"U+{ord(char):04X} reached the output"
        )


@pytest.mark.parametrize("value", HOSTILE)
def test_printable_escapes_every_control_character(value: str) -> None:
    shown = printable(value)
    _no_control(shown)
    assert printable("José O'Brien-Müller") == "José O'Brien-Müller"
    assert printable("a\\x1b") == "a\\\\x1b"  # a written escape is not an escape


def test_spreadsheet_safe() -> None:
    for cell in ("=1+1", "+44", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(cell) == "'" + cell
    assert spreadsheet_safe("Smith") == "Smith" and spreadsheet_safe("") == ""


def test_write_private_csv(tmp_path: Path) -> None:
    path = tmp_path / "out" / "disclosed.csv"
    write_private_csv(path, [("field", "value"), ("given_name", "=HYPERLINK(x)")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    with path.open(newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle))[1] == ["given_name", "'=HYPERLINK(x)"]
    path.chmod(0o644)
    write_private_csv(path, [("field", "value")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


class _FakeNode:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _FakeNode:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def disclose(self, reference: str, *, purpose_code: str, note: str, priority: str) -> Any:
        return SimpleNamespace(
            agency="police\x1b[31m",
            reference=reference,
            fields={"given_name": HOSTILE[0], "family_name": HOSTILE[1], "address": HOSTILE[2]},
            withheld_fields=["nhs\u202e_number"],
            disclosure_id="d\x1b1",
        )

    def lookup(self, identifiers: Any, *, purpose_code: str, note: str, max_candidates: int) -> Any:
        evidence = [SimpleNamespace(field="given\x1bname", agreement=1)]
        candidate = SimpleNamespace(
            agency="he\x1balth", reference="r\u202e1", band=1, evidence=evidence
        )
        return SimpleNamespace(lookup_id="l\x07", candidates=[candidate], notes=["n\x1b[2J"])


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch) -> None:
    import client.client

    monkeypatch.setattr(client.client, "NodeClient", _FakeNode)
    monkeypatch.setattr(staff, "tls", lambda args: None)


COMMON = [
    "--node",
    "127.0.0.1:1",
    "--pki",
    "pki",
    "--identity",
    "alice",
    "--purpose",
    "s47_enquiry",
]


def test_disclose_prints_no_control_character(
    fake_node: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["disclose", *COMMON, "--reference", "ref1"]) == 0
    captured = capsys.readouterr()
    _no_control(captured.out + captured.err)
    assert "\\x1b" in captured.out and "\\u202e" in captured.out


def test_disclose_to_csv_is_private_and_formula_free(
    fake_node: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "d.csv"
    assert cli.main(["disclose", *COMMON, "--reference", "=ref", "--csv", str(path)]) == 0
    _no_control(capsys.readouterr().out)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_lookup_prints_no_control_character(
    fake_node: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["lookup", *COMMON, "--note", "n", "--field", "given_name=Amy"]) == 0
    captured = capsys.readouterr()
    _no_control(captured.out + captured.err)
