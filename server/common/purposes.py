"""Purpose codes: why a lookup is made, as one word from a closed list.

Role in the pipeline: a staff member's ``Lookup`` states a purpose code (and a free-text note
that stays in the node's own audit log); the node checks the code against its list and
passes it, never the note, to the matcher in ``MatchRequest.purpose_code``, and the matcher
checks it against its own list before auditing it. Free text cannot reach the matcher, so a
purpose such as "s47 re <child's name>" cannot carry an identifier into its audit log.

The list is the federation's sharing agreement's purposes: :data:`DEFAULT_PURPOSE_CODES`
unless the node and matcher configs name another (``purposes`` in ``[node]`` and
``[matcher]``; the federation keeps them the same, a code the matcher does not know is
refused there). A code is lowercase letters, digits and underscores, starting with a letter
(:data:`PURPOSE_CODE_RE`), at most :data:`MAX_PURPOSE_CODE_CHARS` characters.

Errors name the field and list the codes expected, never the value given (staff may have
typed a name into it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import PlainValidator

from linkage.strict import rule
from server.common.status import RequestError

__all__ = [
    "DEFAULT_PURPOSE_CODES",
    "MAX_PURPOSE_CODE_CHARS",
    "PURPOSE_CODE_RE",
    "PurposeCodes",
    "require_purpose_code",
]

MAX_PURPOSE_CODE_CHARS = 48
PURPOSE_CODE_RE = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_PURPOSE_CODE_CHARS - 1}}}")

#: The purposes of a children's safeguarding information-sharing agreement: a child
#: protection enquiry (Children Act 1989 s47) and the strategy discussion before it, a child
#: in need assessment (s17), a referral to the multi-agency safeguarding hub, an early help
#: assessment, and an enquiry about a missing child.
DEFAULT_PURPOSE_CODES: tuple[str, ...] = (
    "s47_enquiry",
    "strategy_discussion",
    "child_in_need_assessment",
    "mash_referral",
    "early_help_assessment",
    "missing_child_enquiry",
)


def _purpose_codes(value: object) -> tuple[str, ...]:
    """The ``purposes`` key of a config table: a non-empty list of distinct codes. Any other
    value is one problem naming the rule, never the value."""
    expected = (
        f"expected a non-empty list of distinct purpose codes (lowercase letters, digits and "
        f"underscores, starting with a letter, at most {MAX_PURPOSE_CODE_CHARS} characters)"
    )
    if not isinstance(value, list) or not value:
        raise rule(expected)
    for position, code in enumerate(value, start=1):
        if not isinstance(code, str) or not PURPOSE_CODE_RE.fullmatch(code):
            raise rule(f"{expected}; entry {position} is not one")
    if len(set(value)) != len(value):
        raise rule(f"{expected}; a code is repeated")
    return tuple(value)


#: The ``purposes`` key of the node and matcher configs (default :data:`DEFAULT_PURPOSE_CODES`).
PurposeCodes = Annotated[tuple[str, ...], PlainValidator(_purpose_codes)]


def require_purpose_code(value: object, field: str, codes: Sequence[str]) -> str:
    """``value`` if it is one of ``codes``, else :class:`RequestError` naming ``field`` and
    listing ``codes`` (never echoing ``value``)."""
    if isinstance(value, str) and value in codes:
        return value
    raise RequestError(field, "expected a purpose code, one of " + ", ".join(codes))
