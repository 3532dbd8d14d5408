"""Who a node's call is made for: the caller, or the staff member its console names.

Role: the agency's staff console (a ``console`` certificate of this agency) calls
``Lookup``, ``Disclose`` and ``ListLinked`` with ``on_behalf_of`` = the staff member whose
browser certificate it verified; the node then treats that person as the caller (audit actor,
limits, lookup-before-disclosure, the staff disclosure policy), with ``via`` = the console in
every audit entry. Only a console may name one (a node relaying a disclosure is handled by
:mod:`server.node.disclose`); the name must be a certificate common name.
"""

from __future__ import annotations

from server.common.auth import Identity
from server.common.pki import IDENTITY_NAME_RE
from server.common.status import RequestError, require_text

#: The longest identity name (a certificate CN) a caller may name.
MAX_NAME_CHARS = 64


def acting_person(caller: Identity, on_behalf_of: str) -> Identity:
    """The person a staff call is made for: ``caller`` itself, or, when the caller is this
    agency's staff console (the interceptor checked its agency), the staff member of that
    agency it names. Only a console may name one (a relaying node is handled apart)."""
    if caller.role != "console":
        if on_behalf_of:
            raise RequestError(
                "on_behalf_of", "set only by the agency's staff console or a relaying node"
            )
        return caller
    require_text(on_behalf_of, "on_behalf_of", MAX_NAME_CHARS)
    if not IDENTITY_NAME_RE.fullmatch(on_behalf_of):
        raise RequestError("on_behalf_of", "expected a staff identity name (a certificate CN)")
    return Identity(name=on_behalf_of, agency=caller.agency, role="staff")


__all__ = ["MAX_NAME_CHARS", "acting_person"]
