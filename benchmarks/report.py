"""Writes benchmark figures into benchmarks/RESULTS.md.

Each benchmark owns one section of the file, delimited by ``<!-- BEGIN name -->`` and
``<!-- END name -->`` markers; re-running a benchmark replaces only its own section, so
figures from different runs stay side by side with the command, machine and date that
produced them.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Every figure here was written by the command named in its section, on the machine and date
given there. Re-run the command to reproduce it; nothing in this file is typed by hand.
"""


def machine_description() -> str:
    """One line describing this machine (CPU model, cores, memory, Python)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=RESULTS.parent,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def provenance(command: str) -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"- command: `{command}`\n- machine: {machine_description()}\n"
        f"- date: {now}\n- revision: {git_revision()}\n"
    )


def write_section(name: str, body: str, *, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``body``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text("utf-8") if path.exists() else HEADER
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, "utf-8")


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


PLOTS_DIR = RESULTS.parent / "plots"


def write_table_section(
    name: str,
    title: str,
    module: str,
    argv: Sequence[str] | None,
    description: str,
    rows: list[dict[str, object]],
) -> None:
    """Write section ``name`` of RESULTS.md for a ``python -m <module>`` benchmark: its
    ``title``, provenance (the command as run: ``argv``, or the process's own arguments),
    ``description`` and one table row per ``rows`` entry."""
    import shlex
    import sys

    words = list(sys.argv[1:] if argv is None else argv)
    body = (
        f"## {title}\n\n"
        + provenance(f"python -m {module} " + shlex.join(words))
        + f"\n{description}\n\n"
        + markdown_table(rows, list(rows[0]) if rows else [])
        + "\n"
    )
    write_section(name, body)
