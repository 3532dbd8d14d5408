"""The staff console: web pages where unit staff look a child up, see who holds records and
why, request a record and see what they did — acting only as themselves, at their own node.

Role: one console runs beside each agency node (``jigsaw console serve --config node.toml``,
the node config's ``[console]`` section): a Starlette application (:mod:`.app`, its request
checks and sessions in :mod:`.state`) rendered with Jinja2 (autoescape on), served by uvicorn
over HTTPS. It holds no records; it calls the
node's ``Lookup``, ``Disclose`` and ``ListLinked`` with ``on_behalf_of``, and ``Status`` as
itself. Pages follow the GOV.UK Design System and need no JavaScript.

Sign-in is the staff certificate::

    browser --(TLS, client cert = staff PKCS#12 bundle, ``jigsaw pki p12``)--> console
    console --(mutual TLS, console cert, role "console", on_behalf_of=<staff CN>)--> node

Invariants:

* every request re-reads the person from the browser's verified certificate
  (:mod:`.tls` puts it in the ASGI scope): staff of this agency, or an operator of the
  federation, not revoked; anyone else gets a 403 page. ``on_behalf_of`` is always that
  verified name, never one the console chooses; the node accepts it only from a ``console``
  certificate of its own agency and audits the person as actor, the console as ``via``;
* operators see the node's status only: pages that act on records are staff's;
* sessions are server-side, in memory, bound to the certificate's SHA-256, with idle and
  absolute expiry; every POST carries the session's CSRF token;
* no identifier in a URL, a log line or a cache: forms POST, answers render on the POST
  response, a candidate is named by an opaque per-session index, every response is
  ``no-store`` under a strict Content Security Policy; the activity file (:mod:`.activity`)
  names fields, never values, and never holds the staff member's note.
"""
