"""benchmarks.quality on the synthetic population under each error profile."""

from __future__ import annotations

import pytest

from benchmarks import quality


@pytest.mark.parametrize("dataset", quality.PROFILE_DATASETS)
def test_a_profile_dataset_runs_and_reports_like_the_synthetic_row(dataset: str) -> None:
    (result,) = quality.run((dataset,), synthetic_children=300, splink=False)
    plain = quality.run_synthetic(300, 7)
    assert result.dataset == dataset
    assert set(result.as_dict()) == set(plain.as_dict())
    assert 0 < result.recall <= 1 and 0 < result.precision <= 1
    assert result.true_pairs > 0
    assert result.em.startswith(("converged (", "stopped at cap ("))


def test_profile_datasets_are_in_the_default_run() -> None:
    assert set(quality.PROFILE_DATASETS) == {"synthetic-typical", "synthetic-hard"}
    assert set(quality.PROFILE_DATASETS) <= set(quality.DATASETS)
