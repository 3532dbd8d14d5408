"""The fuzz run: Hypothesis settings, the RPC and CSV runs, the report and the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from benchmarks.fuzz.common import SCHEMA_NAME, CapturedLogs, Findings, captured_logs
from benchmarks.fuzz.federation import Federation
from benchmarks.fuzz.rows import CsvCase, check_csv, csv_file
from benchmarks.fuzz.rpcs import check_rpc, rpc_request
from linkage.schema import Schema, load_schema

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- runs


def hypothesis_settings(examples: int, *, search: bool) -> settings:
    """``search``: a benchmark's plain generation (no shrinking, nothing stored); otherwise
    the test suite's derandomised run, shrinking a failure to a small example."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not search,
        phases=[Phase.generate] if search else [Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


@contextmanager
def fuzz_workdir() -> Iterator[Path]:
    """A scratch directory, in memory where the machine has one (stores are fsynced)."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() else None
    directory = Path(tempfile.mkdtemp(prefix="jigsaw-fuzz-", dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_rpcs(fed: Federation, logs: CapturedLogs, findings: Findings, examples: int) -> None:
    @seed(15)
    @hypothesis_settings(examples, search=True)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        check_rpc(fed, logs, findings, data.draw(rpc_request(fed)))

    run()


def run_csvs(
    workdir: Path, schema: Schema, logs: CapturedLogs, findings: Findings, examples: int
) -> None:
    @seed(15)
    @hypothesis_settings(examples, search=True)
    @given(csv_file())
    def run(case: CsvCase) -> None:
        check_csv(workdir, schema, logs, findings, case)

    run()


def run_fuzz(
    inputs: int, *, rpc_share: float = 0.5, progress: Callable[[str], None] | None = None
) -> tuple[Findings, float]:
    """Fuzz about ``inputs`` inputs (RPC calls and CSV rows, ``rpc_share`` of them RPCs);
    returns the findings and the seconds taken. Hypothesis runs in batches so that progress
    can be reported; every batch uses the same seed, and the servers' state moves on."""
    findings = Findings()
    started = time.perf_counter()
    rpc_target = round(inputs * rpc_share)
    csv_target = inputs - rpc_target
    batch = 5000
    with fuzz_workdir() as workdir, captured_logs() as logs:
        fed = Federation(workdir / "federation")
        try:
            logs.take()
            while findings.rpc_calls < rpc_target:
                before = findings.rpc_calls
                run_rpcs(fed, logs, findings, min(batch, rpc_target - findings.rpc_calls))
                if progress:
                    progress(
                        f"rpc: {findings.rpc_calls} calls, {len(findings.problems())} problems"
                    )
                if findings.rpc_calls == before:
                    break
            serving = fed.serving()
        finally:
            fed.close()
        if not serving:
            findings.crashes.append("crash: a server stopped answering Status")
        schema = load_schema(SCHEMA_NAME)
        csv_dir = workdir / "csv"
        csv_dir.mkdir()
        while findings.csv_rows < csv_target:
            before = findings.csv_rows
            files = min(batch, (csv_target - findings.csv_rows) // 5 + 1)
            run_csvs(csv_dir, schema, logs, findings, files)
            if progress:
                progress(
                    f"csv: {findings.csv_files} files, {findings.csv_rows} rows, "
                    f"{len(findings.problems())} problems"
                )
            if findings.csv_rows == before:
                break
    return findings, time.perf_counter() - started


def report_rows(findings: Findings, seconds: float) -> list[dict[str, object]]:
    return [
        {
            "inputs tried": findings.inputs,
            "RPC calls": findings.rpc_calls,
            "CSV files": findings.csv_files,
            "CSV rows": findings.csv_rows,
            "good CSV rows": findings.csv_good_rows,
            "crashes": len(findings.crashes),
            "identifier leaks": len(findings.leaks),
            "good rows lost": findings.good_rows_lost,
            "count mismatches": findings.count_mismatches,
            "seconds": round(seconds),
        }
    ]


DESCRIPTION = (
    "Malformed RPCs to every method of a real matcher and police node (mutual TLS on "
    "loopback; random field values, wrong lengths, huge repeated fields, truncated and "
    "mutated protobufs, invalid UTF-8, wrong wire types) and malformed CSV files (random "
    "bytes, stray quotes, other encodings, control characters, overlong cells, missing and "
    "extra columns) mixed with good rows, generated with Hypothesis (see benchmarks/fuzz/). "
    "Inputs = RPC calls + CSV rows. A crash is a status outside OK, INVALID_ARGUMENT, "
    "PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, NOT_FOUND, a server that "
    "stops answering, or an ingest exception; a leak is a planted canary identifier (name, "
    "date of birth, NHS number) in a status message, log record, audit line or ingest "
    "problem; a good row is lost when it is not stored with its values; counts must satisfy "
    "read = stored + superseded + rejected."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--inputs", type=int, default=10_000, help="RPC calls + CSV rows")
    parser.add_argument("--rpc-share", type=float, default=0.5)
    parser.add_argument("--report", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    logging.getLogger("hypothesis").setLevel(logging.WARNING)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    findings, seconds = run_fuzz(args.inputs, rpc_share=args.rpc_share, progress=progress)
    rows = report_rows(findings, seconds)
    print(json.dumps({**rows[0], "problems": findings.problems()[:20]}))
    if args.report:
        from benchmarks.report import write_table_section

        detail = ""
        if findings.problems():
            detail = "\n\nProblems seen (first 20):\n\n" + "\n".join(
                f"- {p}" for p in findings.problems()[:20]
            )
        write_table_section(
            "fuzz", "Fuzzing: malformed RPCs and CSV rows", "benchmarks.fuzz", argv,
            DESCRIPTION + detail, rows,
        )  # fmt: skip
    return 0 if not findings.problems() else 1
