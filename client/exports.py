"""Files the client writes from results: link results, an agency's linked records, lookups.

Role: the one place that lays out what ``jigsaw link --out``, ``jigsaw linked --out`` and
``jigsaw lookup --from ... --out`` write, so that the formats are specified once. Every file
is created mode 0600 (it holds references, and for ``linked`` the agency's own local ids) and
every CSV cell passes :func:`client.output.spreadsheet_safe`. The format follows the file's
suffix: ``.csv`` is CSV, ``.jsonl`` (or ``.json``) JSON Lines; anything else is refused.

Link result (operator), CSV, one row per edge that holds a cluster together::

    cluster_id, left_agency, left_reference, right_agency, right_reference, band,
    probability, then one column per schema comparison field (its agreement: exact, strong,
    weak, disagrees, missing, not compared)

Every member of a cluster is an end of at least one of its edges. JSON Lines, one object per
cluster: ``{"cluster_id", "members": [{"agency", "reference"}], "edges": [{"left", "right",
"band", "probability", "evidence": {field: agreement}}]}``, ``left``/``right`` indexing
``members``.

Linked records (an agency's own list), CSV, one row per (record, other agency)::

    local_id, reference, cluster_id, agency, band

JSON Lines, one object per record: ``{"local_id", "reference", "cluster_id", "agencies":
[{"agency", "band"}]}``.

Bands and agreements are the words of :data:`BAND_NAMES` and :data:`AGREEMENT_NAMES`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from client.output import spreadsheet_safe
from linkage.errors import JigsawError

__all__ = [
    "AGREEMENT_NAMES",
    "BAND_NAMES",
    "ExportError",
    "file_format",
    "private_file",
    "write_link_result",
    "write_linked_records",
]

BAND_NAMES = {1: "very high", 2: "high", 3: "possible", 4: "low"}
AGREEMENT_NAMES = {
    1: "exact",
    2: "strong",
    3: "weak",
    4: "disagrees",
    5: "missing",
    6: "not compared",
}
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


class ExportError(JigsawError):
    """An output file that cannot be written as asked (unknown suffix)."""


def file_format(path: Path) -> str:
    """``"csv"`` or ``"jsonl"`` by the suffix of ``path``; ExportError for any other."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ExportError(f"{path.name}: expected a file name ending in .csv or .jsonl")
    return found


@contextmanager
def private_file(path: Path, *, append: bool = False) -> Iterator[IO[str]]:
    """``path`` opened for text writing, created (or narrowed to) mode 0600, never following
    a symbolic link left in its place; a missing directory is created 0700."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
        yield handle


def _safe(row: Sequence[object]) -> list[str]:
    return [spreadsheet_safe(str(cell)) for cell in row]


def _evidence(edge: Any) -> dict[str, str]:
    return {e.field: AGREEMENT_NAMES.get(e.agreement, "?") for e in edge.evidence}


def write_link_result(path: Path, clusters: Iterable[Any]) -> int:
    """Write ``Cluster`` messages to ``path`` (format by suffix); returns clusters written."""
    kind = file_format(path)
    count = 0
    with private_file(path) as handle:
        writer = csv.writer(handle) if kind == "csv" else None
        fields: list[str] | None = None
        for cluster in clusters:
            count += 1
            if writer is None:
                line = {
                    "cluster_id": cluster.cluster_id,
                    "members": [
                        {"agency": m.agency, "reference": m.reference} for m in cluster.members
                    ],
                    "edges": [
                        {
                            "left": e.left,
                            "right": e.right,
                            "band": BAND_NAMES.get(e.band, "?"),
                            "probability": round(e.probability, 6),
                            "evidence": _evidence(e),
                        }
                        for e in cluster.edges
                    ],
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                continue
            for edge in cluster.edges:
                evidence = _evidence(edge)
                if fields is None:
                    fields = list(evidence)
                    writer.writerow(_safe(LINK_CSV_HEADER + fields))
                left, right = cluster.members[edge.left], cluster.members[edge.right]
                writer.writerow(
                    _safe(
                        [
                            cluster.cluster_id,
                            left.agency,
                            left.reference,
                            right.agency,
                            right.reference,
                            BAND_NAMES.get(edge.band, "?"),
                            f"{edge.probability:.6f}",
                            *(evidence.get(name, "") for name in fields),
                        ]
                    )
                )
        if writer is not None and fields is None:
            writer.writerow(LINK_CSV_HEADER)
    return count


LINK_CSV_HEADER = [
    "cluster_id",
    "left_agency",
    "left_reference",
    "right_agency",
    "right_reference",
    "band",
    "probability",
]
LINKED_CSV_HEADER = ["local_id", "reference", "cluster_id", "agency", "band"]


def write_linked_records(path: Path, records: Iterable[Any]) -> int:
    """Write ``LocalLinkedRecord`` messages to ``path``; returns records written."""
    kind = file_format(path)
    count = 0
    with private_file(path) as handle:
        writer = csv.writer(handle)
        if kind == "csv":
            writer.writerow(LINKED_CSV_HEADER)
        for local in records:
            count += 1
            record = local.record
            agencies = [
                {"agency": a.agency, "band": BAND_NAMES.get(a.band, "?")} for a in record.agencies
            ]
            if kind == "csv":
                for other in agencies:
                    writer.writerow(
                        _safe(
                            [
                                local.local_id,
                                record.reference,
                                record.cluster_id,
                                other["agency"],
                                other["band"],
                            ]
                        )
                    )
            else:
                line = {
                    "local_id": local.local_id,
                    "reference": record.reference,
                    "cluster_id": record.cluster_id,
                    "agencies": agencies,
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return count


FIELD_SHORT = {
    "given_name": "given",
    "middle_names": "middle",
    "family_name": "family",
    "date_of_birth": "dob",
    "nhs_number": "nhs",
}


def evidence_text(evidence: Sequence[Any]) -> str:
    """Compact per-field evidence, e.g. ``given exact · dob transposed? · postcode disagrees``."""
    parts = [
        f"{FIELD_SHORT.get(e.field, e.field)} {AGREEMENT_NAMES.get(e.agreement, '?')}"
        for e in evidence
        if e.agreement != 5  # missing on either side: neutral, not shown
    ]
    return " · ".join(parts)
