"""The one import point of Jigsaw's kernels: the compiled extension, or its numpy twin.

Role: the loops that bound Jigsaw's speed (Dice popcounts, scans and pairs, the hardening
loops, HMAC token hashing) are C in the private extension ``linkage._dicekernel`` (sources in
``linkage/_kernel/``); :mod:`linkage._portable` is the same API in numpy and Python's
:mod:`hmac`. Library code reaches either only through this module (``from linkage import
kernel as _kernel``, then ``_kernel.scan(...)`` looked up at call time), never by importing
one of them itself.

Choice, made once at import: the portable module when the environment sets
``JIGSAW_PORTABLE_KERNEL=1``; else the extension, or the portable module when the extension
cannot be imported (setup.py builds it as optional: a machine without a C compiler or
OpenSSL's headers still installs). :data:`IMPLEMENTATION` says which is in use (``"c"`` or
``"numpy"``), :data:`FALLBACK_REASON` why the extension is not (``None`` when it is).

Contract: both implementations return bit-identical results for every function and raise the
same error types for bad arguments; ``tests/linkage/test_kernel_paths.py`` runs the golden vectors,
the known-answer tests and a small linkage under each. The functions and their arguments are
documented in the C sources (one file per purpose) and in :mod:`linkage._portable`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

from linkage.errors import InvalidArgumentError

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "FALLBACK_REASON",
    "IMPLEMENTATION",
    "available_kernels",
    "blip_mask",
    "diffuse",
    "hmac_paths",
    "hmac_words",
    "kernel_name",
    "pairs",
    "popcounts",
    "scan",
    "token_filters",
]

#: Set to ``1`` to run the numpy implementation even where the extension is built.
ENVIRONMENT_VARIABLE = "JIGSAW_PORTABLE_KERNEL"


def _select() -> tuple[ModuleType, str, str | None]:
    """(module, implementation name, why the extension is not in use)."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if setting not in ("", "0", "1"):
        raise InvalidArgumentError(f"{ENVIRONMENT_VARIABLE}: expected 0 or 1, got {setting!r}")
    if setting == "1":
        return importlib.import_module("linkage._portable"), "numpy", f"{ENVIRONMENT_VARIABLE}=1"
    try:
        return importlib.import_module("linkage._dicekernel"), "c", None
    except ImportError as error:
        reason = f"linkage._dicekernel cannot be imported ({error})"
        return importlib.import_module("linkage._portable"), "numpy", reason


_implementation, IMPLEMENTATION, FALLBACK_REASON = _select()

kernel_name: Callable[[], str] = _implementation.kernel_name
available_kernels: Callable[[], tuple[str, ...]] = _implementation.available_kernels
popcounts: Callable[..., None] = _implementation.popcounts
scan: Callable[..., tuple[int, int, int]] = _implementation.scan
pairs: Callable[..., None] = _implementation.pairs
diffuse: Callable[..., None] = _implementation.diffuse
blip_mask: Callable[..., None] = _implementation.blip_mask
hmac_paths: Callable[[], tuple[tuple[str, bool], ...]] = _implementation.hmac_paths
hmac_words: Callable[..., None] = _implementation.hmac_words
token_filters: Callable[..., None] = _implementation.token_filters
