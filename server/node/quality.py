"""Data-quality feedback per agency: what its records look like to linkage.

Role in the pipeline: after ingest (step 1) every source's counts are kept in the node's
store (by :func:`server.node.ingest.ingest_source`); after a link
(step 5, once the node has fetched its linked records) the store knows which of its records
other agencies hold too. :func:`data_quality` puts both together, from the store alone, as a
``DataQuality`` message: the node's ``Status`` answers with it, and ``jigsaw quality`` prints
it (or its JSON, field names as in the proto, where every field is documented).

Figures, per source (its last ingest): rows read, stored, superseded, rejected by reason
category and field, NHS numbers that failed their check (stored as missing), and the share of
stored rows missing each schema field. Over the store: live records, the share missing each
field, the share holding an NHS number (England's Child Protection Information Sharing
service asks for 95 % of a council's records matched to NHS numbers), and after a link the
share of records linked to another agency, overall and among those without an NHS number.

Contract: counts of categories and fields only. A summary holds reason codes
(:data:`server.node.ingest.PROBLEM_CATEGORIES`), field names and numbers, never a value, a line
number or a local id, so it can be shown to anyone who may see the node's status. The store
figures scan the live records once (a few hundred milliseconds per million records).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from proto.jigsaw.v1 import jigsaw_pb2
from server.node.store import NodeStore

if TYPE_CHECKING:
    from linkage.schema import Schema

__all__ = ["data_quality", "nhs_number_field"]


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def nhs_number_field(schema: Schema) -> str:
    """The input name of the schema's NHS-number field, or "" when it has none."""
    for spec in schema.comparison_specs:
        if spec.kind == "nhs_number":
            return spec.input_name
    return ""


def _source_to_proto(name: str, ingested_at: str, summary_json: str) -> jigsaw_pb2.SourceQuality:
    summary = json.loads(summary_json)
    stored = int(summary["stored"])
    rows_read = int(summary["rows_read"])
    return jigsaw_pb2.SourceQuality(
        source=name,
        ingested_at=ingested_at,
        rows_read=rows_read,
        stored=stored,
        superseded=int(summary["superseded"]),
        rejected_rows=int(summary["rejected_rows"]),
        rejected_share=_share(int(summary["rejected_rows"]), rows_read),
        rejected=[jigsaw_pb2.RejectReason(**entry) for entry in summary["rejected"]],
        invalid_nhs_numbers=int(summary["invalid_nhs_numbers"]),
        missing=[
            jigsaw_pb2.FieldMissing(field=field, missing=count, share=_share(count, stored))
            for field, count in summary["missing"].items()
        ],
    )


def data_quality(store: NodeStore, schema: Schema) -> jigsaw_pb2.DataQuality:
    """The agency's data quality from its store (see the module docstring)."""
    fields = list(schema.input_names)
    records, missing = store.missing_counts(fields)
    nhs = nhs_number_field(schema)
    without_nhs = missing.get(nhs, 0) if nhs else 0
    result_id = store.get_meta("linked_result_id") or ""
    link = jigsaw_pb2.LinkQuality()
    if result_id:
        _, linked_without_nhs, linked = store.linked_without(nhs) if nhs else (0, 0, 0)
        if not nhs:
            linked = store.linked_count()
        link = jigsaw_pb2.LinkQuality(
            result_id=result_id,
            fetched_at=store.get_meta("linked_fetched_at") or "",
            linked=linked,
            linked_share=_share(linked, records),
            linked_without_nhs_number=linked_without_nhs,
            linked_share_without_nhs_number=_share(linked_without_nhs, without_nhs),
        )
    return jigsaw_pb2.DataQuality(
        sources=[_source_to_proto(*row) for row in store.source_quality()],
        records=records,
        missing=[
            jigsaw_pb2.FieldMissing(field=f, missing=missing[f], share=_share(missing[f], records))
            for f in fields
        ],
        nhs_number_field=nhs,
        with_nhs_number=records - without_nhs if nhs else 0,
        nhs_number_share=_share(records - without_nhs, records) if nhs else 0.0,
        without_nhs_number=without_nhs,
        link=link,
    )
