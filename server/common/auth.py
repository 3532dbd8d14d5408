"""Who is calling, and may they call this method? Identity from the client certificate, roles.

Role: every node and matcher server is built with an :class:`AuthInterceptor` holding its
:class:`RolePolicy` (:data:`MATCHER_POLICY` or :data:`NODE_POLICY`). Mutual TLS
(``server.common.tls``) has already verified the client certificate against the federation
CA; the interceptor reads the identity out of it (CN = name, O = agency, OU = role:
``server.common.pki``) before any servicer code runs, and hands it to the servicer, which
reads it with :func:`current_identity`.

Contract, per call:

* ``UNAUTHENTICATED``: no usable identity, or a certificate revoked according to the server's
  :class:`server.common.revocation.RevocationChecker` (checked here on every call, open
  services included, since gRPC Python cannot check a revocation list in the handshake; a
  revoked certificate identifies nobody, so it is not ``PERMISSION_DENIED``);
* ``PERMISSION_DENIED``: a role the method does not allow, a method not in the policy (deny
  by default), or, on a node, a caller of a role in :data:`AGENCY_BOUND_ROLES` (staff, and
  the staff console: :mod:`server.console`) whose certificate names another agency; an
  operator is the federation's (agency ``unit``) or an agency's own: an agency's operator
  may call only its own agency's node, never the matcher or another agency's node;
* the health and reflection services (:data:`OPEN_SERVICES`) are open to every identity of
  the CA; they are all a ``probe`` certificate may call;
* a request whose bytes do not parse as the method's message (which gRPC itself would answer
  ``INTERNAL``) is refused ``INVALID_ARGUMENT`` naming the message type, never its bytes,
  after the identity and role checks (:func:`_tolerant`).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509

from proto.jigsaw.v1.transport import ROLES, UNIT_AGENCY, certificate_identity
from server.common.refusals import RefusalTally
from server.common.revocation import RevocationChecker
from server.common.status import Unauthenticated

logger = logging.getLogger(__name__)

#: The actor of a refused call that carried no Jigsaw identity.
UNIDENTIFIED = "(unidentified)"

#: Roles whose callers may call a server that belongs to an agency only if it is their own.
AGENCY_BOUND_ROLES: frozenset[str] = frozenset({"staff", "console"})

OPEN_SERVICES: frozenset[str] = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


@dataclass(frozen=True)
class Identity:
    """A verified caller: its name (CN), agency (O) and role (OU)."""

    name: str
    agency: str
    role: str


def identity_from_certificate(pem: bytes) -> Identity | None:
    """The Identity encoded in a PEM certificate's subject, or None if it has none."""
    known = _identity_and_serial(pem)
    return None if known is None else known[0]


def _identity_and_serial(pem: bytes) -> tuple[Identity, int] | None:
    """The Identity in a PEM certificate's subject and the certificate's serial, or None."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    subject = certificate_identity(certificate)
    if subject is None:
        return None
    name, agency, role = subject
    return Identity(name=name, agency=agency, role=role), certificate.serial_number


def _peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    """The PEM of the peer's verified client certificate, or None (no TLS, none or several)."""
    auth_context: Mapping[str, Iterable[bytes]] = context.auth_context() or {}
    certificates = list(auth_context.get("x509_pem_cert", ()))
    if len(certificates) != 1:
        return None
    return certificates[0]


def identity_from_context(context: grpc.ServicerContext) -> Identity | None:
    """The Identity of the peer's verified client certificate, or None (no TLS, no cert)."""
    pem = _peer_certificate(context)
    return None if pem is None else identity_from_certificate(pem)


# The identity of the call the current thread is serving, paired with that call's context so
# that a stale value can never be mistaken for another call's identity. Set and cleared by the
# interceptor's wrapper around each handler; grpc runs a handler (including every step of a
# streaming response) on one pool thread, and each thread has its own contextvars context.
_CURRENT_CALL: contextvars.ContextVar[tuple[object, Identity] | None] = contextvars.ContextVar(
    "jigsaw_current_call", default=None
)


def current_identity(context: grpc.ServicerContext) -> Identity:
    """The caller's Identity inside a servicer method; raises Unauthenticated if there is none.

    Uses the identity the interceptor resolved for this call; if called on another thread (or
    without the interceptor) it re-reads the peer certificate from ``context``.
    """
    current = _CURRENT_CALL.get()
    if current is not None and current[0] is context:
        return current[1]
    identity = identity_from_context(context)
    if identity is None:
        raise Unauthenticated("no verified client identity on this call")
    return identity


def service_of(method: str) -> str:
    """``"/jigsaw.v1.Matcher/Publish"`` → ``"jigsaw.v1.Matcher"``."""
    return method.lstrip("/").split("/", 1)[0]


