"""server.matcher.links.build_clusters: the stored Link result's edges and their evidence."""

from __future__ import annotations

import numpy as np

from linkage import forms, pipeline, synthetic
from linkage.compare import not_compared
from linkage.encode import concat_batches, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from server.matcher.links import build_clusters
from server.matcher.records import record_numbers

SCHEMA = load_schema("child")


def test_salted_fields_under_other_salts_are_labelled_not_compared() -> None:
    data = synthetic.generate_population(600, seed=21)
    keys = KeySet(LinkageSecret.for_tests())
    datasets = [encode_records(SCHEMA, keys, a.columns) for a in data.agencies.values()]
    result = pipeline.cluster_datasets(SCHEMA, datasets)
    clustered = concat_batches(datasets)
    members = [("agency", f"{i:032x}") for i in range(len(clustered))]
    plain = build_clusters(result, members, 0.5)
    labelled = build_clusters(
        result,
        members,
        0.5,
        schema=SCHEMA,
        present=clustered.field_present,
    )
    assert [c.members for c in plain] == [c.members for c in labelled]
    position = {m: i for i, m in enumerate(members)}
    relabelled = 0
    for before, after in zip(plain, labelled, strict=True):
        for edge_before, edge_after in zip(before.edges, after.edges, strict=True):
            left = position[after.members[edge_after.left]]
            right = position[after.members[edge_after.right]]
            both = clustered.field_present[[left]] & clustered.field_present[[right]]
            levels = pipeline.compare_pairs(
                SCHEMA, clustered, clustered, np.array([left]), np.array([right])
            )
            held_apart = not_compared(SCHEMA, both, levels)[0]
            for f, (label, weight) in enumerate(edge_after.evidence):
                if held_apart[f]:
                    assert (label, weight) == ("not_compared", 0.0)
                    assert edge_before.evidence[f][0] == "missing"
                    relabelled += 1
                else:
                    assert (label, weight) == edge_before.evidence[f]
    assert relabelled > 0  # the population has linked pairs whose birth months differ
    assert np.isclose(
        sum(e.probability for c in plain for e in c.edges),
        sum(e.probability for c in labelled for e in c.edges),
    )


def test_the_forms_of_a_record_are_one_member() -> None:
    data = synthetic.generate_population(400, seed=5)
    keys = KeySet(LinkageSecret.for_tests())
    datasets = []
    members: list[tuple[str, str]] = []
    for name, agency in data.agencies.items():
        columns = {field: list(agency.columns[field]) for field in SCHEMA.input_names}
        columns["sex"] = [None if i % 3 == 0 else s for i, s in enumerate(columns["sex"])]
        published = forms.encode_forms(SCHEMA, keys, columns)
        datasets.append(published.batch)
        members.extend((name, f"{int(origin):032x}") for origin in published.origin)
    record = record_numbers(members)
    assert record is not None  # some rows are forms
    result = pipeline.cluster_datasets(SCHEMA, datasets, record=record)
    clustered = concat_batches(datasets)
    clusters = build_clusters(
        result,
        members,
        0.5,
        schema=SCHEMA,
        present=clustered.field_present,
    )
    with_forms = {m for m in members if members.count(m) > 1}
    held = [m for c in clusters for m in c.members]
    assert len(held) == len(set(held))  # every record in one cluster, once
    assert with_forms & set(held)  # records published as forms did link
    for cluster in clusters:
        assert len(cluster.members) >= 2 and list(cluster.members) == sorted(cluster.members)
        pairs = [tuple(sorted((e.left, e.right))) for e in cluster.edges]
        assert len(pairs) == len(set(pairs))  # at most one edge between two records
        assert all(left != right for left, right in pairs)
        assert all(max(pair) < len(cluster.members) for pair in pairs)


def test_record_numbers() -> None:
    assert record_numbers([("a", "1"), ("b", "1"), ("a", "2")]) is None
    numbers = record_numbers([("a", "1"), ("a", "2"), ("a", "1"), ("b", "1")])
    assert numbers is not None and numbers.tolist() == [0, 1, 0, 2]
