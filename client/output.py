"""What the client writes: text for a terminal, and files that hold records.

Role: the one place where values that came over the wire (a disclosed record, a lookup's
notes, an agency or field name) are made safe to show or to save. A node may hold a value
that an attacker typed into an agency's system, so nothing it sends is trusted as text.

Contract
    :func:`printable` turns any string into one that carries no control, format (such as
    bidirectional overrides), separator, private-use, surrogate or unassigned character (each
    becomes a visible escape such as ``\\x1b`` or ``\\u202e``; a backslash is doubled, so
    the escaped form is unambiguous) and no Rich console markup: it is what every value
    printed by ``jigsaw`` goes through.
    :func:`spreadsheet_safe` prefixes a cell that a spreadsheet would run as a formula (one
    beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) with an
    apostrophe; every CSV cell ``jigsaw`` writes goes through it.
    :func:`write_private_csv` writes rows to a file created with mode 0600 (its directory,
    when created, 0700), never following a symbolic link left in its place.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.markup import escape

__all__ = ["printable", "spreadsheet_safe", "write_private_csv"]

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def _escaped(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def printable(text: str) -> str:
    """``text`` with every unsafe character escaped and Rich markup neutralised."""
    return escape("".join(_escaped(char) for char in text))


def spreadsheet_safe(cell: str) -> str:
    """``cell``, with an apostrophe in front when a spreadsheet would read it as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_LEADS) else cell


def write_private_csv(path: Path, rows: Iterable[Sequence[str]]) -> None:
    """Write ``rows`` (every cell made :func:`spreadsheet_safe`) to a new or replaced file
    readable by its owner only."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)  # a file that already existed keeps no wider mode
    with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for row in rows:
            writer.writerow([spreadsheet_safe(cell) for cell in row])
