"""Build hook for the one compiled part of Jigsaw: the Dice popcount kernel.

Everything else is declared in pyproject.toml. The kernel is plain C99 with
run-time CPU dispatch (AVX-512 VPOPCNTDQ when the CPU has it, POPCNT otherwise),
so one build runs on any x86-64 machine; other architectures use the portable path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "linkage._dicekernel",
            sources=["linkage/_dicekernel.c"],
            extra_compile_args=["-O3", "-std=c99"],
        )
    ]
)
