"""The console's state and request checks: who is asking, their session, their pace, CSRF.

Role: :class:`Console` holds what the web application (:mod:`server.console.app`) needs
between requests and runs the checks of its request path: :meth:`Console.person` (the
verified browser certificate: staff of this agency or an operator of the federation, not
revoked), :meth:`Console.session` (a cookie bound to that certificate, not expired),
:meth:`Console.pace` (the person's own limit, and a tighter one for signing in) and
:meth:`Console.check_csrf` (the session's token, constant-time, and a same-origin
``Origin``). :class:`SecurityHeaders` adds no-store, CSP, frame-ancestors none and no
referrer to every response.

Invariants: sessions are in memory, at most :data:`MAX_SESSIONS`, each bound to the
certificate fingerprint that started it and ended after :data:`SESSION_MAX_S`; a check that
fails raises :class:`Refused` with the page's status and message, never an identifier.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from proto.jigsaw.v1 import jigsaw_pb2_grpc
from server.common.auth import Identity, identity_from_certificate
from server.common.pki import UNIT_AGENCY
from server.common.ratelimit import RateLimiter
from server.common.revocation import RevocationChecker
from server.console.activity import ActivityLog
from server.console.forms import (
    PRIORITIES,
    SEX_CHOICES,
    agency_label,
    field_label,
    purpose_label,
)
from server.console.tls import (
    client_certificate_pem,
)
from server.node.config import ConsoleConfig, NodeConfig

logger = logging.getLogger(__name__)

__all__ = ["Console", "Refused", "Session", "try_again"]

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
SESSION_COOKIE = "__Host-jigsaw-session"
SIGNIN_COOKIE = "__Host-jigsaw-signin"
SESSION_MAX_S = 8 * 3600.0
MAX_SESSIONS = 10_000
MAX_CANDIDATES_KEPT = 200
#: Sign-ins per certificate: a person signs in a few times a day; more is a script.
SIGN_INS_PER_MINUTE = 6.0
SIGN_IN_BURST = 5
#: A person's form posts (a lookup, a record request and its form, sign-out) and views of
#: pages that call the node (the children known to other agencies; an operator's status) may
#: run at ``POSTS_PER_LOOKUP`` times the node's per-person lookup rate and burst (plus
#: ``POSTS_EXTRA_BURST``): the node's own limits stay the ones staff meet first.
POSTS_PER_LOOKUP = 2
POSTS_EXTRA_BURST = 10
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "pragma": "no-cache",
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # not no-referrer: Chromium then sends "Origin: null" on form posts, defeating the
    # same-origin check; URLs carry no identifier, and nothing goes to another site
    "referrer-policy": "same-origin",
    "strict-transport-security": "max-age=31536000",
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware: the same security headers on every response, assets included."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self._headers}
                message["headers"] = [
                    (n, v) for n, v in message.get("headers", []) if n.lower() not in names
                ] + self._headers
            await send(message)

        await self._app(scope, receive, send_with_headers)


@dataclass
class Session:
    """One signed-in person (staff, or an operator) in one browser."""

    name: str
    role: str
    certificate: str  # SHA-256 of the client certificate the session is bound to
    csrf: str
    created: float
    seen: float
    # opaque token -> (agency, reference, lookup purpose code): the disclosure form names a
    # candidate by token, so no reference ever reaches the browser
    candidates: dict[str, tuple[str, str, str]] = field(default_factory=dict)


class Refused(Exception):
    """A request the console refuses with a page (status, heading, text); ``retry_after``
    (seconds) for a rate limit, sent as the ``Retry-After`` header."""

    def __init__(
        self, status: int, heading: str, text: str, retry_after: float | None = None
    ) -> None:
        super().__init__(heading)
        self.status, self.heading, self.text = status, heading, text
        self.retry_after = retry_after


NodeCall = Callable[[str, Any], Any]


class Console:
    """The console's state: its agency's config, the node stub, sessions, activity."""

    def __init__(
        self,
        config: NodeConfig,
        console: ConsoleConfig,
        *,
        node: jigsaw_pb2_grpc.AgencyNodeStub,
        activity: ActivityLog,
        revocations: RevocationChecker,
    ) -> None:
        self.config = config
        self.console = console
        self.node = node
        self.activity = activity
        self.revocations = revocations
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        limits = config.rate_limits
        self.posts = RateLimiter(
            POSTS_PER_LOOKUP * limits.lookups_per_minute,
            POSTS_PER_LOOKUP * limits.burst + POSTS_EXTRA_BURST,
        )
        self.sign_ins = RateLimiter(SIGN_INS_PER_MINUTE, SIGN_IN_BURST)
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.globals.update(
            agency_label=agency_label,
            purpose_label=purpose_label,
            field_label=field_label,
            priorities=PRIORITIES,
            sex_choices=SEX_CHOICES,
        )

    # --------------------------------------------------------------- who is asking

    def person(self, request: Request) -> tuple[Identity, str]:
        """The verified person behind the request — a staff member of this agency, or an
        operator of the federation (role ``operator``, agency ``unit``) or of this agency —
        and the SHA-256 of their certificate;
        :class:`Refused` (403) for anyone else."""
        pem = client_certificate_pem(request.scope)
        identity = identity_from_certificate(pem) if pem is not None else None
        refusal = Refused(
            403,
            "You cannot use this console",
            f"This console is for staff of {agency_label(self.config.agency)} signed in "
            "with their own staff certificate, and for the federation's operators.",
        )
        if pem is None or identity is None:
            raise refusal
        certificate = x509.load_pem_x509_certificate(pem)
        if self.revocations.is_revoked(certificate.serial_number):
            logger.warning("console refused a revoked certificate (%s)", identity.name)
            raise refusal
        staff = identity.role == "staff" and identity.agency == self.config.agency
        operator = identity.role == "operator" and identity.agency in (
            UNIT_AGENCY,
            self.config.agency,
        )
        if not (staff or operator):
            logger.warning(
                "console refused %s (%s of %s)", identity.name, identity.role, identity.agency
            )
            raise refusal
        return identity, certificate.fingerprint(hashes.SHA256()).hex()

    def session(self, request: Request, identity: Identity, fingerprint: str) -> Session | None:
        """The request's live session for this certificate, or None (then sign in)."""
        session_id = request.cookies.get(SESSION_COOKIE, "")
        now = time.monotonic()
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None:
                return None
            idle = now - session.seen > self.console.session_minutes * 60
            if (
                idle
                or now - session.created > SESSION_MAX_S
                or not hmac.compare_digest(session.certificate, fingerprint)
                or session.name != identity.name
                or session.role != identity.role
            ):
                del self.sessions[session_id]
                return None
            session.seen = now
            return session

    def start_session(self, identity: Identity, fingerprint: str) -> tuple[str, Session]:
        now = time.monotonic()
        session = Session(
            identity.name, identity.role, fingerprint, secrets.token_urlsafe(32), now, now
        )
        session_id = secrets.token_urlsafe(32)
        with self.lock:
            if len(self.sessions) >= MAX_SESSIONS:
                self._drop_expired(now)
            self.sessions[session_id] = session
        return session_id, session

    def _drop_expired(self, now: float) -> None:
        limit = self.console.session_minutes * 60
        for key in [k for k, s in self.sessions.items() if now - s.seen > limit]:
            del self.sessions[key]

    def end_session(self, request: Request) -> None:
        with self.lock:
            self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def pace(self, identity: Identity, *, sign_in: bool = False) -> None:
        """Take one of the person's form posts or node-calling page views (``sign_in``: one
        of their sign-ins); a 429 page saying when to try again when they are over the
        console's limit."""
        limiter = self.sign_ins if sign_in else self.posts
        wait = limiter.acquire(f"{identity.role}/{identity.name}")
        if wait is not None:
            logger.info(
                "console rate limit: %s (%s)", identity.name, "sign-in" if sign_in else "post"
            )
            raise Refused(429, TOO_MANY, try_again(wait), retry_after=wait)

    @staticmethod
    def check_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"https://{request.headers.get('host', '')}":
            raise Refused(403, "Request refused", "The form was sent from another site.")

    async def check_csrf(self, request: Request, expected: str) -> Mapping[str, str]:
        """The posted form, after its CSRF token matched ``expected``; else 403."""
        self.check_origin(request)
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        token = values.get("csrf_token", "")
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            raise Refused(
                403,
                "Request refused",
                "The form had expired or was not sent from this console. "
                "Go back, reload the page and try again.",
            )
        return values

    # --------------------------------------------------------------- rendering

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("agency", self.config.agency)
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status)

    def remember(self, session: Session, agency: str, reference: str, purpose: str) -> str:
        token = secrets.token_urlsafe(16)
        with self.lock:
            if len(session.candidates) >= MAX_CANDIDATES_KEPT:
                session.candidates.pop(next(iter(session.candidates)))
            session.candidates[token] = (agency, reference, purpose)
        return token


