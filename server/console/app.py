"""The console's web application (Starlette + Jinja2) and its server (uvicorn, HTTPS).

Request path: :class:`SecurityHeaders` (no-store, CSP, frame-ancestors none, no referrer) →
route → :meth:`Console.person` (the verified browser certificate: staff of this agency or an
operator of the federation, not revoked, else 403) → for pages after sign-in,
:meth:`Console.session` (cookie bound to that certificate, not expired, else the sign-in
page) → on POST and on the pages that call the node, :meth:`Console.pace` (the person's
own limit, and a tighter one for signing in, else a 429 page saying when to try again) →
on POST, :meth:`Console.check_csrf` (token of the session, constant-time, and a same-origin
``Origin`` when sent, else 403) →
for the pages that act on records (lookup, request, children known to other agencies),
:func:`staff_only` (an operator gets a 403 page: the console calls the node on behalf of
staff only, so an operator's name is never sent as ``on_behalf_of``).
Node calls run in a worker thread with a deadline, over the console's own mutual-TLS
channel, with ``on_behalf_of`` = the verified staff name (see the package docstring), so
the node's per-person limits are the staff member's own: a refusal (``RESOURCE_EXHAUSTED``)
comes back as a GOV.UK error summary (a lookup) or error page (anything else), status 429
with a ``Retry-After`` header, saying when to try again.

Nothing identifying is logged: log lines carry counts, ids and status codes; the
activity file names fields, never values.
"""

from __future__ import annotations

import datetime
import logging
import math
import secrets
import signal
import socket
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import retry_after_from_metadata
from server.common.auth import Identity
from server.common.pki import server_name
from server.common.revocation import RevocationChecker
from server.common.tls import TlsFiles, secure_channel
from server.console.activity import Activity, ActivityLog
from server.console.forms import (
    PRIORITIES,
    CandidateView,
    FormError,
    describe_candidate,
    describe_linked,
    read_lookup_form,
)
from server.console.state import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    TOO_MANY,
    Console,
    Refused,
    SecurityHeaders,
    Session,
    now_utc,
    staff_only,
    try_again,
)
from server.console.tls import (
    ClientCertificateProtocol,
    tls_context_factory,
)
from server.node.config import NodeConfig

logger = logging.getLogger(__name__)

__all__ = ["Console", "create_app", "serve"]

#: Where ``make console-assets`` installs govuk-frontend (npm, never fetched at run time).
FRONTEND = Path(__file__).parent / "frontend" / "node_modules" / "govuk-frontend" / "dist" / "govuk"
KNOWN_PAGE_SIZE = 25
NODE_DEADLINE_S = 10.0
SHUTDOWN_GRACE_S = 5


def _retry_after(exc: grpc.RpcError) -> float | None:
    """The node's retry-after (seconds) of a ``RESOURCE_EXHAUSTED`` refusal, else None."""
    if not isinstance(exc, grpc.Call) or exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    wait = retry_after_from_metadata(exc.trailing_metadata())
    return 60.0 if wait is None else wait


def _node_error(exc: grpc.RpcError) -> tuple[str, str]:
    """(heading, text) for a failed node call: its status and details, which name fields
    and expectations only, never a value."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return TOO_MANY, try_again(_retry_after(exc) or 60.0)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "Sorry, the service is unavailable", "Try again later."
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return "The request could not be made", details
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "The request was refused", details
    if code == grpc.StatusCode.NOT_FOUND:
        return "The record was not found", details
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return "The details could not be used", details
    return "Sorry, there is a problem with the service", "Try again later."


def _page_number(text: str) -> int:
    """The page asked for in ``?page=``: a positive number (anything else is page 1)."""
    if not text.isdigit() or len(text) > 6:
        return 1
    return max(1, int(text))


def _entry_number(text: str) -> int:
    """The activity entry asked for in ``?before=``: entries older than it are listed (0,
    the newest, for anything but a positive number)."""
    if not text.isdigit() or len(text) > 18:
        return 0
    return int(text)


def _fetched_at(text: str) -> str:
    """The node's UTC ISO-8601 fetch time in words ("" when none or unreadable)."""
    try:
        return datetime.datetime.fromisoformat(text).strftime("%d %B %Y at %H:%M UTC")
    except ValueError:
        return ""


