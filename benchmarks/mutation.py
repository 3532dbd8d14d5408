"""Mutation check: does the test suite catch a small, deliberate fault in a critical function?

Role: the evidence that the suite is no weaker than the code it guards (RESULTS.md "Mutation
check"). Each :data:`MUTATIONS` entry replaces one exact snippet of the source (a flipped or
loosened comparison in Dice scoring, in the comparison-level cut-offs, in the role and agency
checks, in the audit chain) in a fresh copy of the committed tree (``git archive HEAD``), builds
the C extension there when the mutation is in C, and runs the tests (``pytest -x`` over the
tests of the mutated package, without the end-to-end, browser and benchmark tests). A
mutation is *caught* when pytest fails, *missed* when it passes.

Invariants: the working tree is never changed; a snippet that is not found in exactly one
file of the source is an error (every occurrence there is mutated: the C kernel writes one
loop per CPU path) (a mutation that silently applies nowhere would be "missed" for the
wrong reason); the unmutated copy must pass first, or no mutation is reported.

Run ``python -m benchmarks.mutation [--only NAME ...] [--report]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The suite run against each mutant: everything but real processes, browsers and benchmarks.
MARKERS = "not e2e and not browser and not slow and not bench"
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    original: str
    mutant: str
    #: the tests run against the mutant: the package's own
    tests: tuple[str, ...]
    suffix: str = ".py"  # where to look for ``original``: files under linkage/ and server/


LINKAGE = ("tests/linkage",)
COMMON = ("tests/server/common",)

MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "dice_threshold",
        "Dice scan keeps a pair at exactly the threshold: >= becomes >",
        "if (score >= args->threshold) {",
        "if (score > args->threshold) {",
        LINKAGE,
        suffix=".c",
    ),
    Mutation(
        "dice_formula",
        "Dice numerator loses its factor 2 in the C kernel",
        "return (double)(2 * and_count) / (double)denominator;",
        "return (double)(and_count) / (double)denominator;",
        LINKAGE,
        suffix=".c",
    ),
    Mutation(
        "level_cut_off",
        "a similarity exactly at a field's first cut-off no longer reaches it: >= becomes >",
        "reached = (sim >= cut_offs[0]).view(np.int8)",
        "reached = (sim > cut_offs[0]).view(np.int8)",
        LINKAGE,
    ),
    Mutation(
        "role_check",
        "staff may call every method: the role policy admits staff everywhere",
        "return role in self.allowed_roles(method)",
        'return role in self.allowed_roles(method) or role == "staff"',
        COMMON,
    ),
    Mutation(
        "agency_binding",
        "staff of another agency are accepted at a node: != becomes ==",
        "and identity.agency != self._agency",
        "and identity.agency == self._agency",
        COMMON,
    ),
    Mutation(
        "audit_prev_link",
        "the audit chain no longer checks each entry's link to the one before",
        'if entry["prev"] != prev_hash:',
        "if False:",
        COMMON,
    ),
    Mutation(
        "audit_entry_hash",
        "the audit chain no longer checks an entry against its own hash",
        'if entry["hash"] != recomputed:',
        "if False:",
        COMMON,
    ),
)


def _copy_of_head(into: Path) -> None:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=REPO, check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    for built in (REPO / "linkage").glob("_*.so"):
        shutil.copy2(built, into / "linkage" / built.name)
    assets = REPO / "server" / "console" / "frontend" / "node_modules"
    if assets.exists():
        (into / "server" / "console" / "frontend" / "node_modules").symlink_to(assets)


def _apply(tree: Path, mutation: Mutation) -> Path:
    hits = [
        path
        for folder in ("linkage", "server")
        for path in sorted((tree / folder).rglob(f"*{mutation.suffix}"))
        if mutation.original in path.read_text("utf-8")
    ]
    if len(hits) != 1:
        raise SystemExit(
            f"mutation {mutation.name}: its snippet is in {len(hits)} files, expected exactly "
            "one; update benchmarks/mutation.py"
        )
    path = hits[0]
    path.write_text(path.read_text("utf-8").replace(mutation.original, mutation.mutant), "utf-8")
    if mutation.suffix == ".c":
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=tree,
            check=True,
            capture_output=True,
        )
    return path


def _run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            MARKERS,
            *tests,
        ],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(tree)},
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    tail = (result.stdout + result.stderr).decode("utf-8", "replace")[-2000:]
    return result.returncode, time.perf_counter() - started, tail


def _verdict(code: int, tail: str) -> str:
    """``yes`` when a test failed (pytest exits 1, or 2 when xdist stops the run at the first
    failure), ``MISSED`` when every test passed, else the exit code (no verdict)."""
    if code == 0:
        return "MISSED"
    if code in (1, 2) and re.search(r"\b\d+ failed\b", tail):
        return "yes"
    return f"exit {code}"


def run(names: list[str] | None) -> list[dict[str, object]]:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    with tempfile.TemporaryDirectory(prefix="jigsaw-mutant-") as scratch:
        baseline = Path(scratch) / "baseline"
        baseline.mkdir()
        _copy_of_head(baseline)
        every = tuple(sorted({path for m in chosen for path in m.tests}))
        code, seconds, tail = _run_tests(baseline, every)
        print(f"unmutated: pytest exit {code} in {seconds:.0f} s", file=sys.stderr, flush=True)
        if code != 0:
            print(tail, file=sys.stderr)
            raise SystemExit("the unmutated tree fails its tests: no mutation can be judged")
        rows: list[dict[str, object]] = []
        for mutation in chosen:
            tree = Path(scratch) / mutation.name
            tree.mkdir()
            _copy_of_head(tree)
            path = _apply(tree, mutation)
            code, seconds, tail = _run_tests(tree, mutation.tests)
            row: dict[str, object] = {
                "mutation": mutation.name,
                "what": mutation.what,
                "file": str(path.relative_to(tree)),
                "tests": " ".join(mutation.tests),
                "caught": _verdict(code, tail),
                "seconds": round(seconds, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            shutil.rmtree(tree)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[m.name for m in MUTATIONS])
    parser.add_argument("--report", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args(argv)
    rows = run(args.only)
    if args.report:
        from benchmarks.report import write_table_section

        write_table_section(
            "mutation-check",
            "Mutation check",
            "benchmarks.mutation",
            argv,
            "Each mutation changes one comparison in a fresh copy of the committed tree; the "
            f'tests then run (`pytest -x -m "{MARKERS}"`). `caught`: the tests failed. '
            "`seconds`: until pytest stopped (at the first failure when caught).",
            rows,
        )
    return 0 if all(r["caught"] == "yes" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
