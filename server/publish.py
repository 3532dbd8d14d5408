"""Publish: encode the node's pending records and stream them to the matcher; send withdrawals.

Role in the pipeline: step 2 of the data flow (node → matcher). Records the matcher does not
hold yet (new or changed since their last acknowledged publication, see ``server.node_store``)
are read in groups of ``batch_size * batches_per_call``, encoded with
:func:`linkage.encode.encode_records` in batches of ``batch_size`` and sent in one client-streaming
``Publish`` call: the first ``PublishRequest`` carries the :class:`EncodingHeader` (schema
fingerprint and key version) and the first batch, later messages one batch each. Only after
the call returns are those records marked published, with the content hash of exactly what
was sent. Deleted records that were published are then sent in ``Withdraw`` calls and purged.

Idempotent and resumable: the matcher upserts by (agency, reference) and a record keeps its
reference for life, so a crash between sending and marking only causes a harmless re-send.
When the schema fingerprint or key version differs from the one recorded at the last
publication (store meta ``published_encoding``), every record is marked unpublished first so
the matcher receives fresh encodings of everything.

gRPC errors (``grpc.RpcError``) propagate to the caller; nothing is marked for a failed call.
Logs carry counts and the fingerprint only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from linkage.encode import encode_records
from linkage.keys import KeySet
from linkage.schema import Schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.convert import encoded_to_proto
from server.node_store import NodeStore, content_hash

logger = logging.getLogger(__name__)

WITHDRAW_CHUNK = 10_000
PUBLISHED_ENCODING_META = "published_encoding"

ProgressCallback = Callable[[int], None]
PendingRecord = tuple[str, str, dict[str, str | None]]


@dataclass(frozen=True)
class PublishReport:
    """Records published and withdrawn, and how many RPCs it took."""

    published: int
    withdrawn: int
    calls: int


def _encoding_tag(schema: Schema, keys: KeySet) -> str:
    return f"{schema.fingerprint()} k{keys.key_version}"


def _requests(
    records: Sequence[PendingRecord],
    schema: Schema,
    keys: KeySet,
    header: jigsaw_pb2.EncodingHeader,
    batch_size: int,
) -> Iterator[jigsaw_pb2.PublishRequest]:
    """The messages of one Publish stream, encoded lazily batch by batch."""
    for start in range(0, len(records), batch_size):
        group = records[start : start + batch_size]
        columns = {
            spec.name: [fields.get(spec.name) for _, _, fields in group] for spec in schema.fields
        }
        batch = encode_records(schema, keys, columns)
        message = jigsaw_pb2.PublishRequest(
            records=encoded_to_proto(batch, [reference for _, reference, _ in group])
        )
        if start == 0:
            message.header.CopyFrom(header)
        yield message


def publish_pending(
    store: NodeStore,
    schema: Schema,
    keys: KeySet,
    stub: jigsaw_pb2_grpc.MatcherStub,
    *,
    batch_size: int,
    batches_per_call: int = 20,
    timeout_s: float = 120,
    progress: ProgressCallback | None = None,
) -> PublishReport:
    """Publish every pending record and withdraw every deleted one (see the module docstring)."""
    if batch_size < 1 or batches_per_call < 1:
        raise ValueError("batch_size and batches_per_call must be >= 1")
    tag = _encoding_tag(schema, keys)
    if store.get_meta(PUBLISHED_ENCODING_META) != tag:
        reset = store.reset_publication()
        if reset:
            logger.info("schema or key version changed: %d records to re-publish", reset)
        store.set_meta(PUBLISHED_ENCODING_META, tag)
    header = jigsaw_pb2.EncodingHeader(
        schema_fingerprint=schema.fingerprint(), key_version=keys.key_version
    )
    published = withdrawn = calls = 0
    per_call = batch_size * batches_per_call
    while True:
        records = store.pending_publish(per_call)
        if not records:
            break
        response = stub.Publish(
            _requests(records, schema, keys, header, batch_size), timeout=timeout_s
        )
        calls += 1
        store.mark_published((reference, content_hash(fields)) for _, reference, fields in records)
        published += len(records)
        logger.info(
            "published %d records (matcher: %d inserted, %d replaced, %d unchanged)",
            len(records), response.inserted, response.replaced, response.unchanged,
        )  # fmt: skip
        if progress is not None:
            progress(published)

    references = store.pending_withdraw()
    for start in range(0, len(references), WITHDRAW_CHUNK):
        chunk = references[start : start + WITHDRAW_CHUNK]
        stub.Withdraw(jigsaw_pb2.WithdrawRequest(references=chunk), timeout=timeout_s)
        calls += 1
        withdrawn += store.mark_withdrawn(chunk)
    if withdrawn:
        logger.info("withdrew %d records", withdrawn)
    return PublishReport(published=published, withdrawn=withdrawn, calls=calls)