class RolePolicy:
    """Which roles may call which full method names; everything else is denied.

    ``rules`` maps full method names (``"/jigsaw.v1.Matcher/Publish"``) to allowed roles.
    Methods of ``open_services`` (health, reflection) are allowed for every role.
    """

    def __init__(
        self,
        rules: Mapping[str, Iterable[str]],
        *,
        open_services: Iterable[str] = OPEN_SERVICES,
    ) -> None:
        problems = []
        parsed: dict[str, frozenset[str]] = {}
        for method, roles in rules.items():
            role_set = frozenset(roles)
            if not method.startswith("/") or method.count("/") != 2:
                problems.append(f"method {method!r} is not a full name '/package.Service/Method'")
            unknown = sorted(role_set - ROLES)
            if unknown:
                problems.append(f"method {method!r} names unknown roles {unknown}")
            parsed[method] = role_set
        if problems:
            raise ValueError("invalid role policy: " + "; ".join(problems))
        self._rules: Mapping[str, frozenset[str]] = parsed
        self._open_services = frozenset(open_services)

    def allowed_roles(self, method: str) -> frozenset[str]:
        """The roles allowed to call ``method`` (all roles for open services, none if unknown)."""
        if service_of(method) in self._open_services:
            return frozenset(ROLES)
        return self._rules.get(method, frozenset())

    def permits(self, method: str, role: str) -> bool:
        """True when ``role`` may call ``method``."""
        return role in self.allowed_roles(method)

    @property
    def methods(self) -> frozenset[str]:
        """The full method names the policy has rules for."""
        return frozenset(self._rules)


MATCHER_POLICY = RolePolicy(
    {
        "/jigsaw.v1.Matcher/Publish": {"node"},
        "/jigsaw.v1.Matcher/Withdraw": {"node"},
        "/jigsaw.v1.Matcher/Match": {"node"},
        "/jigsaw.v1.Matcher/Link": {"operator"},
        "/jigsaw.v1.Matcher/GetLinkResult": {"operator"},
        # a node, for its own agency's records only (the agency of its certificate)
        "/jigsaw.v1.Matcher/GetLinkedRecords": {"node"},
        "/jigsaw.v1.Matcher/Status": {"operator"},
        # audit anchoring (server.common.anchor): a node's own head; an operator's audit
        "/jigsaw.v1.Matcher/AnchorHead": {"node"},
        "/jigsaw.v1.Matcher/GetAnchors": {"operator"},
    }
)

NODE_POLICY = RolePolicy(
    {
        # the agency's staff console calls for one staff member (on_behalf_of)
        "/jigsaw.v1.AgencyNode/Lookup": {"staff", "console"},
        # a node relays its own staff's disclosures to the holding agency's node
        "/jigsaw.v1.AgencyNode/Disclose": {"staff", "node", "console"},
        # the console shows the node's status to the agency's operators (no record in it)
        "/jigsaw.v1.AgencyNode/Status": {"operator", "staff", "console"},
        "/jigsaw.v1.AgencyNode/AnchorAudit": {"operator"},
        "/jigsaw.v1.AgencyNode/GetAnchors": {"operator"},
        "/jigsaw.v1.AgencyNode/FetchLinked": {"operator"},
        # the console lists for one staff member (on_behalf_of), as on Lookup
        "/jigsaw.v1.AgencyNode/ListLinked": {"operator", "staff", "console"},
        "/jigsaw.v1.AgencyNode/ResolveReference": {"operator", "staff"},
    }
)


Behaviour = Callable[[Any, grpc.ServicerContext], Any]