def staff_only(identity: Identity) -> None:
    """Refuse (403) an operator a page that acts on records: lookups, record requests and the
    agency's linked records are staff work, done at the node on the staff member's behalf."""
    if identity.role != "staff":
        raise Refused(
            403,
            "This page is for staff",
            "Operators see the node's status in My activity. Looking children up, requesting "
            "records and the children known to other agencies are for the agency's staff.",
        )


def now_utc() -> datetime.datetime:
    """Now, in UTC, to the second (the activity log's times)."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


TOO_MANY = "You have made too many requests"


def try_again(seconds: float, now: datetime.datetime | None = None) -> str:
    """When to try again, in words: "Try again in 2 minutes, after 14:05 UTC."."""
    whole = max(1, math.ceil(seconds))
    at = (now or datetime.datetime.now(datetime.UTC)) + datetime.timedelta(seconds=whole)
    if whole < 90:
        span = f"{whole} second{'s' if whole != 1 else ''}"
        when = at.strftime("%H:%M:%S UTC")
    else:
        minutes = math.ceil(whole / 60)
        span = f"{minutes} minutes" if minutes < 120 else f"{math.ceil(minutes / 60)} hours"
        at += datetime.timedelta(seconds=59)  # on a whole minute, never before the time
        when = at.strftime("%H:%M UTC")
    return f"Try again in {span}, after {when}."
