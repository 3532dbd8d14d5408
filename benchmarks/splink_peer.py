"""Splink as the plaintext ceiling of ``jigsaw bench quality``: its environment and hand-off.

Splink runs in a virtualenv of its own, ``benchmarks/.splink-venv``, created on first use (or
by ``make splink-venv``) from the pins in ``benchmarks/splink-requirements.txt``, so its
dependencies never meet Jigsaw's. This module prepares the input tables, starts
``benchmarks/splink_runner.py`` in that environment and reads back its predictions; scoring
them is ``benchmarks.quality``'s job.

Hand-off contract: one CSV per source dataset, every column a string and ``""`` for missing,
with a ``unique_id`` that is the record's position in the concatenation of the tables (so the
runner's ids are the positions ``benchmarks.quality`` scores). See the runner's docstring for
the config and output.

The synthetic agencies' records reach Splink as the agencies hold them (``synthetic.rows``),
after the cleaning any plaintext pipeline would do first (``clean_agency``): case and
whitespace normalised, dates parsed from the agency's own format to ISO, NHS numbers without
spaces (and only when ten digits), sex codes mapped to ``m``/``f``, postcodes upper-cased with
one space before the inward code.

Errors: ``SplinkUnavailable`` when the environment cannot be created or the runner fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from linkage import synthetic

HERE = Path(__file__).resolve().parent
SPLINK_VENV = HERE / ".splink-venv"
REQUIREMENTS = HERE / "splink-requirements.txt"
RUNNER = HERE / "splink_runner.py"
CHILD_COLUMNS = tuple(column for column in synthetic.COLUMNS if column != "record_id")
Progress = Callable[[str], None]


class SplinkUnavailable(RuntimeError):
    """Splink could not be installed or did not complete."""


@dataclass(frozen=True)
class SplinkOutput:
    """Every blocked pair (positions, ``left < right`` not implied) and the clusters."""

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    probability: NDArray[np.float64]
    cluster: NDArray[np.int64]
    seconds: float
    info: dict[str, Any]


def splink_python() -> Path:
    return SPLINK_VENV / "bin" / "python"


def pinned_version() -> str:
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        if line.startswith("splink=="):
            return line.split("==", 1)[1].strip()
    raise SplinkUnavailable(f"{REQUIREMENTS.name} does not pin splink")


def venv_ready() -> bool:
    """True when the Splink environment exists and holds the pinned version."""
    python = splink_python()
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('splink'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0 and probe.stdout.strip() == pinned_version()


def ensure_venv(progress: Progress) -> Path:
    """Create or repair benchmarks/.splink-venv from the pins; return its python."""
    if venv_ready():
        return splink_python()
    progress(f"creating {SPLINK_VENV.relative_to(HERE.parent)} (Splink {pinned_version()})...")
    try:
        if not splink_python().exists():
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(SPLINK_VENV)],
                capture_output=True,
                check=True,
                timeout=600,
            )
        subprocess.run(
            [str(splink_python()), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
            capture_output=True,
            check=True,
            timeout=1800,
        )
    except subprocess.CalledProcessError as error:
        tail = (error.stderr or b"").decode(errors="replace")[-500:]
        raise SplinkUnavailable(f"could not install Splink in {SPLINK_VENV}: {tail}") from error
    except (OSError, subprocess.SubprocessError) as error:
        raise SplinkUnavailable(f"could not install Splink in {SPLINK_VENV}: {error}") from error
    if not venv_ready():
        raise SplinkUnavailable(f"{SPLINK_VENV} does not hold splink {pinned_version()}")
    return splink_python()


# ------------------------------------------------------------------------------ tables


def _clean_text(values: pd.Series) -> pd.Series:
    text = values.fillna("").str.strip().str.replace(r"\s+", " ", regex=True).str.lower()
    return text.where(text != "")


def _clean_postcode(values: pd.Series) -> pd.Series:
    compact = values.fillna("").str.replace(r"\s+", "", regex=True).str.upper()
    spaced = compact.str[:-3] + " " + compact.str[-3:]
    return spaced.where(compact.str.len() >= 5)


def clean_agency(agency: synthetic.AgencyData) -> pd.DataFrame:
    """One agency's raw records, cleaned as a plaintext pipeline would (module docstring)."""
    raw = pd.DataFrame(list(synthetic.rows(agency)), columns=list(synthetic.COLUMNS), dtype=str)
    profile = agency.profile
    out = pd.DataFrame(index=raw.index)
    for column in ("given_name", "middle_names", "family_name"):
        out[column] = _clean_text(raw[column])
    dates = pd.to_datetime(
        raw["date_of_birth"].str.strip(),
        format=synthetic.DATE_FORMATS[profile.date_format],
        errors="coerce",
    )
    out["date_of_birth"] = dates.dt.strftime("%Y-%m-%d").where(dates.notna())
    male, female = synthetic.SEX_STYLES[profile.sex_style]
    codes = {male.lower(): "m", female.lower(): "f"}
    out["sex"] = raw["sex"].str.strip().str.lower().map(codes)
    out["postcode"] = _clean_postcode(raw["postcode"])
    nhs = raw["nhs_number"].str.replace(r"\s+", "", regex=True)
    out["nhs_number"] = nhs.where(nhs.str.fullmatch(r"\d{10}"))
    return out


