"""Peer measurement: Splink (unsupervised, DuckDB backend) as the plaintext ceiling.

Runs inside the separate virtualenv benchmarks/.splink-venv (pinned in
benchmarks/splink-requirements.txt), never in Jigsaw's own environment, and never imports
``linkage``; it is started by ``benchmarks.splink_peer.predict`` as
``python benchmarks/splink_runner.py CONFIG.json``. CONFIG.json holds exactly these keys:

* ``model``: ``"child"`` (the four-agency columns, cleaned) or ``"febrl"`` (FEBRL columns);
* ``link_type``: ``"link_only"``, ``"dedupe_only"`` or ``"link_and_dedupe"``;
* ``tables``: CSV paths, one per source dataset, every column a string, ``""`` for missing;
  each has ``unique_id`` (an integer, unique over all tables) and the model's columns;
* ``threshold``: the match probability at which pairs are clustered (0.5);
* ``seed``: the seed of the random sample that estimates u;
* ``output``: where to write an ``.npz`` with ``left``, ``right`` (unique ids) and
  ``probability`` of every blocked pair, and ``cluster`` (a label per ``unique_id``, clusters
  at ``threshold`` over ``link_type``'s pairs).

The model is configured as Splink's own person-data examples do (docs/demos/examples/duckdb:
deduplicate_50k_synthetic, febrl3, febrl4): predictions blocked on several rules so that an
error in one field does not hide a pair; names with exact (term-frequency adjusted) and
Jaro-Winkler levels; dates with exact, Damerau-Levenshtein and date-difference levels; u by
random sampling; the prior from deterministic rules at an assumed recall; m by EM on two
blocking rules, each comparison trained in the session whose rule does not block on it. The
child model adds levels a careful analyst would add for children's records: day and month
transposed, a given name found among the other record's middle names, a family name sharing a
part with the other's (double-barrelled names).

Output: one JSON object on stdout (``splink_version``, ``seconds``, ``candidate_pairs``,
``probability_two_random_records_match``, ``em_sessions``); stage lines go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

CONFIG_KEYS = frozenset({"model", "link_type", "tables", "threshold", "seed", "output"})
LINK_TYPES = ("link_only", "dedupe_only", "link_and_dedupe")
U_SAMPLE_PAIRS = 5e6


def say(message: str) -> None:
    print(f"  splink: {message}", file=sys.stderr, flush=True)


def read_config(path: str) -> dict[str, Any]:
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    problems = []
    if not isinstance(config, dict):
        sys.exit("config must be a JSON object")
    if unknown := sorted(set(config) - CONFIG_KEYS):
        problems.append(f"unknown keys {unknown}")
    if missing := sorted(CONFIG_KEYS - set(config)):
        problems.append(f"missing keys {missing}")
    if config.get("model") not in ("child", "febrl"):
        problems.append("model must be 'child' or 'febrl'")
    if config.get("link_type") not in LINK_TYPES:
        problems.append(f"link_type must be one of {LINK_TYPES}")
    if problems:
        sys.exit("bad config: " + "; ".join(problems))
    return config


# ------------------------------------------------------------------------------ child model


def _name_comparison(column: str, extra: Any) -> Any:
    """A name: exact (with term frequencies), Jaro-Winkler 0.92, ``extra``, 0.88, 0.7, else."""
    return cl.CustomComparison(
        output_column_name=column,
        comparison_levels=[
            cll.NullLevel(column),
            cll.ExactMatchLevel(column, term_frequency_adjustments=True),
            cll.JaroWinklerLevel(column, 0.92),
            extra,
            cll.JaroWinklerLevel(column, 0.88),
            cll.JaroWinklerLevel(column, 0.7),
            cll.ElseLevel(),
        ],
    )


def child_settings(link_type: str) -> SettingsCreator:
    date_transposed = cll.CustomLevel(
        "substr(date_of_birth_l, 1, 4) = substr(date_of_birth_r, 1, 4)"
        " AND substr(date_of_birth_l, 6, 2) = substr(date_of_birth_r, 9, 2)"
        " AND substr(date_of_birth_l, 9, 2) = substr(date_of_birth_r, 6, 2)",
        label_for_charts="Day and month transposed",
    )
    date_of_birth = cl.CustomComparison(
        output_column_name="date_of_birth",
        comparison_levels=[
            cll.NullLevel("date_of_birth"),
            cll.ExactMatchLevel("date_of_birth"),
            date_transposed,
            cll.DamerauLevenshteinLevel("date_of_birth", 1),
            cll.AbsoluteDateDifferenceLevel(
                "date_of_birth", input_is_string=True, threshold=1, metric="month"
            ),
            cll.AbsoluteDateDifferenceLevel(
                "date_of_birth", input_is_string=True, threshold=1, metric="year"
            ),
            cll.ElseLevel(),
        ],
    )
    given_in_middle = cll.CustomLevel(
        "list_contains(string_split(middle_names_r, ' '), given_name_l)"
        " OR list_contains(string_split(middle_names_l, ' '), given_name_r)",
        label_for_charts="Given name among the other's middle names",
    )
    given_name = _name_comparison("given_name", given_in_middle)
    family_part = cll.CustomLevel(
        "list_has_any(regexp_split_to_array(family_name_l, '[- ]'),"
        " regexp_split_to_array(family_name_r, '[- ]'))",
        label_for_charts="Family names share a part",
    )
    family_name = _name_comparison("family_name", family_part)
    return SettingsCreator(
        link_type=link_type,
        blocking_rules_to_generate_predictions=[
            block_on("nhs_number"),
            block_on("date_of_birth"),
            block_on("given_name", "family_name"),
            "l.given_name = r.family_name AND l.family_name = r.given_name",
            block_on("family_name", "substr(date_of_birth, 1, 4)"),
            block_on("given_name", "substr(date_of_birth, 1, 4)"),
            block_on("postcode", "substr(given_name, 1, 1)"),
            block_on("postcode", "substr(family_name, 1, 1)"),
            block_on("substr(given_name, 1, 2)", "substr(family_name, 1, 2)", "sex"),
        ],
        comparisons=[
            given_name,
            family_name,
            cl.NameComparison("middle_names", jaro_winkler_thresholds=[0.88]),
            date_of_birth,
            cl.PostcodeComparison("postcode"),
            cl.ExactMatch("nhs_number"),
            cl.ExactMatch("sex"),
        ],
        retain_intermediate_calculation_columns=False,
    )


def train_child(linker: Linker, seed: int) -> list[str]:
    linker.training.estimate_probability_two_random_records_match(
        [block_on("nhs_number"), block_on("given_name", "family_name", "date_of_birth")],
        recall=0.8,
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=seed)
    # Each EM session leaves out the comparisons its rule blocks on; together they train all.
    rules = [block_on("date_of_birth"), block_on("given_name", "family_name")]
    return em(linker, rules)


# ------------------------------------------------------------------------------ FEBRL model


def febrl_settings(link_type: str) -> SettingsCreator:
    return SettingsCreator(
        link_type=link_type,
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            "l.given_name = r.surname AND l.surname = r.given_name",
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("state", "address_1"),
            block_on("street_number", "address_1"),
            block_on("postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth",
                input_is_string=True,
                datetime_format="%Y%m%d",
                invalid_dates_as_null=True,
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(
                term_frequency_adjustments=True
            ),
        ],
        retain_intermediate_calculation_columns=False,
    )


def train_febrl(linker: Linker, seed: int) -> list[str]:
    linker.training.estimate_probability_two_random_records_match(
        [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")],
        recall=0.8,
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=seed)
    return em(linker, [block_on("date_of_birth"), block_on("postcode")])


# ------------------------------------------------------------------------------ driver


def em(linker: Linker, rules: list[Any]) -> list[str]:
    sessions = []
    for rule in rules:
        sql = rule.get_blocking_rule("duckdb").blocking_rule_sql
        say(f"EM on {sql}")
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule, estimate_without_term_frequencies=True
        )
        sessions.append(sql)
    return sessions


def read_table(path: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    frame["unique_id"] = frame["unique_id"].astype(np.int64)
    return frame


def main() -> None:
    config = read_config(sys.argv[1])
    logging.basicConfig(level=logging.WARNING, format="  splink: %(message)s")
    start = time.perf_counter()
    tables = [read_table(path) for path in config["tables"]]
    link_type = config["link_type"]
    if config["model"] == "child":
        settings, train = child_settings(link_type), train_child
    else:
        settings, train = febrl_settings(link_type), train_febrl
    data = tables if len(tables) > 1 else tables[0]
    linker = Linker(data, settings, db_api=DuckDBAPI(), set_up_basic_logging=False)
    say("estimating the prior, u (random sampling) and m (EM)")
    sessions = train(linker, int(config["seed"]))
    say("predicting every blocked pair")
    predictions = linker.inference.predict()
    pairs = predictions.as_pandas_dataframe()
    say(f"clustering {len(pairs):,} pairs at p >= {config['threshold']}")
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=float(config["threshold"])
    ).as_pandas_dataframe()
    seconds = time.perf_counter() - start
    cluster_of = dict(zip(clusters["unique_id"], clusters["cluster_id"], strict=True))
    ids = np.concatenate([t["unique_id"].to_numpy(dtype=np.int64) for t in tables])
    codes = pd.factorize(pd.Series([cluster_of[i] for i in ids.tolist()]))[0]
    label = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=np.int64)
    label[ids] = codes
    np.savez(
        config["output"],
        left=pairs["unique_id_l"].to_numpy(dtype=np.int64),
        right=pairs["unique_id_r"].to_numpy(dtype=np.int64),
        probability=pairs["match_probability"].to_numpy(dtype=np.float64),
        cluster=label,
    )
    json.dump(
        {
            "splink_version": version("splink"),
            "seconds": seconds,
            "candidate_pairs": len(pairs),
            "probability_two_random_records_match": (
                linker._settings_obj._probability_two_random_records_match
            ),
            "em_sessions": sessions,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
