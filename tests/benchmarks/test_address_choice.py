"""The address benchmark (benchmarks/address_choice.py): its variant schema and a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import address_choice
from linkage import pipeline
from linkage.encode import encode_records
from linkage.forms import encode_forms
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, default_child_schema, parse_schema
from linkage.synthetic import ADDRESS_COLUMN, PROFILES, generate_population


def test_the_variant_adds_the_address_salted_as_the_postcode() -> None:
    shipped, variant = default_child_schema(), address_choice.with_address()
    assert variant.input_names == (*shipped.input_names, ADDRESS_COLUMN)
    address, postcode = variant.field(ADDRESS_COLUMN), variant.field("postcode")
    assert address.kind == "text" and address.tokeniser == "qgram"
    assert address.salt == postcode.salt == "date_of_birth.value"
    assert address.hardening == postcode.hardening
    assert address.record_hashes_per_token == 0  # optional: the record filter is unchanged
    assert list(address.levels) == sorted(address.levels, reverse=True)
    assert (ADDRESS_COLUMN, "filter") in [part for rule in variant.blocking for part in rule.parts]
    assert variant.fingerprint() != shipped.fingerprint()
    assert parse_schema(variant.to_toml()) == variant
    # the shipped schema itself is not changed by building the variant
    assert ADDRESS_COLUMN not in default_child_schema().input_names


def test_records_without_an_address_still_link_under_the_variant() -> None:
    variant = address_choice.with_address()
    data = generate_population(1500, seed=3, agencies=PROFILES["typical"], addresses=True)
    unmapped = address_choice.without_address(data, "police")
    assert all(value is None for value in unmapped.agencies["police"].columns[ADDRESS_COLUMN])
    assert unmapped.agencies["health"].columns == data.agencies["health"].columns
    keys = KeySet(LinkageSecret.for_tests())
    truth = np.concatenate([a.child_id for a in unmapped.agencies.values()])

    def police_linked(schema: Schema) -> float:
        """Share of police records clustered with another agency's record of their child."""
        published = [encode_forms(schema, keys, a.columns) for a in unmapped.agencies.values()]
        result = pipeline.cluster_forms(schema, published)
        police = result.source == list(unmapped.agencies).index("police")
        assert police.any()
        linked = [
            bool(np.any((result.labels == result.labels[i]) & ~police & (truth == truth[i])))
            for i in np.flatnonzero(police).tolist()
        ]
        return float(np.mean(linked))

    # (1 500 children: at a few hundred the EM of either schema is too noisy to compare)
    assert police_linked(variant) >= police_linked(default_child_schema()) - 0.01
    # the record filters do not depend on the address
    shipped = encode_records(default_child_schema(), keys, data.agencies["health"].columns)
    with_address = encode_records(variant, keys, data.agencies["health"].columns)
    assert np.array_equal(shipped.record_filters, with_address.record_filters)


def test_a_tiny_run_reports_every_variant_and_attack(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    written: dict[str, str] = {}
    monkeypatch.setattr(
        "benchmarks.report.write_section", lambda name, body: written.update({name: body})
    )
    address_choice.main(["--children", "300", "--records", "300", "--overlaps", "1.0", "--report"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    quality = [row for row in rows if "schema" in row]
    assert [(row["profile"], row["schema"]) for row in quality] == [
        (profile, name) for profile in ("typical", "hard") for name in address_choice.VARIANTS
    ]
    for row in quality:
        assert set(row) == set(address_choice.QUALITY_COLUMNS)
        for figure in ("precision", "recall", "f1", "pair_completeness", "dup_f1"):
            assert 0.0 <= row[figure] <= 1.0
    attacks = [row for row in rows if "attacked" in row]
    assert len(attacks) == 3 + 2
    assert all(0.0 <= row["reidentified"] <= 1.0 for row in attacks)
    (body,) = written.values()
    assert "## Address as a child field" in body and "shipped + address" in body
    assert "python -m benchmarks.address_choice --children 300" in body
