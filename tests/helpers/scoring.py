"""Helpers for tests of fitted models."""

from __future__ import annotations


def max_difference(
    estimate: tuple[tuple[float, ...], ...], truth: tuple[tuple[float, ...], ...]
) -> float:
    """The largest absolute difference between two tables of per-level probabilities."""
    return max(
        abs(a - b)
        for estimate_field, true_field in zip(estimate, truth, strict=True)
        for a, b in zip(estimate_field, true_field, strict=True)
    )
