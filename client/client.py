"""Python client for staff and operators: lookups, disclosures, batch links, status.

Role in the system: the one programmatic way into a Jigsaw federation. Staff talk to their
own agency's node only: ``Lookup``, then ``Disclose`` of a reference that lookup returned (the
node relays it to the holding agency's node), and the agency's records known to other
agencies after a batch link (``ListLinked``; an operator first has the node ``FetchLinked``)
and a reference's local id (``ResolveReference``); operators talk to the matcher (``Link``,
``GetLinkResult``, ``Status``). Every call carries a deadline and runs
over mutual TLS with the caller's own certificate, which carries its agency and role, and
checks whom it reached: the server certificate must name the expected role and agency
(:func:`proto.jigsaw.v1.transport.server_name`; a node of the caller's own agency unless told
otherwise, the matcher), or the call fails with
:class:`proto.jigsaw.v1.transport.WrongServerError`. This library and the services meet only
through :mod:`proto.jigsaw.v1` (the messages and the wire convention of ``transport``): it
imports nothing from ``server``.

Example, with the bundle directory ``alice/`` that the PKI's operator handed to Alice::

    from client.client import NodeClient
    from proto.jigsaw.v1.transport import TlsFiles

    alice = TlsFiles(ca_cert=Path("alice/ca.pem"), cert=Path("alice/alice.pem"),
                     key=Path("alice/alice.key"))
    with NodeClient("127.0.0.1:7001", alice) as node:
        found = node.lookup({"given_name": "Amelia", "family_name": "Baker",
                             "date_of_birth": "2014-05-24"},
                            purpose_code="s47_enquiry", note="case 4711, referral from school")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import grpc

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import (
    UNIT_AGENCY,
    TlsFiles,
    pem_identity,
    raise_if_wrong_server,
    secure_channel,
    server_name,
)

LOOKUP_DEADLINE_S = 10.0
DISCLOSE_DEADLINE_S = 10.0
STATUS_DEADLINE_S = 5.0
LINK_DEADLINE_S = 3600.0
PAGE_DEADLINE_S = 30.0
ANCHORS_DEADLINE_S = 60.0


def _anchors(
    stub: jigsaw_pb2_grpc.MatcherStub | jigsaw_pb2_grpc.AgencyNodeStub, owner: str
) -> list[jigsaw_pb2.AuditReceipt]:
    receipts: list[jigsaw_pb2.AuditReceipt] = []
    for page in stub.GetAnchors(
        jigsaw_pb2.GetAnchorsRequest(owner=owner), timeout=ANCHORS_DEADLINE_S
    ):
        receipts.extend(page.receipts)
    return receipts


FETCH_DEADLINE_S = 600.0


#: Attempts of one Lookup under the node's retry policy (the first and the retries).
LOOKUP_ATTEMPTS = 5

#: gRPC's own retry policy for lookups (in the channel's service config): a lookup
#: refused for a rate limit (RESOURCE_EXHAUSTED) or while the node or its matcher is
#: unreachable (UNAVAILABLE) is tried again, up to gRPC's cap of 5 attempts, with
#: exponential backoff; the node's ``grpc-retry-pushback-ms`` trailer (its retry-after)
#: replaces the backoff when present, and a pushback of -1 (a wait longer than
#: ``MAX_PUSHBACK_S``) ends the retries, so the refusal reaches the caller with its
#: retry-after. A refused lookup did no work and is charged to no budget, so trying it
#: again is safe. The call's deadline bounds every attempt together.
NODE_SERVICE_CONFIG = {
    "methodConfig": [
        {
            # lookups only: another call's UNAVAILABLE (a server that is not the expected
            # one, refused in the handshake) must reach the caller before its deadline
            "name": [{"service": "jigsaw.v1.AgencyNode", "method": "Lookup"}],
            "retryPolicy": {
                "maxAttempts": LOOKUP_ATTEMPTS,
                "initialBackoff": "0.5s",
                "maxBackoff": "30s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
            },
        }
    ]
}


class _Client:
    def __init__(
        self,
        address: str,
        tls: TlsFiles,
        *,
        role: str,
        agency: str,
        service_config: Mapping[str, object] | None = None,
    ) -> None:
        self.address = address
        self.role, self.agency = role, agency
        options: list[tuple[str, object]] = []
        if service_config is not None:
            options = [
                ("grpc.enable_retries", 1),
                ("grpc.service_config", json.dumps(service_config)),
            ]
        self._channel = secure_channel(
            address, tls, expect=server_name(role, agency), options=options
        )

    @contextmanager
    def _checked(self) -> Iterator[None]:
        """Turn TLS's refusal of a server that is not the expected one into a clear error."""
        try:
            yield
        except grpc.RpcError as exc:
            raise_if_wrong_server(exc, self.address, role=self.role, agency=self.agency)
            raise

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


def own_agency(tls: TlsFiles) -> str:
    """The agency named in the certificate of ``tls`` (a staff member's own agency)."""
    identity = pem_identity(Path(tls.cert).read_bytes())
    if identity is None:
        raise ValueError(f"{tls.cert}: not a certificate with a Jigsaw identity (CN, O, OU)")
    _name, agency, _role = identity
    return agency


