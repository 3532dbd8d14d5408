"""The staff console: web pages where unit staff look a child up, see who holds records and
why, request a record and see what they did — acting only as themselves, at their own node.

Role in the pipeline: step 6 of the data flow. One console runs beside each agency node
(``jigsaw console serve --config node.toml``, the ``[console]`` section of the node config).
It is a Starlette application rendered with Jinja2 (autoescape on) and served by uvicorn
over HTTPS; it holds no records and calls the node's existing ``Lookup``, ``Disclose`` and
``ListLinked`` (with ``on_behalf_of``) and ``Status`` (as itself, for operators).

Sign-in is the staff certificate (mutual TLS in the browser)::

    browser --(TLS, client cert = staff PKCS#12 bundle, ``jigsaw pki p12``)--> console
    console --(mutual TLS, console cert, role "console", on_behalf_of=<staff CN>)--> node

* uvicorn requires a client certificate verified against the federation CA
  (``ssl.CERT_REQUIRED``). uvicorn does not yet put it in the ASGI scope (the ASGI TLS
  extension is an open pull request there), so :mod:`server.console.tls` adds the leaf
  certificate to ``scope["extensions"]["tls"]["client_cert_chain"]`` from the connection's
  ``ssl_object`` — the extension's own shape, so it goes once uvicorn ships it.
* Every request re-reads the identity from that certificate (``server.common.auth``): role
  ``staff`` of the console's own agency (or an operator, below), not on the revocation
  list; anything else is a 403 page, before any session or form is looked at.
* The console holds its own certificate of the new PKI role ``console`` (agency-bound like
  staff). It calls the node with ``on_behalf_of`` = the verified staff name. The node
  accepts ``on_behalf_of`` only from a ``console`` certificate of its own agency (staff of
  its agency may not set it; another agency's console is refused by the interceptor), and
  then treats the staff member as the caller: actor of every audit entry (``via`` names the
  console), per-person limits, the lookup-before-disclosure rule, the staff disclosure
  policy. The console never chooses the name itself: it comes from the browser's verified
  certificate on that very request. A console certificate can act for any staff member of
  its agency, as the agency's node already can when it relays; it is agency infrastructure
  and revocable like any certificate.

Operators sign in the same way, with their ``operator`` certificate (mutual TLS in the
browser; the federation issues operators to the unit, O = ``unit``, not to an agency):
uvicorn verifies it against the federation CA the node trusts, so only the node's own
federation's operators get in, and :meth:`~server.console.app.Console.person` accepts role
``operator`` of agency ``unit`` besides the agency's own staff. An operator sees My activity
with the node's ``Status`` (records held, published, waiting, key version, schema
fingerprint, software version, and the agency's data-quality figures: NHS-number coverage,
the share known to other agencies, missing values by field; the console reads it as itself —
the node allows ``Status`` to its own console; counts and versions, no record). Pages that
act on records (lookup, request, children known to other agencies) are refused to operators:
the console calls the node on behalf of staff only, never with an operator's name as
``on_behalf_of``. The node's ``Status`` does not report the matcher's status today, and the
page says so rather than showing anything else.

Sessions: "Sign in" (a POST) creates a server-side session: a random id in a
``__Host-`` cookie (Secure, HttpOnly, SameSite=Strict), bound to the SHA-256 of the client
certificate (a request with another certificate is refused and the session dropped), idle
expiry ``session_minutes`` and an absolute limit. Sessions live in the console's memory.

CSRF: each session has a random token, rendered as a hidden field in every form and
compared in constant time on every POST (sign-in included, with a pre-session token in a
short-lived cookie); SameSite=Strict and an Origin check are defence in depth.

No identifier in a URL, a log line or a cache: every form is a POST; answers are rendered
on the POST response itself; a candidate is named in the disclosure form by an opaque
per-session index, never by its agency reference; every response carries
``Cache-Control: no-store``, a strict Content Security Policy (``default-src 'none'``,
self-hosted style sheet, fonts and images, no script, ``frame-ancestors 'none'``,
``form-action 'self'``), ``Referrer-Policy: same-origin``. uvicorn's access log is off;
the console logs counts and ids only. "My activity" comes from the console's activity file
(SQLite): time, kind, purpose code, priority, outcome, agencies and field *names* — never an
identifier and never the staff member's note, which goes to the node's audit log.

Pages (all GOV.UK Design System, server-rendered, no JavaScript needed): sign in; look up a
child (error summary and per-field messages); the answer (agencies, band in words, evidence
in plain words, a chart of what pushed each match up or down, notes; no probabilities or
weights); request the record (purpose, priority red/amber/green with MASH response times,
released and withheld fields); children known to other agencies (the agency's own records
the last batch link joined to other agencies' records, from the node's ``ListLinked``: the
local id, each other agency and the band in words, 25 a page, ``/known?page=N`` — a page
number, never an identifier; no agency's reference or cluster id is shown); my activity
(and, for operators, the node's status).
"""
