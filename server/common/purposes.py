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
from collections.abc import Mapping, Sequence
from typing import Any

from server.common.config import Problems
from server.common.status import RequestError

__all__ = [
    "DEFAULT_PURPOSE_CODES",
    "MAX_PURPOSE_CODE_CHARS",
    "PURPOSE_CODE_RE",
    "read_purpose_codes",
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


def read_purpose_codes(
    where: str, table: Mapping[str, Any], problems: Problems
) -> tuple[str, ...] | None:
    """The ``purposes`` key of a config table (the default list when absent): a non-empty
    list of distinct codes. None after a problem, which names the key and the rule."""
    value = table.get("purposes", DEFAULT_PURPOSE_CODES)
    rule = (
        f"{where}.purposes: expected a non-empty list of distinct purpose codes (lowercase "
        f"letters, digits and underscores, starting with a letter, at most "
        f"{MAX_PURPOSE_CODE_CHARS} characters)"
    )
    if not isinstance(value, list | tuple) or not value:
        problems.add(rule)
        return None
    for position, code in enumerate(value, start=1):
        if not isinstance(code, str) or not PURPOSE_CODE_RE.fullmatch(code):
            problems.add(f"{rule}; entry {position} is not one")
            return None
    if len(set(value)) != len(value):
        problems.add(f"{rule}; a code is repeated")
        return None
    return tuple(value)


def require_purpose_code(value: object, field: str, codes: Sequence[str]) -> str:
    """``value`` if it is one of ``codes``, else :class:`RequestError` naming ``field`` and
    listing ``codes`` (never echoing ``value``)."""
    if isinstance(value, str) and value in codes:
        return value
    raise RequestError(field, "expected a purpose code, one of " + ", ".join(codes))
