"""An agency's share of a batch link: which of its records other agencies hold too.

Role in the pipeline: step 5's way back. After an operator's ``Link`` at the matcher, the
operator asks each node ``FetchLinked``; the node pages through the matcher's
``GetLinkedRecords`` as itself (the matcher answers for the agency of the node's
certificate only: the node's references, the other agencies' names and bands, never their
references) and keeps the answer in its store (:meth:`server.node.store.NodeStore.
replace_linked`, replacing the previous result's whole). ``ListLinked`` then gives the node's
own staff and operators those records by their local ids: the list a multi-agency unit works
from.

Contract: :func:`fetch_linked` reads every page before it writes, so a failed fetch leaves the
previous list in place; rows whose reference the store no longer holds are dropped.
:func:`linked_to_proto` is the one conversion of a stored row to a ``LinkedRecord``.
"""

from __future__ import annotations

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.node.store import LinkedRow, NodeStore

__all__ = ["PAGE_SIZE", "fetch_linked", "linked_to_proto"]

PAGE_SIZE = 1000
PAGE_TIMEOUT_S = 30.0


def fetch_linked(
    store: NodeStore, matcher: jigsaw_pb2_grpc.MatcherStub, result_id: str = ""
) -> tuple[str, int]:
    """Fetch this node's linked records of ``result_id`` ("" = the latest) into ``store``;
    returns (the result id, linked records kept). gRPC errors propagate."""
    rows: list[LinkedRow] = []
    token = ""
    found = result_id
    while True:
        page: jigsaw_pb2.GetLinkedRecordsResponse = matcher.GetLinkedRecords(
            jigsaw_pb2.GetLinkedRecordsRequest(
                result_id=found, page_size=PAGE_SIZE, page_token=token
            ),
            timeout=PAGE_TIMEOUT_S,
        )
        found = page.result_id  # later pages of the same result, even if a newer one lands
        rows.extend(
            LinkedRow(
                reference=record.reference,
                cluster_id=record.cluster_id,
                agencies=tuple((a.agency, int(a.band)) for a in record.agencies),
            )
            for record in page.records
        )
        token = page.next_page_token
        if not token:
            break
    return found, store.replace_linked(found, rows)


def linked_to_proto(row: LinkedRow) -> jigsaw_pb2.LocalLinkedRecord:
    """A stored linked record as a ``LocalLinkedRecord`` (with its local id)."""
    return jigsaw_pb2.LocalLinkedRecord(
        local_id=row.local_id,
        record=jigsaw_pb2.LinkedRecord(
            reference=row.reference,
            cluster_id=row.cluster_id,
            agencies=[
                jigsaw_pb2.LinkedAgency(agency=agency, band=band)  # type: ignore[arg-type]
                for agency, band in row.agencies
            ],
        ),
    )
