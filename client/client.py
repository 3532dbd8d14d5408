"""Python client for staff and operators: lookups, disclosures, batch links, status.

Role in the system: the one programmatic way into a Jigsaw federation. Staff talk to their
own agency's node only: ``Lookup``, then ``Disclose`` of a reference that lookup returned (the
node relays it to the holding agency's node); operators talk to the matcher (``Link``,
``GetLinkResult``, ``Status``). Every call carries a deadline and runs
over mutual TLS with the caller's own certificate, which carries its agency and role.

Example::

    from client.client import NodeClient
    from server.tls import tls_files_for

    with NodeClient("127.0.0.1:7001", tls_files_for(pki_dir, "alice")) as node:
        found = node.lookup({"given_name": "Amelia", "family_name": "Baker",
                             "date_of_birth": "2014-05-24"}, purpose="s47 enquiry")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import TracebackType

import grpc

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.tls import TlsFiles, secure_channel

LOOKUP_DEADLINE_S = 10.0
DISCLOSE_DEADLINE_S = 10.0
STATUS_DEADLINE_S = 5.0
LINK_DEADLINE_S = 3600.0
PAGE_DEADLINE_S = 30.0


class _Client:
    def __init__(self, address: str, tls: TlsFiles) -> None:
        self.address = address
        self._channel = secure_channel(address, tls)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> _Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Block until the channel is connected (raises grpc.FutureTimeoutError)."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)


class NodeClient(_Client):
    """Staff (and operator) calls to one agency node."""

    def __init__(self, address: str, tls: TlsFiles) -> None:
        super().__init__(address, tls)
        self._stub = jigsaw_pb2_grpc.AgencyNodeStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> NodeClient:
        return self

    def lookup(
        self, identifiers: Mapping[str, str], *, purpose: str, max_candidates: int = 10
    ) -> jigsaw_pb2.LookupResponse:
        """Which agencies hold records about this child? (bands and evidence, no records)."""
        request = jigsaw_pb2.LookupRequest(
            identifiers=dict(identifiers), purpose=purpose, max_candidates=max_candidates
        )
        response: jigsaw_pb2.LookupResponse = self._stub.Lookup(request, timeout=LOOKUP_DEADLINE_S)
        return response

    def disclose(self, reference: str, *, purpose: str) -> jigsaw_pb2.DiscloseResponse:
        """The minimal record behind ``reference``, as the holding agency's policy allows.

        ``reference`` must come from this person's own recent lookup at this node."""
        response: jigsaw_pb2.DiscloseResponse = self._stub.Disclose(
            jigsaw_pb2.DiscloseRequest(reference=reference, purpose=purpose),
            timeout=DISCLOSE_DEADLINE_S,
        )
        return response

    def status(self) -> jigsaw_pb2.NodeStatusResponse:
        response: jigsaw_pb2.NodeStatusResponse = self._stub.Status(
            jigsaw_pb2.NodeStatusRequest(), timeout=STATUS_DEADLINE_S
        )
        return response


class MatcherClient(_Client):
    """Operator calls to the matcher."""

    def __init__(self, address: str, tls: TlsFiles) -> None:
        super().__init__(address, tls)
        self._stub = jigsaw_pb2_grpc.MatcherStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> MatcherClient:
        return self

    def link(
        self,
        *,
        min_probability: float = 0.0,
        on_progress: Callable[[jigsaw_pb2.LinkProgress], None] | None = None,
    ) -> str:
        """Run a batch link over every published agency; returns the result id."""
        result_id = ""
        stream = self._stub.Link(
            jigsaw_pb2.LinkRequest(min_probability=min_probability), timeout=LINK_DEADLINE_S
        )
        for progress in stream:
            if on_progress is not None:
                on_progress(progress)
            if progress.result_id:
                result_id = progress.result_id
        if not result_id:
            raise RuntimeError("the matcher ended the link stream without a result id")
        return result_id

    def link_result_pages(
        self, result_id: str, *, page_size: int = 500
    ) -> Iterator[jigsaw_pb2.GetLinkResultResponse]:
        """Every page of a stored link result."""
        token = ""
        while True:
            page: jigsaw_pb2.GetLinkResultResponse = self._stub.GetLinkResult(
                jigsaw_pb2.GetLinkResultRequest(
                    result_id=result_id, page_size=page_size, page_token=token
                ),
                timeout=PAGE_DEADLINE_S,
            )
            yield page
            token = page.next_page_token
            if not token:
                return

    def status(self) -> jigsaw_pb2.MatcherStatusResponse:
        response: jigsaw_pb2.MatcherStatusResponse = self._stub.Status(
            jigsaw_pb2.MatcherStatusRequest(), timeout=STATUS_DEADLINE_S
        )
        return response