class _Undecodable:
    """Stands for a request message whose bytes did not parse (see :func:`_tolerant`)."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning an :class:`_Undecodable` where it raises."""
    if deserializer is None:
        return None
    message_type = getattr(getattr(deserializer, "__self__", None), "__name__", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or any other failure to parse the bytes
            return _Undecodable(message_type)

    return parse


def _refuse_if_undecodable(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request: not a well-formed {request.message_type} message (protobuf)",
        )
        raise RuntimeError("grpc.ServicerContext.abort returned")  # pragma: no cover


def _decoded_stream(requests: Iterable[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    """A request stream whose first undecodable message aborts the call."""
    for request in requests:
        _refuse_if_undecodable(request, context)
        yield request


#: Distinct client certificates whose identity one interceptor remembers (then it starts over).
MAX_REMEMBERED_CERTIFICATES = 1024


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Server interceptor enforcing a :class:`RolePolicy` on every call, before the servicer.

    A caller keeps one certificate across its calls, and parsing it on every call is wasted
    work; so the interceptor remembers the identity read from each distinct verified
    certificate (its exact PEM bytes: a different certificate is parsed afresh). Certificates
    are public and TLS verifies the peer's certificate on every connection before any call
    reaches this code, so this holds no secret and trusts nothing TLS has not checked.
    """

    def __init__(
        self,
        policy: RolePolicy,
        *,
        revocations: RevocationChecker,
        agency: str | None = None,
        refusals: RefusalTally | None = None,
    ) -> None:
        self._policy = policy
        self._refusals = refusals
        self._revocations = revocations
        self._agency = agency
        # per interceptor, bounded: PEM -> (identity, serial), or None without an identity
        self._identities: dict[bytes, tuple[Identity, int] | None] = {}

    def _identity(self, context: grpc.ServicerContext) -> tuple[Identity, int] | None:
        pem = _peer_certificate(context)
        if pem is None:
            return None
        try:
            return self._identities[pem]
        except KeyError:
            pass
        known = _identity_and_serial(pem)
        if len(self._identities) >= MAX_REMEMBERED_CERTIFICATES:
            self._identities.clear()
        self._identities[pem] = known
        return known

    def _refused(self, actor: str, method: str, reason: str) -> None:
        if self._refusals is not None:
            self._refusals.count(actor, method.rsplit("/", 1)[-1], reason)

    def _authorise(self, method: str, context: grpc.ServicerContext) -> Identity:
        known = self._identity(context)
        if known is None:
            self._refused(UNIDENTIFIED, method, "unauthenticated")
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no verified client certificate with a Jigsaw identity (CN, O, OU)",
            )
            raise RuntimeError("grpc.ServicerContext.abort returned")  # pragma: no cover
        identity, serial = known
        if self._revocations.is_revoked(serial):
            logger.warning(
                "refused %s: the client certificate of %s (%s, %s) is revoked",
                method, identity.name, identity.role, identity.agency,
            )  # fmt: skip
            self._refused(identity.name, method, "revoked")
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the client certificate is revoked: a certificate not on the federation's "
                "revocation list is expected",
            )
            raise RuntimeError("grpc.ServicerContext.abort returned")  # pragma: no cover
        if not self._policy.permits(method, identity.role):
            allowed = sorted(self._policy.allowed_roles(method))
            allowed_text = ", ".join(allowed) if allowed else "no role"
            self._refused(identity.name, method, "role_denied")
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"method {method} is allowed for {allowed_text}; caller has role {identity.role}",
            )
            raise RuntimeError("grpc.ServicerContext.abort returned")  # pragma: no cover
        agency_operator = identity.role == "operator" and identity.agency != UNIT_AGENCY
        if service_of(method) not in OPEN_SERVICES and (
            # at an agency's node: staff, consoles and agency operators of that agency only
            (
                self._agency is not None
                and (identity.role in AGENCY_BOUND_ROLES or agency_operator)
                and identity.agency != self._agency
            )
            # at the matcher: operators of the federation only
            or (self._agency is None and agency_operator)
        ):
            self._refused(identity.name, method, "other_agency")
            where = f"of agency {self._agency}" if self._agency else f"of agency {UNIT_AGENCY}"
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"method {method} is allowed for {identity.role} {where} only; caller's "
                f"certificate names agency {identity.agency}",
            )
            raise RuntimeError("grpc.ServicerContext.abort returned")  # pragma: no cover
        return identity

    def _wrap_unary_response(
        self, method: str, behaviour: Behaviour, *, streaming_request: bool = False
    ) -> Behaviour:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            identity = self._authorise(method, context)
            if streaming_request:
                request = _decoded_stream(request, context)
            else:
                _refuse_if_undecodable(request, context)
            _CURRENT_CALL.set((context, identity))
            try:
                return behaviour(request, context)
            finally:
                _CURRENT_CALL.set(None)

        return wrapped

    def _wrap_stream_response(
        self, method: str, behaviour: Behaviour, *, streaming_request: bool = False
    ) -> Behaviour:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            identity = self._authorise(method, context)
            if streaming_request:
                request = _decoded_stream(request, context)
            else:
                _refuse_if_undecodable(request, context)
            _CURRENT_CALL.set((context, identity))
            try:
                responses = behaviour(request, context)
            finally:
                _CURRENT_CALL.set(None)
            return _with_identity(responses, context, identity)

        return wrapped

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        serialisers = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary_response(method, handler.unary_unary), **serialisers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary_response(method, handler.stream_unary, streaming_request=True),
                **serialisers,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream_response(method, handler.unary_stream), **serialisers
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream_response(method, handler.stream_stream, streaming_request=True),
                **serialisers,
            )
        return None  # pragma: no cover - a handler always has one behaviour


def _with_identity(
    responses: Iterable[Any], context: grpc.ServicerContext, identity: Identity
) -> Iterator[Any]:
    """Iterate ``responses`` with the call's identity set for every step of the generator."""
    iterator = iter(responses)
    while True:
        _CURRENT_CALL.set((context, identity))
        try:
            response = next(iterator)
        except StopIteration:
            return
        finally:
            _CURRENT_CALL.set(None)
        yield response