def synthetic_tables(data: synthetic.SyntheticData) -> list[pd.DataFrame]:
    """One cleaned table per agency, ``unique_id`` numbering records in ``all_records`` order."""
    tables, start = [], 0
    for agency in data.agencies.values():
        table = clean_agency(agency)
        table.insert(0, "unique_id", np.arange(start, start + len(table)))
        tables.append(table)
        start += len(table)
    return tables


def febrl_tables(frames: Sequence[Any], columns: Sequence[str]) -> list[pd.DataFrame]:
    """FEBRL frames as strings (trimmed, ``""`` missing), numbered in concatenation order."""
    tables, start = [], 0
    for frame in frames:
        table = pd.DataFrame({c: frame[c].astype("string").str.strip().to_numpy() for c in columns})
        table.insert(0, "unique_id", np.arange(start, start + len(table)))
        tables.append(table)
        start += len(table)
    return tables


# ------------------------------------------------------------------------------ run


def predict(
    tables: Sequence[pd.DataFrame],
    *,
    model: str,
    link_type: str,
    seed: int,
    threshold: float = 0.5,
    progress: Progress,
) -> SplinkOutput:
    """Run Splink on ``tables`` in its own environment; see the runner for the model."""
    python = ensure_venv(progress)
    records = sum(len(t) for t in tables)
    progress(f"running Splink ({model} model, {link_type}) on {records:,} records...")
    with tempfile.TemporaryDirectory(prefix="jigsaw-splink-") as folder:
        paths = []
        for k, table in enumerate(tables):
            path = Path(folder, f"table{k}.csv")
            table.to_csv(path, index=False, na_rep="")
            paths.append(str(path))
        output = Path(folder, "pairs.npz")
        config = {
            "model": model,
            "link_type": link_type,
            "tables": paths,
            "threshold": threshold,
            "seed": seed,
            "output": str(output),
        }
        config_path = Path(folder, "config.json")
        config_path.write_text(json.dumps(config), encoding="utf-8")
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [str(python), str(RUNNER), str(config_path)],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
                timeout=7200,
            )
            info: dict[str, Any] = json.loads(done.stdout)
            with np.load(output) as arrays:
                left, right = arrays["left"], arrays["right"]
                probability, cluster = arrays["probability"], arrays["cluster"]
        except subprocess.CalledProcessError as error:
            raise SplinkUnavailable(
                f"the Splink runner failed (exit {error.returncode})"
            ) from error
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as error:
            raise SplinkUnavailable(f"the Splink runner failed: {error}") from error
    if cluster.shape[0] != records or (cluster < 0).any():
        raise SplinkUnavailable("the Splink runner did not label every record")
    return SplinkOutput(
        left.astype(np.int64),
        right.astype(np.int64),
        probability.astype(np.float64),
        cluster.astype(np.int64),
        time.perf_counter() - start,
        info,
    )
