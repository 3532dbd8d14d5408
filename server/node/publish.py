"""Publish: encode the node's pending records and stream them to the matcher; send withdrawals.

Role: step 2 of the data flow (node → matcher). The records the matcher does not hold yet
(new, or changed since their last acknowledged publication: :mod:`server.node.store`) are read
in groups of ``batch_size * batches_per_call``, each group encoded with one
:func:`linkage.forms.encode_forms` call and sent in one client-streaming ``Publish`` call: the
first ``PublishRequest`` carries the ``EncodingHeader`` (schema fingerprint and key version)
and every message at most ``batch_size`` rows as ``EncodedColumns`` (layout:
``proto/FORMATS.md``). A :class:`_Producer` thread encodes the next group while one is in
flight. Deleted records that were published are then sent in ``Withdraw`` calls and purged.

Invariants:

* a record lacking a salt field of few values (the shipped schema: sex) is published as one
  row per value, each a *form* under a reference derived from the record's, with ``form_of``
  set; a record's rows are consecutive and never straddle two messages, because the matcher
  replaces a record's forms by exactly those one message carries. The node withdraws, and
  ``Disclose`` resolves, records by their own reference only;
* records are marked published, with the content hash of exactly what was sent, only after
  the call returns and only if the matcher acknowledged every row and took every form as a
  form (else :class:`PublishNotAcknowledged`);
* idempotent and resumable: the matcher upserts by (agency, reference), so a crash between
  sending and marking only causes a harmless re-send; records changed during a pass stay
  pending for the next. When the schema fingerprint, key version or
  :data:`PUBLICATION_FORMAT` differs from the store's ``published_encoding``, every record is
  marked unpublished first.

Errors (``grpc.RpcError``, encoding errors, :class:`PublishNotAcknowledged`) propagate with
nothing marked for the failed call, after the producer thread is stopped and joined. Logs
carry counts and the fingerprint only.
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
from server.common.wire import encoded_to_columns
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
    become rows (:data:`PUBLICATION_FORMAT`)."""
    return f"{schema.fingerprint()} k{keys.key_version} {PUBLICATION_FORMAT}"


def encode_messages(
    records: Sequence[PendingRecord],
    schema: Schema,
    keys: KeySet,
    header: jigsaw_pb2.EncodingHeader,
    batch_size: int,
) -> list[jigsaw_pb2.PublishRequest]:
    """The messages of one Publish stream: ``records`` encoded at once, at most ``batch_size``
    rows a message (the matcher's ``max_publish_batch`` counts rows).

    A record is one row, or one row per form (:func:`linkage.forms.encode_forms`) under
    :func:`linkage.forms.form_reference` with ``form_of`` its own reference; a record's rows
    are never split between two messages. Each message carries ``columns``; the header rides
    on the first message.
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
    for start, stop in itertools.pairwise(bounds):
        message = jigsaw_pb2.PublishRequest()
        if start == 0:
            message.header.CopyFrom(header)
        part = batch if (start, stop) == (0, len(batch)) else batch.take(range(start, stop))
        message.columns.CopyFrom(
            encoded_to_columns(part, references[start:stop], form_of=form_of[start:stop])
        )
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
    """The rows (records and forms) a ``PublishRequest`` carries."""
    return len(message.columns.references)


def message_forms(message: jigsaw_pb2.PublishRequest) -> int:
    """The rows of a ``PublishRequest`` that are forms of a record (``form_of`` set)."""
    return sum(1 for record in message.columns.form_of if record)


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

    def encode_group(records: Sequence[PendingRecord]) -> list[jigsaw_pb2.PublishRequest]:
        return encode_messages(records, schema, keys, header, batch_size)

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
                        "marked published"
                    )
                if response.forms != group.forms:
                    raise PublishNotAcknowledged(
                        f"the matcher took {response.forms} of the {group.forms} forms sent "
                        "as forms; nothing was marked published (it would hold each form as a "
                        "record of its own, which lookups would then name)"
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
