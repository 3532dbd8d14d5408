"""The PII canary: an identifier pushed through every reachable failure path never comes out.

A distinctive canary value ("Zqxcanary-2014-03-02", and identifier-shaped variants) is fed to
normalisers, the encoder, the schema parser, secret parsing, index/filter validation and the
scoring and solving entry points, each time in a way that makes the library reject it. The
test then asserts that the canary appears (case-insensitively) in no exception message or
repr (including chained causes and error attributes), no log record at any level, and no
warning. An identifier in an error, a log line or a warning is a data breach (STYLE.md).

A path found to leak is kept as a strict xfail with the leak named (none today): it fails
loudly when the library is fixed, so that its marker is then removed.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from linkage import index, normalise, scoring, solve
from linkage.encode import encode_records, validate_filters
from linkage.errors import JigsawError
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema, parse_schema, schema_from_dict

CANARY = "Zqxcanary-2014-03-02"
NEEDLE = "zqxcanary"
CHILD = load_schema("child")


def _texts_of_exception(error: BaseException) -> list[str]:
    """str and repr of the error, its attributes, and every cause/context a traceback shows.

    A context hidden with ``raise ... from None`` is not followed, as a printed or logged
    traceback does not show it either.
    """
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [repr(v) for v in vars(current).values()] if hasattr(current, "__dict__") else []
        texts += list(getattr(current, "__notes__", []))
        hidden = current.__suppress_context__ and current.__cause__ is None
        current = current.__cause__ or (None if hidden else current.__context__)
    return texts


def run_and_check(
    action: Callable[[], object],
    needles: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
    *,
    must_raise: bool = True,
) -> object:
    """Run ``action``; assert no needle appears in its error, the logs or any warning."""
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    result: object = None
    raised = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = action()
        except Exception as error:  # every failure path, whatever its type
            raised = True
            texts += _texts_of_exception(error)
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), str(record.msg)]
        if record.exc_info and record.exc_info[1] is not None:
            texts += _texts_of_exception(record.exc_info[1])
    texts += [str(w.message) for w in caught]
    if must_raise:
        assert raised, "the action was expected to fail"
    for needle in needles:
        leaked = [t for t in texts if needle.lower() in t.lower()]
        assert not leaked, f"canary {needle!r} leaked: {leaked[:3]}"
    return result


def _canary_check_works(caplog: pytest.LogCaptureFixture) -> None:
    """The checker itself must catch a leak in a message, a log record and a warning."""

    def leaky_error() -> None:
        raise ValueError(f"bad value {CANARY}")

    def leaky_log() -> None:
        logging.getLogger("linkage.test").debug("value %s", CANARY.upper())

    def leaky_warning() -> None:
        warnings.warn(f"odd {CANARY}", UserWarning, stacklevel=1)

    for action, must_raise in ((leaky_error, True), (leaky_log, False), (leaky_warning, False)):
        with pytest.raises(AssertionError, match="leaked"):
            run_and_check(action, (NEEDLE,), caplog, must_raise=must_raise)


def test_the_checker_detects_leaks(caplog: pytest.LogCaptureFixture) -> None:
    _canary_check_works(caplog)


# ---------------------------------------------------------------------------------------------
# normalisers

NORMALISER_CASES: list[tuple[str, str]] = [
    ("date", CANARY),
    ("date", "31/02/2014"),
    ("date", "02/03/14"),
    ("date", "1066-10-14"),
    ("postcode", CANARY),
    ("postcode", "ZQX CAN4RY9"),
    ("nhs_number", CANARY),
    ("nhs_number", "943 476 5918"),
    ("nhs_number", "4444444444"),
    ("sex", CANARY),
]


@pytest.mark.parametrize(("kind", "raw"), NORMALISER_CASES)
def test_normaliser_errors_do_not_carry_the_value(
    kind: str, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    normaliser = normalise.NORMALISERS[kind]
    run_and_check(lambda: normaliser(raw, field="canary_field"), (raw, NEEDLE), caplog)


@pytest.mark.parametrize("kind", sorted(normalise.NORMALISERS))
def test_normalisers_accepting_the_canary_log_nothing_about_it(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(
        lambda: normalise.NORMALISERS[kind](CANARY, field="f"), (NEEDLE,), caplog, must_raise=False
    )


def test_normaliser_given_a_non_string_names_only_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_and_check(
        lambda: normalise.normalise_name(CANARY.encode(), field="f"),  # type: ignore[arg-type]
        (NEEDLE, "b'z"),
        caplog,
    )


# ---------------------------------------------------------------------------------------------
# encoder


def test_encode_records_with_invalid_values_reports_no_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = {
        "given_name": CANARY,
        "middle_names": CANARY,
        "family_name": CANARY,
        "date_of_birth": CANARY,
        "sex": CANARY,
        "postcode": CANARY,
        "nhs_number": "943 476 5918",
    }
    columns = {f: [raw[f], None, raw[f]] for f in CHILD.input_names}
    keys = KeySet(LinkageSecret.for_tests())
    batch = run_and_check(
        lambda: encode_records(CHILD, keys, columns),
        (NEEDLE, "9434765918", "943 476 5918"),
        caplog,
        must_raise=False,
    )
    problems = batch.problems  # type: ignore[attr-defined]
    assert {p.field for p in problems} == {"date_of_birth", "sex", "postcode", "nhs_number"}
    text = repr(problems) + repr(batch)
    assert NEEDLE not in text.lower() and "9434765918" not in text


def test_encode_records_with_a_canary_column_name(caplog: pytest.LogCaptureFixture) -> None:
    keys = KeySet(LinkageSecret.for_tests())
    run_and_check(lambda: encode_records(CHILD, keys, {CANARY: [CANARY]}), (NEEDLE,), caplog)


def test_encode_records_with_ragged_columns(caplog: pytest.LogCaptureFixture) -> None:
    columns: dict[str, list[str | None]] = {f: [CANARY] for f in CHILD.input_names}
    columns["sex"] = [CANARY, CANARY]
    keys = KeySet(LinkageSecret.for_tests())
    run_and_check(lambda: encode_records(CHILD, keys, columns), (NEEDLE,), caplog)


# ---------------------------------------------------------------------------------------------
# schema parsing


def _schema_mutation(path: tuple[Any, ...], value: Any) -> Callable[[], object]:
    data = CHILD.to_dict()
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return lambda: schema_from_dict(copy.deepcopy(data))


SCHEMA_CASES = [
    pytest.param(("schema", "version"), CANARY, id="schema.version"),
    pytest.param(("schema", "record_filter_bits"), CANARY, id="schema.record_filter_bits"),
    pytest.param(("schema", "day_first"), CANARY, id="schema.day_first"),
    pytest.param(("hardening", "blip_epsilon"), CANARY, id="hardening.blip_epsilon"),
    pytest.param(("hardening", "balance"), CANARY, id="hardening.balance"),
    pytest.param(("field", 0, "kind"), CANARY, id="field.kind"),
    pytest.param(("field", 0, "tokeniser"), CANARY, id="field.tokeniser"),
    pytest.param(("field", 0, "q"), CANARY, id="field.q"),
    pytest.param(("field", 0, "padded"), CANARY, id="field.padded"),
    pytest.param(("field", 0, "filter_bits"), CANARY, id="field.filter_bits"),
    pytest.param(("field", 0, "hashes_per_token"), CANARY, id="field.hashes_per_token"),
    pytest.param(("field", 0, "phonetic"), [CANARY], id="field.phonetic"),
    pytest.param(("field", 0, "phonetic"), CANARY, id="field.phonetic-not-list"),
    pytest.param(("field", 0, "levels"), [CANARY], id="field.levels"),
    pytest.param(("field", 0, "salt"), CANARY, id="field.salt-shape"),
    pytest.param(("field", 0, "name"), 20140302, id="field.name-not-string"),
    pytest.param(("blocking", 0, "parts"), [CANARY], id="blocking.parts-shape"),
    pytest.param(("blocking", 0, "parts"), CANARY, id="blocking.parts-not-list"),
    pytest.param(("blocking", 0, "name"), ["x", CANARY], id="blocking.name-not-string"),
    pytest.param(("field", 1, "name"), CANARY, id="field.name-invalid"),
    pytest.param(("field", 0, "salt"), "family_name." + CANARY, id="field.salt-transform"),
    pytest.param(("field", 0, "salt"), CANARY.replace("-", "_") + ".value", id="field.salt-field"),
    pytest.param(
        ("blocking", 0, "parts"), ["family_name." + CANARY], id="blocking.parts-transform"
    ),
    pytest.param(
        ("blocking", 0, "parts"), [CANARY.replace("-", "_") + ".value"], id="blocking.parts-field"
    ),
    pytest.param(("blocking", 0, "name"), CANARY + "/x", id="blocking.name"),
    pytest.param(("field", 0, CANARY), 1, id="unknown-key"),
    pytest.param((CANARY,), 1, id="unknown-key-top"),
    pytest.param(("schema", CANARY), 1, id="unknown-key-schema"),
    pytest.param(("hardening", CANARY), 1, id="unknown-key-hardening"),
    pytest.param(("blocking", 0, CANARY), 1, id="unknown-key-blocking"),
    pytest.param(("field", 0, 20140302), 1, id="unknown-key-not-string"),
    pytest.param(("field", 0, "nhs_numbr"[:4] + CANARY), 1, id="unknown-key-near-a-key"),
    pytest.param(("field", 0, "salt"), "given_nam" + "." + CANARY, id="salt-near-a-field"),
    pytest.param(("blocking", 0, "parts"), ["family_name.soundex" + CANARY], id="parts-near"),
]


def _rename_and_refer(new_name: str) -> Callable[[], object]:
    """Rename a field to an invalid or duplicate name and refer to it from a salt and a rule."""
    data = CHILD.to_dict()
    data["field"][1]["name"] = new_name
    data["field"][0]["salt"] = new_name + ".value"
    data["blocking"][0]["parts"] = [new_name + ".value"]
    data["blocking"][1]["name"] = data["blocking"][2]["name"] = new_name
    return lambda: schema_from_dict(copy.deepcopy(data))


@pytest.mark.parametrize(
    "new_name", [CANARY, CANARY.replace("-", "_") + " x"], ids=["with-hyphens", "with-space"]
)
def test_references_to_a_rejected_field_name_do_not_carry_it(
    new_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(_rename_and_refer(new_name), (NEEDLE,), caplog)


@pytest.mark.parametrize(("path", "value"), SCHEMA_CASES)
def test_schema_errors_do_not_carry_the_value(
    path: tuple[Any, ...], value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(_schema_mutation(path, value), (NEEDLE, "20140302"), caplog)


@pytest.mark.parametrize(
    "text",
    [
        f"[schema]\nname = {CANARY}\n",
        f'[schema]\nname = "{CANARY}\n',
        f"[schema]\n{CANARY} = = 1\n",
        f'[[field]]\nname = "a"\nkind = "name"\nlevels = [{CANARY}]\n',
        f"[{CANARY}]\n[{CANARY}]\n",
        f"x = {{{CANARY} = 1, {CANARY} = 2}}\n",
        f"{CANARY} = [1]\n{CANARY}.x = 2\n",
        f"{CANARY} = 1\n[{CANARY}.x]\n",
        f"[[{CANARY}]]\n[{CANARY}]\n",
        f"x = '{CANARY}\x01'\n",
        f"# {CANARY}\x01\n",
    ],
    ids=[
        "bare-value",
        "unterminated-string",
        "bad-key-line",
        "bad-array",
        "table-declared-twice",
        "inline-duplicate-key",
        "extend-static-array",
        "redefine-value-as-table",
        "array-then-table",
        "control-char-in-literal-string",
        "control-char-in-comment",
    ],
)
def test_invalid_toml_errors_do_not_carry_the_value(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(lambda: parse_schema(text), (NEEDLE,), caplog)


def test_unknown_shipped_schema_name(caplog: pytest.LogCaptureFixture) -> None:
    run_and_check(lambda: load_schema(CANARY), (NEEDLE,), caplog)


# ---------------------------------------------------------------------------------------------
# secrets, references and filters


@pytest.mark.parametrize(
    "action",
    [
        lambda: LinkageSecret.from_hex(CANARY),
        lambda: LinkageSecret.from_hex(CANARY * 4),
        lambda: LinkageSecret(CANARY.encode()),
        lambda: LinkageSecret(CANARY),  # type: ignore[arg-type]
    ],
    ids=["from_hex", "from_hex-long", "bytes-too-short", "not-bytes"],
)
def test_secret_errors_do_not_carry_the_input(
    action: Callable[[], object], caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(action, (NEEDLE,), caplog)


@pytest.mark.parametrize(
    "reference",
    [CANARY, (CANARY + "0" * 32)[:32], CANARY.lower() * 2],
    ids=["short", "32-chars", "long"],
)
def test_reference_errors_do_not_carry_the_reference(
    reference: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(lambda: index.reference_to_bytes(reference), (NEEDLE,), caplog)


def test_index_upsert_with_canary_references(caplog: pytest.LogCaptureFixture) -> None:
    keys = KeySet(LinkageSecret.for_tests())
    batch = encode_records(CHILD, keys, {f: [None] for f in CHILD.input_names})
    match_index = index.MatchIndex(CHILD, key_version=1)
    run_and_check(lambda: match_index.upsert("police", [CANARY], batch), (NEEDLE,), caplog)
    run_and_check(lambda: match_index.upsert("police", [CANARY, CANARY], batch), (NEEDLE,), caplog)


@pytest.mark.parametrize(
    "filters",
    [
        np.array([[CANARY]]),
        np.array([CANARY.encode()]),
        np.array([[CANARY, CANARY]], dtype=object),
    ],
    ids=["str-array", "bytes-array", "object-array"],
)
def test_validate_filters_does_not_echo_array_contents(
    filters: np.ndarray[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(lambda: validate_filters("filters", filters, 1, 2), (NEEDLE,), caplog)


# ---------------------------------------------------------------------------------------------
# scoring and solving


def _model_kwargs(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "field_names": ("given_name",),
        "thresholds": ((0.9,),),
        "m": ((0.1, 0.9),),
        "u": ((0.9, 0.1),),
        "prior": 0.01,
    }
    base.update(overrides)
    return base


SCORING_CASES = [
    pytest.param(
        lambda: scoring.FellegiSunterModel(
            **_model_kwargs(
                field_names=(CANARY, CANARY),
                thresholds=((0.9,), (0.9,)),
                m=((0.1, 0.9),) * 2,
                u=((0.9, 0.1),) * 2,
            )
        ),
        id="model-duplicate-names",
    ),
    pytest.param(lambda: scoring.FellegiSunterModel(**_model_kwargs(prior=2.0)), id="model-prior"),
    pytest.param(
        lambda: scoring.FellegiSunterModel.from_dict({"format": CANARY}), id="from_dict-format"
    ),
    pytest.param(
        lambda: scoring.FellegiSunterModel.from_dict(
            dict(scoring.FellegiSunterModel(**_model_kwargs()).to_dict(), format=CANARY)
        ),
        id="from_dict-bad-format-value",
    ),
    pytest.param(
        lambda: scoring.FellegiSunterModel.from_dict(
            dict(scoring.FellegiSunterModel(**_model_kwargs()).to_dict(), m=[[CANARY, 0.5]])
        ),
        id="from_dict-m-value",
    ),
    pytest.param(
        lambda: scoring.comparison_levels(np.array([[0.5]]), np.array([[CANARY]]), [[0.5]]),
        id="levels-mask",
    ),
    pytest.param(
        lambda: solve.rank_candidates(np.array([CANARY]), np.array([0.5])), id="rank-indices"
    ),
    pytest.param(lambda: solve.pairs_from_labels(np.array([[CANARY]])), id="labels-2d"),
    pytest.param(
        lambda: solve.cluster_records(
            2,
            np.array([0]),
            np.array([1]),
            np.array([0.9]),
            threshold=0.5,
            source=np.array([CANARY]),
            one_per_source=True,
        ),
        id="cluster-source",
    ),
    pytest.param(
        lambda: scoring.FellegiSunterModel.from_dict({CANARY: 1}), id="from_dict-unknown-key"
    ),
    pytest.param(
        lambda: scoring.FellegiSunterModel.from_dict(
            dict(scoring.FellegiSunterModel(**_model_kwargs()).to_dict(), **{CANARY: 1, "pri": 2})
        ),
        id="from_dict-unknown-keys-beside-a-valid-model",
    ),
    pytest.param(
        lambda: scoring.FellegiSunterModel.from_dict({20140302: 1, ("x", CANARY): 2}),  # type: ignore[dict-item]
        id="from_dict-non-string-keys",
    ),
    pytest.param(
        lambda: scoring.FellegiSunterModel.from_dict(
            dict(scoring.FellegiSunterModel(**_model_kwargs()).to_dict(), version=[CANARY])
        ),
        id="from_dict-version-value",
    ),
    pytest.param(
        lambda: scoring.FellegiSunterModel(**_model_kwargs(thresholds=((CANARY,),))),
        id="model-threshold-string",
    ),
    pytest.param(
        lambda: scoring.comparison_levels(np.array([[CANARY]]), np.array([[True]]), [[0.5]]),
        id="levels-similarity-string",
    ),
    pytest.param(
        lambda: solve.rank_candidates(np.array([0]), np.array([CANARY])),
        id="rank-probability-string",
    ),
    pytest.param(
        lambda: solve.one_to_one(np.array([0]), np.array([1]), np.array([CANARY]), threshold=0.5),
        id="one_to_one-score-string",
    ),
]


@pytest.mark.parametrize("action", SCORING_CASES)
def test_scoring_and_solving_errors_do_not_carry_the_value(
    action: Callable[[], object], caplog: pytest.LogCaptureFixture
) -> None:
    run_and_check(action, (NEEDLE,), caplog)


def test_errors_raised_on_purpose_are_jigsaw_errors() -> None:
    """The library's own failure paths raise its own tree (not a bare ValueError)."""
    for action in (
        lambda: normalise.normalise_date(CANARY, field="f"),
        lambda: LinkageSecret.from_hex(CANARY),
        lambda: index.reference_to_bytes(CANARY),
        lambda: schema_from_dict({"schema": CANARY}),
        lambda: solve.rank_candidates(np.array([CANARY]), np.array([0.5])),
    ):
        with pytest.raises(JigsawError):
            action()
