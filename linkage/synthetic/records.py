"""The generated data and its ground truth: agency records, true pairs, CSV rows.

Contract: an :class:`AgencyData` holds one agency's records as columns of strings (as the
agency would export them) and the true child behind every record (``child_id``); true pairs
are pairs of records with the same child (:func:`true_pairs_between`,
:func:`true_pairs_within`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from linkage.synthetic.profiles import (
    ADDRESS_COLUMN,
    ADDRESS_ERROR_CATEGORIES,
    COLUMNS,
    ERROR_CATEGORIES,
    AgencyProfile,
)


@dataclass(frozen=True)
class AgencyData:
    """One agency's records: raw strings as it stores them, and the true child of each record.

    ``columns`` maps every name in ``COLUMNS`` (and ``ADDRESS_COLUMN`` where the population
    has addresses) to one value per record; a missing value is ``None`` or ``""`` (agencies mix
    both). ``child_id[i]`` is the true child of record ``i``. ``errors[category][i]`` says
    whether record ``i`` carries that error (``ERROR_CATEGORIES``, and
    ``ADDRESS_ERROR_CATEGORIES`` where the population has addresses).
    """

    name: str
    profile: AgencyProfile
    columns: dict[str, list[str | None]]
    child_id: NDArray[np.int64]
    errors: Mapping[str, NDArray[np.bool_]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.child_id.shape[0])

    @property
    def column_names(self) -> tuple[str, ...]:
        """``COLUMNS``, then ``ADDRESS_COLUMN`` where this agency's records have addresses."""
        return (*COLUMNS, ADDRESS_COLUMN) if ADDRESS_COLUMN in self.columns else COLUMNS

    @property
    def error_categories(self) -> tuple[str, ...]:
        """The categories of ``errors``: the address ones too where there are addresses."""
        extra = ADDRESS_ERROR_CATEGORIES if ADDRESS_COLUMN in self.columns else ()
        return (*ERROR_CATEGORIES, *extra)


@dataclass(frozen=True)
class CombinedRecords:
    """Every agency's records one after another; ``source[i]`` names the agency of record i."""

    columns: dict[str, list[str | None]]
    child_id: NDArray[np.int64]
    source: NDArray[np.str_]
    errors: Mapping[str, NDArray[np.bool_]] = field(default_factory=dict)
    """``ERROR_CATEGORIES`` -> one flag per record, as in ``AgencyData.errors``."""


@dataclass(frozen=True)
class SyntheticData:
    """A generated population: each agency's records, plus the household of every child."""

    seed: int
    n_children: int
    agencies: dict[str, AgencyData]
    household_id: NDArray[np.int64]
    """``household_id[child]``: children with the same value are siblings."""

    def all_records(self) -> CombinedRecords:
        """Concatenate every agency's records (in ``agencies`` order) with their source (and
        their addresses, where the population has them)."""
        parts = list(self.agencies.values())
        names = parts[0].column_names if parts else COLUMNS
        categories = parts[0].error_categories if parts else ERROR_CATEGORIES
        columns: dict[str, list[str | None]] = {column: [] for column in names}
        for part in parts:
            for column in names:
                columns[column].extend(part.columns[column])
        child_id = np.concatenate(
            [part.child_id for part in parts] or [np.zeros(0, dtype=np.int64)]
        ).astype(np.int64, copy=False)
        source = np.repeat(
            np.array([part.name for part in parts], dtype=np.str_),
            [len(part) for part in parts],
        )
        errors = {
            category: np.concatenate(
                [part.errors[category] for part in parts] or [np.zeros(0, dtype=np.bool_)]
            )
            for category in categories
        }
        return CombinedRecords(columns=columns, child_id=child_id, source=source, errors=errors)


def true_pairs_between(a: AgencyData, b: AgencyData) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every (i, j) with record i of ``a`` and record j of ``b`` about the same child.

    Sorted by i, then j. Duplicates make a record match more than one record of the other side.
    """
    return _pairs_with_equal_ids(a.child_id, b.child_id)


def true_pairs_within(a: AgencyData) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every (i, j) with i < j and records i and j of ``a`` about the same child (duplicates)."""
    left, right = _pairs_with_equal_ids(a.child_id, a.child_id)
    keep = left < right
    return left[keep], right[keep]


def _pairs_with_equal_ids(
    left_ids: NDArray[np.int64], right_ids: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    right_order = np.argsort(right_ids, kind="stable")
    right_sorted = right_ids[right_order]
    starts = np.searchsorted(right_sorted, left_ids, side="left")
    counts = np.searchsorted(right_sorted, left_ids, side="right") - starts
    left = np.repeat(np.arange(left_ids.shape[0], dtype=np.int64), counts)
    group_starts = np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.repeat(starts, counts) + (np.arange(left.shape[0]) - group_starts)
    right = right_order[positions].astype(np.int64, copy=False)
    return left, right


def rows(agency: AgencyData) -> Iterator[dict[str, str]]:
    """Yield one ``{column: value}`` dict per record, missing values as "" (for CSV writing):
    ``COLUMNS``, then ``ADDRESS_COLUMN`` where the population has addresses."""
    names = agency.column_names
    columns = [agency.columns[column] for column in names]
    for values in zip(*columns, strict=True):
        yield {
            column: "" if value is None else value
            for column, value in zip(names, values, strict=True)
        }
