"""Per-source value maps (``[source.values]`` of a node config): an agency's own codes for
sex, and values that mean "no value" (``UNKNOWN``, a placeholder date), applied at ingest
before normalisation; the config refuses a map of a field the source does not map."""

from __future__ import annotations

from pathlib import Path

import pytest

from linkage.schema import load_schema
from server.common.config import ConfigError
from server.launcher import write_node_config
from server.node.config import load_node_config
from server.node.ingest import ingest_source
from server.node.store import NodeStore

VALUES = """
[source.values]
missing = ["UNKNOWN", "01/01/1900", "n/k"]

[source.values.sex]
"1" = "male"
"2" = "female"
"9" = ""
"""


def config_with(tmp_path: Path, values: str) -> Path:
    path = write_node_config(tmp_path, "police", "127.0.0.1:1")
    text = path.read_text().replace("[disclosure]", values + "\n[disclosure]")
    path.write_text(text)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "police.csv").write_text(
        "PersonRef,Forename,MiddleNames,Surname,DOB,Gender,Postcode,NHSNo\n"
        "p1,Amy,,Smith,01/01/1900,2,unknown,\n"
        "p2,Ben,,Jones,03/04/2014,1,N/K,\n"
        "p3,Cal,,Brown,05/06/2013,9,SW1A 1AA,\n"
    )
    return path


def test_codes_and_missing_values_are_applied_before_normalisation(tmp_path: Path) -> None:
    config = load_node_config(config_with(tmp_path, VALUES))
    with NodeStore(tmp_path / "s.sqlite") as store:
        report = ingest_source(store, config.sources[0], load_schema("child"))
        assert report.rejected_rows == 0
        fields = {
            local_id: store.get_by_reference(ref).fields  # type: ignore[union-attr]
            for ref, local_id in store._conn.execute("SELECT reference, local_id FROM records")
        }
    assert fields["p1"]["sex"] == "f" and fields["p1"]["date_of_birth"] is None
    assert fields["p1"]["postcode"] is None
    assert fields["p2"]["sex"] == "m" and fields["p2"]["postcode"] is None
    assert fields["p3"]["sex"] is None and fields["p3"]["postcode"] == "SW1A 1AA"


def test_a_map_of_an_unmapped_field_is_refused(tmp_path: Path) -> None:
    path = config_with(tmp_path, VALUES + '\n[source.values.shoe_size]\n"1" = "big"\n')
    with pytest.raises(
        ConfigError, match=r"values \(key 3 of the table\): not a field this source maps"
    ):
        load_node_config(path)
