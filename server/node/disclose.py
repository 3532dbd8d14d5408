"""Releasing a record to a staff member: from this agency's store, or relayed to its holder.

Role: step 4 of the data flow. After the checks of ``Disclose`` (the person's limits, and a
recent lookup of theirs at this node that returned the reference, which names its holder),
:class:`Disclosures` releases this agency's own record (:meth:`Disclosures.release`) or asks
the holding agency's node named in the ``[peers]`` table, as this node, for the person
(:meth:`Disclosures.relay`); the holder answers with what its own policy releases.

Contract: only the fields the ``[disclosure]`` policy allows for the person's role are
released, and the others the record or schema knows are named as withheld; a role the policy
does not name gets nothing (``PERMISSION_DENIED``); an unknown or deleted reference is
``NOT_FOUND``; a holder this node has no address for is ``FAILED_PRECONDITION``; the
holder's rate-limit refusal is :class:`~server.common.status.RateLimitedError`, which the
caller counts. Every other outcome writes one ``disclose`` audit entry (released and
withheld field *names*, never a value; a relayed disclosure is audited on both nodes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.audit import AuditLog
from server.common.status import NotFoundError, PolicyDenied, PreconditionFailed
from server.node.config import NodeConfig
from server.node.store import NodeStore
from server.node.upstream import RELAY_TIMEOUT_S, code_of, holder_failure, rate_limited

logger = logging.getLogger(__name__)

#: A disclosure's priority (MASH practice: red within hours, amber within a day, green within
#: days), or none stated.
DISCLOSURE_PRIORITIES = ("", "red", "amber", "green")


class Disclosures:
    """Releases this agency's records and relays requests for other agencies' (audited)."""

    def __init__(
        self,
        config: NodeConfig,
        store: NodeStore,
        audit: AuditLog,
        peers: Mapping[str, jigsaw_pb2_grpc.AgencyNodeStub],
    ) -> None:
        self._config = config
        self._agency = config.agency
        self._store = store
        self._audit = audit
        self._peers = dict(peers)

    def audit(
        self, actor: str, purpose: str, outcome: str, details: Mapping[str, str | int]
    ) -> None:
        """One ``disclose`` audit entry."""
        self._audit.append(
            actor=actor, action="disclose", purpose=purpose, outcome=outcome, details=details
        )

    def release(
        self,
        actor: str,
        role: str,
        purpose: str,
        reference: str,
        base: dict[str, str | int],
    ) -> jigsaw_pb2.DiscloseResponse:
        """This agency's record behind ``reference``, as its policy releases it to ``role``."""
        record = self._store.get_by_reference(reference)
        if record is None or record.deleted:
            self.audit(actor, purpose, "not_found", base)
            raise NotFoundError(f"reference: no record with this reference at {self._agency}")
        if role not in self._config.disclosure:
            self.audit(actor, purpose, "denied", base)
            raise PolicyDenied(
                f"the {self._agency} disclosure policy releases nothing to role {role}"
            )
        allowed = self._config.released_fields(role)
        known = list(dict.fromkeys([*self._config.schema.input_names, *record.fields]))
        released = {
            name: value
            for name in allowed
            if isinstance(value := record.fields.get(name), str) and value
        }
        withheld = [name for name in known if name not in allowed]
        self.audit(
            actor,
            purpose,
            "ok",
            {**base, "released": ",".join(released), "withheld": ",".join(withheld)},
        )
        logger.info(
            "disclosure %s: %d fields released, %d withheld",
            base["disclosure_id"], len(released), len(withheld),
        )  # fmt: skip
        return jigsaw_pb2.DiscloseResponse(
            disclosure_id=str(base["disclosure_id"]),
            agency=self._agency,
            reference=reference,
            fields=released,
            withheld_fields=withheld,
        )

    def relay(
        self,
        actor: str,
        holder: str,
        purpose: str,
        reference: str,
        base: dict[str, str | int],
    ) -> jigsaw_pb2.DiscloseResponse:
        """Ask the holding agency's node for the record, as this node, for ``actor``."""
        base = {**base, "holder": holder}
        peer = self._peers.get(holder)
        if peer is None:
            self.audit(actor, purpose, "no_peer", base)
            raise PreconditionFailed(
                f"reference: held by {holder}, whose node this node has no address for "
                f"(its [peers] table)"
            )
        try:
            response: jigsaw_pb2.DiscloseResponse = peer.Disclose(
                jigsaw_pb2.DiscloseRequest(
                    reference=reference,
                    purpose_code=purpose,
                    priority=str(base.get("priority", "")),
                    on_behalf_of=actor,
                ),
                timeout=RELAY_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            limited = rate_limited(exc)
            if limited is not None:  # the caller counts it (it released nothing)
                raise limited from None
            self.audit(actor, purpose, f"holder_{code_of(exc).name.lower()}", base)
            raise holder_failure(exc, holder, self._config.peers[holder]) from None
        self.audit(
            actor,
            purpose,
            "ok",
            {
                **base,
                "holder_disclosure_id": response.disclosure_id,
                "released": ",".join(response.fields),
                "withheld": ",".join(response.withheld_fields),
            },
        )
        return response


__all__ = ["DISCLOSURE_PRIORITIES", "Disclosures"]
