"""Build hook for the one compiled part of Jigsaw: the extension ``linkage._dicekernel``.

Everything else is declared in pyproject.toml. The extension is plain C99 built from the
sources in ``linkage/_kernel/`` (one purpose per file), with run-time CPU dispatch for the
Dice popcounts (AVX-512 VPOPCNTDQ when the CPU has it, POPCNT otherwise), so one build runs
on any x86-64 machine, and OpenSSL's libcrypto for HMAC-SHA256 (Debian: libssl-dev, which
``make setup`` installs). The extension is optional: where it cannot be compiled the install
goes on, and ``linkage.kernel`` runs the same functions in numpy (``linkage/_portable.py``).
"""

from pathlib import Path

from setuptools import Extension, setup

KERNEL = Path("linkage", "_kernel")

setup(
    ext_modules=[
        Extension(
            "linkage._dicekernel",
            sources=sorted(str(path) for path in KERNEL.glob("*.c")),
            depends=sorted(str(path) for path in KERNEL.glob("*.h")),
            libraries=["crypto"],
            extra_compile_args=["-O3", "-std=c99", "-fvisibility=hidden"],
            optional=True,
        )
    ]
)
