"""Batch lookups from a CSV file, for operators and analysts: paced, resumable, retried.

Role: ``jigsaw lookup --from queries.csv --out results.jsonl``. Each data row of the CSV is
one lookup at the caller's own node (:meth:`client.client.NodeClient.lookup`), its
identifiers read through a column mapping as in a node's source (schema field -> column;
by default every column other than the id column is the field of its own name, empty cells
left out).

Contract
    Output: JSON Lines, one object per input row, appended and flushed as each lookup
    finishes: ``{"line": N, "id": ..., "lookup_id", "candidates": [{"agency", "reference",
    "band", "evidence": {field: agreement}}], "notes": [...]}``; a row the node refuses as
    invalid gets ``{"line", "id", "error": "<field and expectation>"}`` (the node's message,
    which never holds a value) and the batch goes on: nothing is lost for a bad neighbour.
    ``line`` is the CSV line number (the header is line 1); ``id`` the id column's value.
    Resumable: lines already in the output file are skipped, so running the same command
    again after an interruption finishes the batch without repeating a lookup.
    Pacing: lookups start at most ``per_minute`` a minute (the node's default limit). The
    limits a person meets are per minute (the node's and the matcher's token buckets) and
    per hour (the matcher's cap on a person's answered lookups, 250 at its defaults); a
    batch waits within them rather than failing. gRPC's retry policy
    (:data:`client.client.NODE_SERVICE_CONFIG`) retries a refusal for a rate limit or an
    unavailable node after the server's pushback when the wait is short (at most
    :data:`~proto.jigsaw.v1.transport.MAX_PUSHBACK_S`), inside the call, whose deadline
    (:data:`BATCH_LOOKUP_DEADLINE_S` plus those waits) allows for it. A longer wait (an
    hourly cap) comes back at once as the refusal with the server's ``retry-after-s``: the
    batch waits it out in the open (``BatchReport.waiting_s``, shown by the CLI's progress)
    and tries the row again, at the same pace (the limits free up at the pace they were
    used); at most ``max_wait_s`` in all for one row, then the batch stops (exit 3; run it
    again to resume). ``max_wait_s`` defaults to :data:`DEFAULT_MAX_WAIT_S`, longer than any
    limit's window, so at the shipped limits nothing surfaces as an error: 500 lookups by
    one person take about 70 minutes (250 in the first 8 or so, then a wait until the
    hour's first lookups age out).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from client.client import LOOKUP_ATTEMPTS
from client.exports import AGREEMENT_NAMES, BAND_NAMES, private_file
from linkage.errors import JigsawError
from proto.jigsaw.v1.transport import MAX_PUSHBACK_S, retry_after_from_metadata

__all__ = ["BatchError", "BatchReport", "QueryRow", "read_queries", "run_batch"]

#: One lookup's own deadline (the matcher's first lookup fits its model).
BATCH_LOOKUP_DEADLINE_S = 120.0
#: A batch lookup's deadline: its own, and the pushback of each retry gRPC may make inside
#: the call at its longest.
BATCH_CALL_DEADLINE_S = BATCH_LOOKUP_DEADLINE_S + (LOOKUP_ATTEMPTS - 1) * MAX_PUSHBACK_S
#: The longest window a rate limit counts over (the matcher's hourly caps and the node's
#: enumeration alert count over an hour), and the default wait for one row: longer, so an
#: hourly cap is waited out.
LONGEST_LIMIT_WINDOW_S = 3600.0
DEFAULT_MAX_WAIT_S = LONGEST_LIMIT_WINDOW_S + 60.0


class BatchError(JigsawError):
    """The query file cannot be read as asked (missing column, no header)."""


@dataclass(frozen=True)
class QueryRow:
    line: int
    id: str
    identifiers: Mapping[str, str]


@dataclass
class BatchReport:
    rows: int = 0
    skipped: int = 0
    done: int = 0
    invalid: int = 0
    waits: int = 0
    #: seconds the batch is waiting for a limit right now (0 while it looks up)
    waiting_s: float = 0.0


def read_queries(
    path: Path, columns: Mapping[str, str] | None, id_column: str | None
) -> Iterator[QueryRow]:
    """The rows of ``path`` as lookups; ``columns`` maps schema field -> CSV column."""
    handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 (a generator's file)
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise BatchError(f"{path.name}: empty file; expected a header line")
        index = {name: i for i, name in enumerate(header)}
        wanted = dict(columns) if columns else {n: n for n in header if n != id_column}
        missing = [c for c in [*wanted.values(), *([id_column] if id_column else [])]]
        missing = [c for c in missing if c not in index]
        if missing:
            raise BatchError(
                f"{path.name}: header lacks column(s) {', '.join(missing)}; "
                f"it has {', '.join(header)}"
            )
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BatchError(
                    f"{path.name} line {number}: expected {len(header)} cells, found {len(row)}"
                )
            identifiers = {
                field: row[index[column]].strip()
                for field, column in wanted.items()
                if row[index[column]].strip()
            }
            yield QueryRow(number, row[index[id_column]] if id_column else "", identifiers)


def _done_lines(path: Path) -> set[int]:
    if not path.exists():
        return set()
    done = set()
    for text in path.read_text("utf-8").splitlines():
        try:
            done.add(int(json.loads(text)["line"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut off by an interruption: that row runs again
    return done


def _result(row: QueryRow, response: Any) -> dict[str, Any]:
    return {
        "line": row.line,
        "id": row.id,
        "lookup_id": response.lookup_id,
        "candidates": [
            {
                "agency": c.agency,
                "reference": c.reference,
                "band": BAND_NAMES.get(c.band, "?"),
                "evidence": {e.field: AGREEMENT_NAMES.get(e.agreement, "?") for e in c.evidence},
            }
            for c in response.candidates
        ],
        "notes": list(response.notes),
    }


def run_batch(
    node: Any,
    rows: Iterator[QueryRow],
    out_path: Path,
    *,
    purpose_code: str,
    note: str,
    per_minute: float,
    max_candidates: int = 10,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    progress: Callable[[BatchReport], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BatchReport:
    """Look every row up at ``node`` (a NodeClient), appending results to ``out_path``."""
    report = BatchReport()
    already = _done_lines(out_path)
    interval = 60.0 / per_minute
    next_start = clock()
    with private_file(out_path, append=True) as handle:
        for row in rows:
            report.rows += 1
            if row.line in already:
                report.skipped += 1
                continue
            waited = 0.0
            while True:
                pause = next_start - clock()
                if pause > 0:
                    sleep(pause)
                next_start = max(next_start, clock()) + interval
                try:
                    response = node.lookup(
                        row.identifiers,
                        purpose_code=purpose_code,
                        note=note,
                        max_candidates=max_candidates,
                        timeout=BATCH_CALL_DEADLINE_S,
                    )
                    line: dict[str, Any] = _result(row, response)
                    report.done += 1
                    break
                except grpc.RpcError as exc:
                    code = exc.code() if isinstance(exc, grpc.Call) else None
                    if code == grpc.StatusCode.INVALID_ARGUMENT:
                        details = exc.details() if isinstance(exc, grpc.Call) else ""
                        line = {"line": row.line, "id": row.id, "error": details or ""}
                        report.invalid += 1
                        break
                    if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    # past gRPC's own attempts: wait as the server says, then go on at the
                    # same pace (a limit frees up at the pace it was used)
                    trailer = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
                    wait = retry_after_from_metadata(trailer) or interval
                    if waited + wait > max_wait_s:
                        raise
                    waited += wait
                    report.waits += 1
                    next_start = clock() + wait
                    if progress is not None:
                        report.waiting_s = wait
                        progress(report)
                        report.waiting_s = 0.0
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            handle.flush()
            if progress is not None:
                progress(report)
    return report