def create_app(console: Console) -> Any:
    """The ASGI application: routes, static assets, security headers."""

    async def signed_in(request: Request) -> tuple[Identity, Session] | Response:
        identity, fingerprint = console.person(request)
        session = console.session(request, identity, fingerprint)
        if session is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "POST":
            console.pace(identity)
        return identity, session

    async def home(request: Request) -> Response:
        identity, fingerprint = console.person(request)
        session = console.session(request, identity, fingerprint)
        if session is not None:
            if identity.role != "staff":
                return RedirectResponse("/activity", status_code=303)
            return lookup_page(session)
        token = secrets.token_urlsafe(32)
        response = console.render(
            "sign_in.html", person=identity.name, role=identity.role, csrf_token=token
        )
        response.set_cookie(
            SIGNIN_COOKIE,
            token,
            max_age=600,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return response

    async def sign_in(request: Request) -> Response:
        identity, fingerprint = console.person(request)
        console.pace(identity, sign_in=True)
        await console.check_csrf(request, request.cookies.get(SIGNIN_COOKIE, ""))
        session_id, _session = console.start_session(identity, fingerprint)
        logger.info("console sign-in: %s", identity.name)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(
            SIGNIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
        response.set_cookie(
            SESSION_COOKIE, session_id, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    async def sign_out(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        _identity, session = got
        await console.check_csrf(request, session.csrf)
        console.end_session(request)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    def lookup_page(
        session: Session,
        *,
        values: Mapping[str, str] | None = None,
        errors: list[FormError] | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        return console.render(
            "lookup.html",
            status,
            session=session,
            csrf_token=session.csrf,
            purposes=console.config.purposes,
            values=values or {},
            errors=errors or [],
            error_of={e.field: e.text for e in errors or []},
            page="lookup",
        )

    async def lookup(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        identity, session = got
        staff_only(identity)
        form = await console.check_csrf(request, session.csrf)
        checked, errors = read_lookup_form(form, console.config.purposes)
        if checked is None:
            return lookup_page(session, values=form, errors=errors, status=400)
        lookup_request = jigsaw_pb2.LookupRequest(
            identifiers=dict(checked.identifiers),
            purpose_code=checked.purpose_code,
            note=checked.note,
            max_candidates=20,
            on_behalf_of=identity.name,
        )
        try:
            answer = await run_in_threadpool(
                console.node.Lookup, lookup_request, timeout=NODE_DEADLINE_S
            )
        except grpc.RpcError as exc:
            heading, text = _node_error(exc)
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            console.activity.add(
                identity.name, Activity(now_utc(), "lookup", checked.purpose_code, code.lower())
            )
            logger.info("console lookup failed: %s", code)
            wait = _retry_after(exc)
            status = 502 if code in ("UNAVAILABLE", "UNKNOWN") else 400
            page = lookup_page(
                session,
                values=form,
                # not a field's problem: the summary's item links to no field
                errors=[FormError("", f"{heading}. {text}")],
                status=429 if wait is not None else status,
            )
            if wait is not None:
                page.headers["retry-after"] = str(max(1, math.ceil(wait)))
            return page
        candidates: list[CandidateView] = []
        for candidate in answer.candidates:
            token = console.remember(
                session, candidate.agency, candidate.reference, checked.purpose_code
            )
            candidates.append(describe_candidate(candidate, token))
        agencies = tuple(dict.fromkeys(c.agency for c in candidates))
        console.activity.add(
            identity.name,
            Activity(now_utc(), "lookup", checked.purpose_code, "ok", agencies, answer.lookup_id),
        )
        return console.render(
            "answer.html",
            session=session,
            csrf_token=session.csrf,
            candidates=candidates,
            agencies=agencies,
            notes=list(answer.notes),
            lookup_id=answer.lookup_id,
            purpose=checked.purpose_code,
            page="lookup",
        )

    async def chosen_candidate(
        request: Request,
    ) -> tuple[Identity, Session, Mapping[str, str], str, tuple[str, str, str]] | Response:
        """A staff member's POST about one candidate of their last answer: who, their session,
        the checked form, the candidate's opaque token and (holder, reference, purpose)."""
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        identity, session = got
        staff_only(identity)
        form = await console.check_csrf(request, session.csrf)
        token = form.get("candidate", "")
        chosen = session.candidates.get(token)
        if chosen is None:
            raise Refused(400, "Look the child up again", "That answer has expired.")
        return identity, session, form, token, chosen

    async def request_form(request: Request) -> Response:
        got = await chosen_candidate(request)
        if isinstance(got, Response):
            return got
        _identity, session, _form, token, chosen = got
        return console.render(
            "request.html",
            session=session,
            csrf_token=session.csrf,
            candidate=token,
            holder=chosen[0],
            purposes=console.config.purposes,
            values={"purpose": chosen[2]},
            errors=[],
            error_of={},
            page="lookup",
        )

    async def disclose(request: Request) -> Response:
        got = await chosen_candidate(request)
        if isinstance(got, Response):
            return got
        identity, session, form, token, (holder, reference, _lookup_purpose) = got
        errors = []
        purpose = form.get("purpose", "")
        priority = form.get("priority", "")
        if purpose not in console.config.purposes:
            errors.append(FormError("purpose", "Select the purpose of this request"))
        if priority not in PRIORITIES:
            errors.append(FormError("priority", "Select a priority: red, amber or green"))
        if errors:
            return console.render(
                "request.html", 400, session=session, csrf_token=session.csrf, candidate=token,
                holder=holder, purposes=console.config.purposes, values=form, errors=errors,
                error_of={e.field: e.text for e in errors}, page="lookup",
            )  # fmt: skip
        label, hours, _meaning = PRIORITIES[priority]
        try:
            answer = await run_in_threadpool(
                console.node.Disclose,
                jigsaw_pb2.DiscloseRequest(
                    reference=reference,
                    purpose_code=purpose,
                    priority=priority,
                    on_behalf_of=identity.name,
                ),
                timeout=NODE_DEADLINE_S,
            )
        except grpc.RpcError as exc:
            heading, text = _node_error(exc)
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            console.activity.add(
                identity.name,
                Activity(now_utc(), "disclosure", purpose, code.lower(), (holder,), "", priority),
            )
            wait = _retry_after(exc)
            status = 429 if wait is not None else 400 if code != "UNAVAILABLE" else 502
            raise Refused(status, heading, text, retry_after=wait) from None
        console.activity.add(
            identity.name,
            Activity(
                now_utc(), "disclosure", purpose, "ok", (answer.agency,), answer.disclosure_id,
                priority, tuple(answer.fields), tuple(answer.withheld_fields),
            ),
        )  # fmt: skip
        window = console.config.rate_limits.disclosure_window_minutes
        return console.render(
            "disclosed.html",
            session=session,
            csrf_token=session.csrf,
            answer=answer,
            fields=sorted(answer.fields.items()),
            priority=(label, hours),
            purpose=purpose,
            window_minutes=int(window),
            page="lookup",
        )

    async def activity(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        identity, session = got
        before = _entry_number(request.query_params.get("before", ""))
        entries = await run_in_threadpool(console.activity.page, identity.name, before)
        node_status: jigsaw_pb2.NodeStatusResponse | None = None
        status_error = ""
        if identity.role == "operator":
            console.pace(identity)
            try:
                node_status = await run_in_threadpool(
                    console.node.Status, jigsaw_pb2.NodeStatusRequest(), timeout=NODE_DEADLINE_S
                )
            except grpc.RpcError as exc:
                heading, text = _node_error(exc)
                status_error = f"{heading}. {text}"
                code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
                logger.info("console node status failed: %s", code)
        return console.render(
            "activity.html", session=session, csrf_token=session.csrf, entries=entries.entries,
            older=entries.older, newest=before == 0, page="activity",
            operator=identity.role == "operator", node_status=node_status,
            status_error=status_error,
        )  # fmt: skip

    async def known(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        identity, session = got
        staff_only(identity)
        console.pace(identity)  # a page that calls the node, as a form post does
        number = _page_number(request.query_params.get("page", "1"))
        listing = jigsaw_pb2.ListLinkedRequest(
            page_size=KNOWN_PAGE_SIZE,
            # the node's page token is the offset of the page's first record
            page_token=str((number - 1) * KNOWN_PAGE_SIZE) if number > 1 else "",
            on_behalf_of=identity.name,
        )
        try:
            answer = await run_in_threadpool(
                console.node.ListLinked, listing, timeout=NODE_DEADLINE_S
            )
        except grpc.RpcError as exc:
            heading, text = _node_error(exc)
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            logger.info("console list of linked records failed: %s", code)
            wait = _retry_after(exc)
            status = 502 if code in ("UNAVAILABLE", "UNKNOWN") else 400
            raise Refused(429 if wait else status, heading, text, retry_after=wait) from None
        pages = max(1, -(-answer.total_records // KNOWN_PAGE_SIZE))
        if number > pages:
            return RedirectResponse(f"/known?page={pages}", status_code=303)
        return console.render(
            "known.html",
            session=session,
            csrf_token=session.csrf,
            records=[describe_linked(r) for r in answer.records],
            total=answer.total_records,
            fetched_at=_fetched_at(answer.fetched_at),
            linked=bool(answer.result_id),
            number=number,
            pages=pages,
            first=(number - 1) * KNOWN_PAGE_SIZE + 1,
            page="known",
        )

    async def refused(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, Refused):  # pragma: no cover - registered for Refused only
            raise exc
        page = console.render("refused.html", exc.status, heading=exc.heading, text=exc.text)
        if exc.retry_after is not None:
            page.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
        return page

    routes: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/lookup", lookup, methods=["POST"]),
        Route("/request", request_form, methods=["POST"]),
        Route("/disclose", disclose, methods=["POST"]),
        Route("/activity", activity, methods=["GET"]),
        Route("/known", known, methods=["GET"]),
    ]
    if (FRONTEND / "assets").is_dir():
        routes += [
            Mount("/assets", StaticFiles(directory=FRONTEND / "assets"), name="assets"),
            Mount("/govuk", StaticFiles(directory=FRONTEND), name="govuk"),
        ]
    else:
        logger.warning("govuk-frontend is not installed (make console-assets): pages unstyled")
    app = Starlette(routes=routes, exception_handlers={Refused: refused})
    return SecurityHeaders(app)


def build_console(config: NodeConfig) -> tuple[Console, grpc.Channel]:
    """The console of ``config``'s agency and its channel to the node (close it after)."""
    if config.console is None:
        raise ValueError("the node config has no [console] section")
    settings = config.console
    tls = TlsFiles(
        ca_cert=config.tls.ca_cert, cert=settings.cert, key=settings.key, crl=config.tls.crl
    )
    channel = secure_channel(settings.node, tls, expect=server_name("node", config.agency))
    console = Console(
        config,
        settings,
        node=jigsaw_pb2_grpc.AgencyNodeStub(channel),  # type: ignore[no-untyped-call]
        activity=ActivityLog(settings.activity),
        revocations=RevocationChecker.for_tls(config.tls),
    )
    return console, channel


class _Server(uvicorn.Server):
    """uvicorn's server, telling its caller the bound port once it is serving."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[int], None] | None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._on_started is not None and sockets:
            self._on_started(sockets[0].getsockname()[1])


def serve(config: NodeConfig, *, on_started: Callable[[int], None] | None = None) -> None:
    """Run the agency's console (HTTPS, client certificates required) until SIGTERM/SIGINT."""
    if config.console is None:
        raise ValueError("the node config has no [console] section")
    console, channel = build_console(config)
    host, _, port = config.console.listen.rpartition(":")
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host.strip("[]"), int(port)))
    server_config = uvicorn.Config(
        create_app(console),
        ssl_certfile=str(config.console.cert),
        ssl_keyfile=str(config.console.key),
        ssl_ca_certs=str(config.tls.ca_cert),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        ssl_context_factory=tls_context_factory,
        http=ClientCertificateProtocol,
        lifespan="off",
        access_log=False,  # an access log is a list of who looked at what, when
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,  # browsers keep connections open
        log_config=None,
    )

    def started(bound: int) -> None:
        logger.info("staff console of %s serving on https://%s:%d", config.agency, host, bound)
        if on_started is not None:
            on_started(bound)

    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the
    # handler that was there before: make that a no-op, so a stop on request exits 0
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: None)
    try:
        _Server(server_config, started).run(sockets=[listener])
    finally:
        channel.close()
        console.activity.close()
