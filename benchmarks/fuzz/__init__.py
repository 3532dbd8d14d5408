"""Fuzzing the services and ingest, measured: malformed RPCs and malformed CSV rows.

Two targets, each driven by Hypothesis:

* RPCs: every RPC of the agency node and of the matcher, called through a generic channel
  call (raw bytes, unchecked by the client) with random field values, wrong lengths, huge
  repeated fields, and raw-byte mutations (truncated protobufs, random bytes, wrong wire
  types, invalid UTF-8, another RPC's message). The servers are real (:mod:`server.launcher`
  configs, loopback, mutual TLS from a fresh test PKI), each call made with a real identity's
  certificate, mostly one the method admits.
* CSV rows: good rows mixed with malformed ones (random bytes, stray quotes, other encodings,
  control and bidirectional characters, overlong cells, wrong column counts, formula-like
  names, impossible dates), ingested with :func:`server.node.ingest.ingest_source`.

Properties checked on every input:

* no crash: every call ends with a status in :data:`EXPECTED_CODES` (never ``UNKNOWN``,
  ``INTERNAL`` or a deadline), both servers still answer ``Status``, and ingest raises
  nothing (a broken header may raise :class:`server.node.ingest.SourceError`);
* no leak: no canary identifier (:data:`CANARIES`) planted in the input appears,
  case-insensitively, in a status message, a log record of either server, a line of either
  audit log, or an ingest problem or warning;
* no good row lost: every good row (:func:`good_row`) is stored with its values, and
  ``rows_read == inserted + updated + unchanged + superseded + rejected rows``.

Run: ``python -m benchmarks.fuzz --inputs 100000 --report`` (a JSON line on stdout, progress on
stderr; ``--report`` writes the ``fuzz`` section of benchmarks/RESULTS.md). The test suite
runs the same properties on a few hundred inputs (tests/benchmarks/test_fuzz.py).

Modules: :mod:`.common` (canaries, findings, log capture), :mod:`.federation` (the servers
fuzzed), :mod:`.rpcs` and :mod:`.rows` (the strategies and properties of each target) and
:mod:`.driver` (the runs, the report, the CLI); this package re-exports what the tests use.
"""

from __future__ import annotations

from benchmarks.fuzz.common import (
    CALL_TIMEOUT_S,
    CANARIES,
    CANARY_DOB,
    CANARY_DOB_ISO,
    CANARY_FAMILY,
    CANARY_GIVEN,
    CANARY_NHS,
    CANARY_NHS_SPACED,
    EXPECTED_CODES,
    SCHEMA_NAME,
    CapturedLogs,
    FileTail,
    Findings,
    captured_logs,
    leaked,
)
from benchmarks.fuzz.driver import (
    DESCRIPTION,
    fuzz_workdir,
    hypothesis_settings,
    main,
    report_rows,
    run_csvs,
    run_fuzz,
    run_rpcs,
)
from benchmarks.fuzz.federation import (
    ANCHOR_LIMITS,
    CANARY_ROW,
    IDENTITIES,
    LIMITS,
    MATCH_LIMITS,
    MATCHER_CALLERS,
    NODE_CALLERS,
    POPULATION,
    STREAMING,
    Federation,
)
from benchmarks.fuzz.rows import (
    CSV_COLUMNS,
    CSV_HEADER,
    GOOD_NAMES,
    GOOD_POSTCODES,
    GOOD_SEXES,
    CsvCase,
    bad_line,
    check_csv,
    csv_file,
    good_row,
)
from benchmarks.fuzz.rpcs import (
    CANARY_QUERY,
    FILTER_LENGTHS,
    FREE_TEXT,
    HEX_REFERENCE,
    IDENTIFYING_TEXT,
    PURPOSE_CODE,
    UINT32,
    UINT64,
    check_rpc,
    rpc_request,
)

__all__ = [
    "ANCHOR_LIMITS",
    "CALL_TIMEOUT_S",
    "CANARIES",
    "CANARY_DOB",
    "CANARY_DOB_ISO",
    "CANARY_FAMILY",
    "CANARY_GIVEN",
    "CANARY_NHS",
    "CANARY_NHS_SPACED",
    "CANARY_QUERY",
    "CANARY_ROW",
    "CSV_COLUMNS",
    "CSV_HEADER",
    "DESCRIPTION",
    "EXPECTED_CODES",
    "FILTER_LENGTHS",
    "FREE_TEXT",
    "GOOD_NAMES",
    "GOOD_POSTCODES",
    "GOOD_SEXES",
    "HEX_REFERENCE",
    "IDENTIFYING_TEXT",
    "IDENTITIES",
    "LIMITS",
    "MATCHER_CALLERS",
    "MATCH_LIMITS",
    "NODE_CALLERS",
    "POPULATION",
    "PURPOSE_CODE",
    "SCHEMA_NAME",
    "STREAMING",
    "UINT32",
    "UINT64",
    "CapturedLogs",
    "CsvCase",
    "Federation",
    "FileTail",
    "Findings",
    "bad_line",
    "captured_logs",
    "check_csv",
    "check_rpc",
    "csv_file",
    "fuzz_workdir",
    "good_row",
    "hypothesis_settings",
    "leaked",
    "main",
    "report_rows",
    "rpc_request",
    "run_csvs",
    "run_fuzz",
    "run_rpcs",
]
