"""Pages of a stored link result: opaque page tokens and the two paged reads.

Role: ``GetLinkResult`` (an operator pages through every cluster) and ``GetLinkedRecords`` (a
node pages through its own records that share a cluster with another agency's) read the
clusters of one completed link result from the :class:`~server.matcher.store.MatcherStore`
in order; a page ends after ``page_size`` clusters (or records), or before
:data:`MAX_PAGE_BYTES` of clusters (a single larger cluster still goes, alone on its page).

Contract: a page token is unpadded URL-safe base64 of ``"<result_id>:<offset>"`` and is
accepted only for the result it was made for and an offset within it (anything else is
``INVALID_ARGUMENT`` naming ``page_token``); an unknown or unfinished result is
``NOT_FOUND``. ``GetLinkedRecords`` gives the caller's agency's own members only, with the
other agencies' names and bands, never their references.
"""

from __future__ import annotations

import base64
import binascii
import re

from proto.jigsaw.v1 import jigsaw_pb2
from server.common.status import NotFoundError, RequestError
from server.matcher.results import LinkResultInfo
from server.matcher.store import MatcherStore
from server.matcher.wire import cluster_to_proto, linked_records

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: A GetLinkResult page stops before this many bytes of clusters (under gRPC's 4 MiB default);
#: a single larger cluster is still sent whole, alone on its page.
MAX_PAGE_BYTES = 3 * 2**20

_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
_PAGE_TOKEN = re.compile(r"^([0-9a-f]{32}):([0-9]{1,12})$")


def encode_page_token(result_id: str, offset: int) -> str:
    """Opaque page token: unpadded URL-safe base64 of ``"<result_id>:<offset>"``."""
    raw = f"{result_id}:{offset}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str, result_id: str, total: int) -> int:
    """The cluster offset of ``token`` ("" = 0); RequestError unless it belongs to this result."""
    if not token:
        return 0
    invalid = RequestError(
        "page_token", "not a page token of this result; pass next_page_token back unchanged"
    )
    if len(token) > 80:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise invalid from None
    match = _PAGE_TOKEN.match(raw)
    if match is None or match.group(1) != result_id:
        raise invalid
    offset = int(match.group(2))
    if not 0 < offset <= total:
        raise invalid
    return offset


def _page_size(requested: int) -> int:
    page_size = requested or DEFAULT_PAGE_SIZE
    if page_size > MAX_PAGE_SIZE:
        raise RequestError("page_size", f"at most {MAX_PAGE_SIZE}")
    return page_size


def link_result_page(
    store: MatcherStore,
    comparison_names: tuple[str, ...],
    request: jigsaw_pb2.GetLinkResultRequest,
) -> jigsaw_pb2.GetLinkResultResponse:
    """The page of a completed link result's clusters that ``request`` asks for."""
    result_id = request.result_id
    if not _RESULT_ID.match(result_id):
        raise RequestError("result_id", "expected 32 lowercase hex characters")
    info = store.link_result(result_id)
    if info is None or info.status != "complete":
        raise NotFoundError("result_id: no completed link result with this id")
    page_size = _page_size(request.page_size)
    offset = decode_page_token(request.page_token, result_id, info.total_clusters)
    stored = store.link_clusters(result_id, offset=offset, limit=page_size)
    clusters: list[jigsaw_pb2.Cluster] = []
    page_bytes = 0
    for i, cluster in enumerate(stored):
        message = cluster_to_proto(f"{result_id}-{offset + i}", cluster, comparison_names)
        page_bytes += message.ByteSize()
        if clusters and page_bytes > MAX_PAGE_BYTES:
            break  # the page ends early; next_page_token continues from this cluster
        clusters.append(message)
    end = offset + len(clusters)
    return jigsaw_pb2.GetLinkResultResponse(
        clusters=clusters,
        next_page_token=encode_page_token(result_id, end) if end < info.total_clusters else "",
        total_clusters=info.total_clusters,
        total_records=info.total_records,
    )


def linked_records_page(
    store: MatcherStore, agency: str, request: jigsaw_pb2.GetLinkedRecordsRequest
) -> jigsaw_pb2.GetLinkedRecordsResponse:
    """The page of ``agency``'s own linked records that ``request`` asks for (the latest
    completed result when it names none)."""
    if request.result_id and not _RESULT_ID.match(request.result_id):
        raise RequestError("result_id", "expected 32 lowercase hex characters or empty")
    info: LinkResultInfo | None = (
        store.link_result(request.result_id) if request.result_id else store.latest_link_result()
    )
    if info is None or info.status != "complete":
        raise NotFoundError("result_id: no completed link result (run a link first)")
    page_size = _page_size(request.page_size)
    offset = decode_page_token(request.page_token, info.result_id, info.total_clusters)
    records: list[jigsaw_pb2.LinkedRecord] = []
    while offset < info.total_clusters and len(records) < page_size:
        chunk = store.link_clusters(info.result_id, offset=offset, limit=page_size)
        for cluster in chunk:
            records.extend(linked_records(f"{info.result_id}-{offset}", cluster, agency))
            offset += 1
            if len(records) >= page_size:
                break
    return jigsaw_pb2.GetLinkedRecordsResponse(
        result_id=info.result_id,
        records=records,
        next_page_token=(
            encode_page_token(info.result_id, offset) if offset < info.total_clusters else ""
        ),
    )


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_SIZE",
    "decode_page_token",
    "encode_page_token",
    "link_result_page",
    "linked_records_page",
]
