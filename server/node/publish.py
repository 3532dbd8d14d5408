"""Publish: encode the node's pending records and stream them to the matcher; send withdrawals.

Role in the pipeline: step 2 of the data flow (node → matcher). Records the matcher does not
hold yet (new or changed since their last acknowledged publication, see ``server.node.store``)
are read in groups of ``batch_size * batches_per_call`` (keyset pages in store order), each
group encoded with one :func:`linkage.forms.encode_forms` call and sent in one
client-streaming ``Publish`` call of at most ``batch_size`` rows per message: the first
``PublishRequest`` carries the :class:`EncodingHeader` (schema fingerprint and key version) and
the first batch, later messages one batch each. A batch travels as ``EncodedColumns`` (a few
large byte strings, layout in :mod:`server.common.wire`) rather than one ``EncodedRecord`` per
row, which is far cheaper to build and to parse.

Forms: a record lacking a salt field with few values (the shipped schema: sex, which salts
the date of birth) is published as one row per value, each a *form* of it
(:mod:`linkage.forms`), under a reference derived from the record's
(:func:`linkage.forms.form_reference`) with ``form_of`` set to the record's reference; any
other record is one row under its own reference, ``form_of`` empty. A record's rows are
consecutive and never straddle two messages (``batch_size`` counts rows, as the matcher's
``max_publish_batch`` does; a message ends early rather than split a record): the matcher
replaces a record's stored forms by exactly those one message carries, drops the record's
own row when it arrives as forms and its forms when it arrives as itself (a record that
gained a sex), removes the forms with the record on ``Withdraw``, and answers lookups and
link clusters under the record's reference. So the node withdraws, and ``Disclose``
resolves, records by their own reference only.

Only after the call returns, and only if the matcher acknowledges every row sent (a matcher
that predates ``columns`` would ignore them and acknowledge none) and takes every form as a
form (``PublishResponse.forms``: one that predates forms reports none), are those records marked
published, with the content hash of exactly what was sent. Deleted records that were
published are then sent in ``Withdraw`` calls and purged.

Speed: encoding dominates a publish, and the encoder normalises, tokenises and hashes each
distinct value and token once per call, so one call over the whole group costs much less than
one per message. A producer thread reads and encodes group n + 1 while group n is in
flight and being marked (it starts on a group only once the previous one was taken, so at
most two groups are held), so the matcher is not left idle while the node encodes. The bytes
sent are those of encoding message by message (the encoder's output for a record, forms
included, does not depend on its batch; tested).

Idempotent and resumable: the matcher upserts by (agency, reference), a record keeps its
reference for life and its forms' references are derived from it, so a crash between sending
and marking only causes a harmless re-send.
A pass pages through the store once; records changed while it ran stay pending (their new
hash differs from the one marked) and a further pass publishes them, until a pass finds
nothing. When the schema fingerprint, the key version or the publication format
(:data:`PUBLICATION_FORMAT`) differs from the one recorded at the last publication (store meta
``published_encoding``), every record is marked unpublished first so the matcher receives
fresh encodings of everything.

gRPC errors (``grpc.RpcError``), encoding errors and :class:`PublishNotAcknowledged` propagate
to the caller; nothing is marked for a failed call, and the producer thread is stopped and
joined before the error leaves.
Logs carry counts and the fingerprint only.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from linkage.errors import JigsawError
from linkage.forms import NO_FORM, encode_forms, form_reference
from linkage.keys import KeySet
from linkage.schema import Schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.wire import encoded_to_columns, encoded_to_proto
from server.node.store import NodeStore, PendingRecord

logger = logging.getLogger(__name__)

WITHDRAW_CHUNK = 10_000
PUBLISHED_ENCODING_META = "published_encoding"
#: How records become published rows; part of the ``published_encoding`` tag
PUBLICATION_FORMAT = "forms1"

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class PublishReport:
    """Records published and withdrawn, and how many RPCs it took."""

    published: int
    withdrawn: int
    calls: int


class PublishNotAcknowledged(JigsawError):
    """The matcher acknowledged fewer records than a Publish call sent (nothing is marked).

    A ``JigsawError``, so ``jigsaw publish`` reports it as one line and exits 1."""


def _encoding_tag(schema: Schema, keys: KeySet) -> str:
    """The tag whose change re-publishes everything: schema, key version and the way records
    become rows (a store published before forms has a tag without ``forms1``, so its records
    lacking a salt are re-sent once, as forms)."""
    return f"{schema.fingerprint()} k{keys.key_version} {PUBLICATION_FORMAT}"


def encode_messages(
    records: Sequence[PendingRecord],
    schema: Schema,
    keys: KeySet,
    header: jigsaw_pb2.EncodingHeader,
    batch_size: int,
    *,
    columnar: bool = True,
) -> list[jigsaw_pb2.PublishRequest]:
    """The messages of one Publish stream: ``records`` encoded at once, at most ``batch_size``
    rows a message (the matcher's ``max_publish_batch`` counts rows).

    A record is one row, or one row per form (:func:`linkage.forms.encode_forms`) under
    :func:`linkage.forms.form_reference` with ``form_of`` its own reference; a record's rows
    are never split between two messages. Each message carries ``columns`` (or, with
    ``columnar=False``, one ``EncodedRecord`` per row, the form older matchers read); the
    header rides on the first message.
    """
    columns = {name: [record.fields.get(name) for record in records] for name in schema.input_names}
    encoded = encode_forms(schema, keys, columns)
    batch = encoded.batch
    origin = encoded.origin.tolist()
    references = [
        form_reference(records[o].reference, f)
        for o, f in zip(origin, encoded.form.tolist(), strict=True)
    ]
    form_of = [
        "" if f == NO_FORM else records[o].reference
        for o, f in zip(origin, encoded.form.tolist(), strict=True)
    ]
    bounds = _message_bounds(encoded.origin, batch_size)
    messages: list[jigsaw_pb2.PublishRequest] = []
    if not columnar:
        as_records = encoded_to_proto(batch, references, form_of=form_of)
    for start, stop in itertools.pairwise(bounds):
        message = jigsaw_pb2.PublishRequest()
        if start == 0:
            message.header.CopyFrom(header)
        if columnar:
            part = batch if (start, stop) == (0, len(batch)) else batch.take(range(start, stop))
            message.columns.CopyFrom(
                encoded_to_columns(part, references[start:stop], form_of=form_of[start:stop])
            )
        else:
            message.records.extend(as_records[start:stop])
        messages.append(message)
    return messages


def _message_bounds(origin: NDArray[np.int64], batch_size: int) -> list[int]:
    """Row offsets that cut the rows (``origin``: each row's record, ascending) into messages
    of at most ``batch_size`` rows without splitting a record's forms (a record with more
    forms than ``batch_size`` goes alone): 0, ..., len(origin)."""
    ends = np.flatnonzero(np.diff(origin)).tolist()  # last row of each record but the last
    ends = [end + 1 for end in ends] + [len(origin)]
    bounds = [0]
    previous = 0
    for end in ends:
        if end - bounds[-1] > batch_size and previous > bounds[-1]:
            bounds.append(previous)
        previous = end
    if len(origin) > bounds[-1]:
        bounds.append(len(origin))
    return bounds


def message_rows(message: jigsaw_pb2.PublishRequest) -> int:
    """The rows (records and forms) a ``PublishRequest`` carries, whichever form it uses."""
    if message.HasField("columns"):
        return len(message.columns.references)
    return len(message.records)


def message_forms(message: jigsaw_pb2.PublishRequest) -> int:
    """The rows of a ``PublishRequest`` that are forms of a record (``form_of`` set)."""
    if message.HasField("columns"):
        return sum(1 for record in message.columns.form_of if record)
    return sum(1 for record in message.records if record.form_of)


@dataclass(frozen=True)
class _Group:
    """One Publish call's worth of records and their encoded messages."""

    records: list[PendingRecord]
    messages: list[jigsaw_pb2.PublishRequest]
    rows: int  # rows the messages carry: the records, a record lacking a salt as its forms
    forms: int  # of those rows, the forms


class _Producer:
    """Pages pending records out of the store and encodes them, one group ahead, in a thread.

    Iterate to receive the groups in store order; an error in the thread is re-raised by the
    iteration. The thread reads group n + 1 only once group n has been taken, so at most two
    groups are held at a time (the one in flight and the next). :meth:`close` stops the thread
    and waits for it (at most one group's encoding).
    """

    _POLL_S = 0.1

    def __init__(
        self,
        store: NodeStore,
        encode_group: Callable[[Sequence[PendingRecord]], list[jigsaw_pb2.PublishRequest]],
        group_size: int,
    ) -> None:
        self._store = store
        self._encode_group = encode_group
        self._group_size = group_size
        self._queue: queue.Queue[_Group | BaseException | None] = queue.Queue()
        self._may_read = threading.Semaphore(1)  # released when the consumer takes a group
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publish-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            after_row = 0
            while self._wait_for_turn():
                records = self._store.pending_publish_page(after_row, self._group_size)
                if not records:
                    break
                after_row = records[-1].row
                messages = self._encode_group(records)
                rows = sum(message_rows(message) for message in messages)
                forms = sum(message_forms(message) for message in messages)
                self._queue.put(_Group(records, messages, rows, forms))
            self._queue.put(None)
        except BaseException as exc:  # handed to the consuming thread, which re-raises it
            self._queue.put(exc)

    def _wait_for_turn(self) -> bool:
        while not self._stop.is_set():
            if self._may_read.acquire(timeout=self._POLL_S):
                return not self._stop.is_set()
        return False

    def __iter__(self) -> Iterator[_Group]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            self._may_read.release()
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


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
    columnar: bool = True,
) -> PublishReport:
    """Publish every pending record and withdraw every deleted one (see the module docstring).

    ``columnar=False`` sends one ``EncodedRecord`` per record (``node.publish_form =
    "records"``), the form a matcher older than ``EncodedColumns`` reads.
    """
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

    def encode_group(records: Sequence[PendingRecord]) -> list[jigsaw_pb2.PublishRequest]:
        return encode_messages(records, schema, keys, header, batch_size, columnar=columnar)

    published = withdrawn = calls = 0
    while True:  # passes: a further one only for records changed while the last one ran
        published_in_pass = 0
        producer = _Producer(store, encode_group, batch_size * batches_per_call)
        try:
            for group in producer:
                response = stub.Publish(iter(group.messages), timeout=timeout_s)
                calls += 1
                if response.received != group.rows:
                    raise PublishNotAcknowledged(
                        f"the matcher acknowledged {response.received} of {group.rows} rows "
                        f"sent ({len(group.records)} records and their forms); nothing was "
                        "marked published (a matcher older than columnar Publish ignores "
                        'EncodedColumns: upgrade it, or set node.publish_form = "records" '
                        "meanwhile)"
                    )
                if response.forms != group.forms:
                    raise PublishNotAcknowledged(
                        f"the matcher took {response.forms} of the {group.forms} forms sent "
                        "as forms; nothing was marked published (a matcher older than forms "
                        "holds each form as a record of its own, which lookups would then "
                        "name: upgrade the matcher)"
                    )
                store.mark_published_rows(group.records)
                published_in_pass += len(group.records)
                logger.info(
                    "published %d records as %d rows (matcher: %d inserted, %d replaced, "
                    "%d unchanged)",
                    len(group.records), group.rows, response.inserted, response.replaced,
                    response.unchanged,
                )  # fmt: skip
                if progress is not None:
                    progress(published + published_in_pass)
        finally:
            producer.close()
        published += published_in_pass
        if not published_in_pass:
            break

    references = store.pending_withdraw()
    for start in range(0, len(references), WITHDRAW_CHUNK):
        chunk = references[start : start + WITHDRAW_CHUNK]
        stub.Withdraw(jigsaw_pb2.WithdrawRequest(references=chunk), timeout=timeout_s)
        calls += 1
        withdrawn += store.mark_withdrawn(chunk)
    if withdrawn:
        logger.info("withdrew %d records", withdrawn)
    return PublishReport(published=published, withdrawn=withdrawn, calls=calls)
