"""Canaries, findings and log capture: what every fuzz target checks its outputs against."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- canaries

CANARY_GIVEN = "Zebedina"
CANARY_FAMILY = "Quixotesque"
CANARY_DOB = "17/09/2013"
CANARY_DOB_ISO = "2013-09-17"
CANARY_NHS = "9434765919"  # a valid NHS number (check digit 9)
CANARY_NHS_SPACED = "943 476 5919"
#: Every identifier value planted; none may come out anywhere but a response's own fields.
CANARIES = (CANARY_GIVEN, CANARY_FAMILY, CANARY_DOB, CANARY_DOB_ISO, CANARY_NHS, CANARY_NHS_SPACED)
_NEEDLES = tuple(c.lower() for c in CANARIES)

#: The statuses a call may end with: a refusal of some kind, or success.
EXPECTED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)
CALL_TIMEOUT_S = 30.0
SCHEMA_NAME = "child"


def leaked(text: str) -> list[str]:
    """The canaries found in ``text`` (case-insensitive)."""
    lowered = text.lower()
    return [needle for needle in _NEEDLES if needle in lowered]


# --------------------------------------------------------------------------- results


@dataclass
class Findings:
    """What a run saw: inputs tried, and every crash, leak and lost good row (described
    without the input's values, by RPC and code or by CSV line)."""

    rpc_calls: int = 0
    csv_files: int = 0
    csv_rows: int = 0
    csv_good_rows: int = 0
    crashes: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    good_rows_lost: int = 0
    count_mismatches: int = 0
    codes: Counter[str] = field(default_factory=Counter)

    @property
    def inputs(self) -> int:
        """RPC calls made and CSV rows written (each row is one fuzzed input)."""
        return self.rpc_calls + self.csv_rows

    def problems(self) -> list[str]:
        lost = [f"{self.good_rows_lost} good rows lost"] if self.good_rows_lost else []
        counts = (
            [f"{self.count_mismatches} ingests whose counts do not add up"]
            if self.count_mismatches
            else []
        )
        return self.crashes + self.leaks + lost + counts


# --------------------------------------------------------------------------- log capture


class CapturedLogs(logging.Handler):
    """Every log record of the process (root logger, every level), kept as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._lock_texts = threading.Lock()
        self._texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
        except Exception:  # a record whose arguments do not format: keep what it has
            text = f"{record.name}: {record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + "".join(logging.Formatter().formatException(record.exc_info))
        with self._lock_texts:
            self._texts.append(text)

    def take(self) -> list[str]:
        with self._lock_texts:
            texts, self._texts = self._texts, []
        return texts


@contextmanager
def captured_logs() -> Iterator[CapturedLogs]:
    handler = CapturedLogs()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class FileTail:
    """The text appended to a file since the last read (an audit log)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def take(self) -> str:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return ""
        self._offset += len(data)
        return data.decode("utf-8", "replace")
