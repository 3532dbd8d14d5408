"""The one exception tree of the linkage library.

::

    JigsawError
     ├── SchemaError            a schema file or dict is malformed (all problems at once)
     ├── InvalidValueError      one field value cannot be normalised (names field, never value)
     ├── KeyMaterialError       a secret or derived key is unusable
     ├── FilterFormatError      a packed filter has the wrong length / dtype / shape
     ├── IncompatibleEncodingError  encodings made with different schemas or key versions
     ├── ModelError             a scoring model cannot be fitted or applied
     └── UsageError             a caller broke a function's contract (a setting, not data)
          ├── InvalidArgumentError   an argument out of range (also a ValueError)
          └── ArgumentTypeError      an argument of the wrong type (also a TypeError)

Every error the library raises on purpose is one of these; the usage errors are also the
builtin ``ValueError`` / ``TypeError`` a Python caller expects for a bad argument. The one
exception is the mapping protocol: ``Schema[name]`` raises ``KeyError`` for an unknown field.
The private kernels (:mod:`linkage.kernel`: the C extension or its numpy twin) raise builtin
errors of their own; the public functions check their arguments before calling them.

Every message names the field, row or expectation involved and never carries an identifier
value (a name, a date of birth, an NHS number): putting one in an error is a data breach.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


class JigsawError(Exception):
    """Base class of every error raised by Jigsaw."""


class SchemaError(JigsawError):
    """A linkage schema is malformed. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid linkage schema: " + "; ".join(self.problems))


class InvalidValueError(JigsawError):
    """A value could not be normalised. Carries the field name and the reason, never the value."""

    def __init__(self, field: str, reason: str, *, row: int | None = None) -> None:
        self.field = field
        self.reason = reason
        self.row = row
        where = f"row {row}, " if row is not None else ""
        super().__init__(f"{where}field {field!r}: {reason}")


class KeyMaterialError(JigsawError):
    """A linkage secret or key is unusable (too short, wrong type, wrong version)."""


class FilterFormatError(JigsawError):
    """A packed Bloom filter does not have the length, dtype or shape the schema requires."""


class IncompatibleEncodingError(JigsawError):
    """Encodings were made with a different schema fingerprint or key version."""


class ModelError(JigsawError):
    """A Fellegi-Sunter model could not be fitted or applied."""


class UsageError(JigsawError):
    """A caller broke a function's contract: a setting or argument, never record data."""


class InvalidArgumentError(UsageError, ValueError):
    """An argument is outside its documented range."""


class ArgumentTypeError(UsageError, TypeError):
    """An argument has the wrong type."""


def as_float_array(value: object, name: str) -> NDArray[np.float64]:
    """``np.asarray(value, float64)`` raising :class:`ModelError` that names ``name`` only.

    numpy's own ``ValueError`` quotes the offending element ("could not convert string to
    float: '<value>'"), which may be an identifier: never let it propagate.
    """
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"{name}: expected numbers") from None