class NodeClient(_Client):
    """Staff (and operator) calls to one agency node: by default the caller's own agency's
    (staff talk to no other); an operator names the node's ``agency``."""

    def __init__(self, address: str, tls: TlsFiles, *, agency: str | None = None) -> None:
        agency = own_agency(tls) if agency is None else agency
        if agency == UNIT_AGENCY:
            raise ValueError("the unit runs no agency node: name the node's agency")
        super().__init__(
            address, tls, role="node", agency=agency, service_config=NODE_SERVICE_CONFIG
        )
        self._stub = jigsaw_pb2_grpc.AgencyNodeStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> NodeClient:
        return self

    def lookup(
        self,
        identifiers: Mapping[str, str],
        *,
        purpose_code: str,
        note: str,
        max_candidates: int = 10,
        timeout: float = LOOKUP_DEADLINE_S,
    ) -> jigsaw_pb2.LookupResponse:
        """Which agencies hold records about this child? (bands and evidence, no records).

        Retried by gRPC on RESOURCE_EXHAUSTED and UNAVAILABLE (:data:`NODE_SERVICE_CONFIG`)
        within ``timeout`` seconds. ``purpose_code`` is a code of the node's purpose list
        (``s47_enquiry``, ...), the only purpose the matcher sees; ``note`` is free text
        for the node's own audit log."""
        request = jigsaw_pb2.LookupRequest(
            identifiers=dict(identifiers),
            purpose_code=purpose_code,
            note=note,
            max_candidates=max_candidates,
        )
        with self._checked():
            response: jigsaw_pb2.LookupResponse = self._stub.Lookup(request, timeout=timeout)
        return response

    def disclose(
        self, reference: str, *, purpose_code: str, note: str = "", priority: str = ""
    ) -> jigsaw_pb2.DiscloseResponse:
        """The minimal record behind ``reference``, as the holding agency's policy allows.

        ``reference`` must come from this person's own recent lookup at this node;
        ``purpose_code`` is one of the sharing agreement's codes, ``note`` stays in this node's
        audit log, ``priority`` is "red", "amber", "green" or empty."""
        with self._checked():
            response: jigsaw_pb2.DiscloseResponse = self._stub.Disclose(
                jigsaw_pb2.DiscloseRequest(
                    reference=reference, purpose_code=purpose_code, note=note, priority=priority
                ),
                timeout=DISCLOSE_DEADLINE_S,
            )
        return response

    def fetch_linked(self, result_id: str = "") -> jigsaw_pb2.FetchLinkedResponse:
        """Operator: have the node fetch its linked records of a link result ("" = the
        matcher's latest) from the matcher into its store."""
        with self._checked():
            response: jigsaw_pb2.FetchLinkedResponse = self._stub.FetchLinked(
                jigsaw_pb2.FetchLinkedRequest(result_id=result_id), timeout=FETCH_DEADLINE_S
            )
        return response

    def linked_pages(self, *, page_size: int = 500) -> Iterator[jigsaw_pb2.ListLinkedResponse]:
        """Every page of the node's records known to other agencies (by local id)."""
        token = ""
        while True:
            with self._checked():
                page: jigsaw_pb2.ListLinkedResponse = self._stub.ListLinked(
                    jigsaw_pb2.ListLinkedRequest(page_size=page_size, page_token=token),
                    timeout=PAGE_DEADLINE_S,
                )
            yield page
            token = page.next_page_token
            if not token:
                return

    def resolve(self, reference: str, *, purpose: str) -> str:
        """The local record id behind one of this node's references (audited)."""
        with self._checked():
            response: jigsaw_pb2.ResolveReferenceResponse = self._stub.ResolveReference(
                jigsaw_pb2.ResolveReferenceRequest(reference=reference, purpose=purpose),
                timeout=STATUS_DEADLINE_S,
            )
        return response.local_id

    def status(self) -> jigsaw_pb2.NodeStatusResponse:
        with self._checked():
            response: jigsaw_pb2.NodeStatusResponse = self._stub.Status(
                jigsaw_pb2.NodeStatusRequest(), timeout=STATUS_DEADLINE_S
            )
        return response

    def anchor_audit(self) -> jigsaw_pb2.AnchorAuditResponse:
        """Operator: have the node anchor its audit head with the matcher now."""
        with self._checked():
            response: jigsaw_pb2.AnchorAuditResponse = self._stub.AnchorAudit(
                jigsaw_pb2.AnchorAuditRequest(), timeout=STATUS_DEADLINE_S * 2
            )
        return response

    def anchors(self, owner: str) -> list[jigsaw_pb2.AuditReceipt]:
        """Operator: the audit heads of ``owner`` (the matcher) this node holds."""
        with self._checked():
            return _anchors(self._stub, owner)


class MatcherClient(_Client):
    """Operator calls to the matcher."""

    def __init__(self, address: str, tls: TlsFiles) -> None:
        super().__init__(address, tls, role="matcher", agency=UNIT_AGENCY)
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
        with self._checked():
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
            with self._checked():
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
        with self._checked():
            response: jigsaw_pb2.MatcherStatusResponse = self._stub.Status(
                jigsaw_pb2.MatcherStatusRequest(), timeout=STATUS_DEADLINE_S
            )
        return response

    def anchors(self, owner: str) -> list[jigsaw_pb2.AuditReceipt]:
        """Operator: the audit heads of ``owner`` (a node's identity) the matcher holds."""
        with self._checked():
            return _anchors(self._stub, owner)
