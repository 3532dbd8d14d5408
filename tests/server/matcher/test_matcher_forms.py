"""The matcher treats the forms of a record (:mod:`linkage.forms`) as that one record.

A real matcher on 127.0.0.1 port 0 with mutual TLS and a real SQLite store: Publish (forms
replace the record's own row and back), Match (the record's reference, once), Link (each
cluster member a record, once), Withdraw (the forms go with the record), Status (records,
not rows) and a restart (the form map is rebuilt from the store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from linkage import forms, pipeline
from linkage.encode import EncodedBatch, encode_records
from linkage.index import IndexedCandidate
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from linkage.synthetic import DEFAULT_AGENCIES, generate_population
from proto.jigsaw.v1 import jigsaw_pb2
from server.common.pki import init_pki
from server.common.wire import encoded_to_columns, encoded_to_proto
from server.matcher.records import FormMap, candidates_per_record
from tests.helpers import matcher as matcher_harness

TIMEOUT = 30
SCHEMA = load_schema("child")
KEYS = KeySet(LinkageSecret.for_tests(), 1)
AGENCIES = ("police", "health")

Columns = Mapping[str, Sequence[str | None]]


@dataclass(frozen=True)
class Published:
    """An agency's records as its node publishes them: one row per record or per form."""

    records: list[str]  # the record references, in input order
    batch: EncodedBatch  # one row per published row
    rows: list[str]  # the reference of each row (a form's is derived)
    form_of: list[str]  # per row, "" or the record it is a form of

    def forms_of(self, record: str) -> list[str]:
        return [r for r, of in zip(self.rows, self.form_of, strict=True) if of == record]


def publish_form(agency: str, columns: Columns) -> Published:
    n = len(next(iter(columns.values())))
    records = [hashlib.sha256(f"{agency}:{i}".encode()).hexdigest()[:32] for i in range(n)]
    encoded = forms.encode_forms(SCHEMA, KEYS, columns)
    pairs = list(zip(encoded.origin.tolist(), encoded.form.tolist(), strict=True))
    return Published(
        records=records,
        batch=encoded.batch,
        rows=[forms.form_reference(records[o], f) for o, f in pairs],
        form_of=[records[o] if f != forms.NO_FORM else "" for o, f in pairs],
    )


@dataclass(frozen=True)
class World:
    police: Published
    health: Published
    #: police's row of the child whose health record lacks sex, and that health record
    police_row: int
    twin: str
    police_columns: dict[str, list[str | None]]
    health_columns: dict[str, list[str | None]]


@pytest.fixture(scope="module")
def world() -> World:
    profiles = [p for p in DEFAULT_AGENCIES if p.name in AGENCIES]
    data = generate_population(120, seed=20260417, agencies=profiles)
    police = {f: list(data.agencies["police"].columns[f]) for f in SCHEMA.input_names}
    health = {f: list(data.agencies["health"].columns[f]) for f in SCHEMA.input_names}
    row = next(
        i
        for i in range(len(police["sex"]))
        if police["sex"][i] and police["date_of_birth"][i] and police["given_name"][i]
    )
    for name in SCHEMA.input_names:  # health holds the same child, its sex not recorded
        health[name].append(None if name == "sex" else police[name][row])
    published = publish_form("health", health)
    twin = published.records[-1]
    assert len(published.forms_of(twin)) == forms.max_forms(SCHEMA) == 3
    return World(publish_form("police", police), published, row, twin, police, health)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    init_pki(out, agencies=list(AGENCIES), staff=[], operators=["olga"])
    return out


class Running(matcher_harness.Running):
    """The test matcher, with the calls these tests make."""

    def publish(
        self, agency: str, batch: EncodedBatch, rows: list[str], form_of: list[str]
    ) -> jigsaw_pb2.PublishResponse:
        header = jigsaw_pb2.EncodingHeader(schema_fingerprint=SCHEMA.fingerprint(), key_version=1)
        messages = [
            jigsaw_pb2.PublishRequest(header=header),
            jigsaw_pb2.PublishRequest(columns=encoded_to_columns(batch, rows, form_of)),
        ]
        response: jigsaw_pb2.PublishResponse = self.stub(f"{agency}-node").Publish(
            iter(messages), timeout=TIMEOUT
        )
        return response

    def match(self, query: EncodedBatch) -> list[tuple[str, str]]:
        request = jigsaw_pb2.MatchRequest(
            header=jigsaw_pb2.EncodingHeader(
                schema_fingerprint=SCHEMA.fingerprint(), key_version=1
            ),
            queries=encoded_to_proto(query, ["0" * 32] * len(query)),
            max_candidates=10,
            purpose_code="s47_enquiry",
            on_behalf_of="alice",
        )
        found = self.stub("police-node").Match(request, timeout=TIMEOUT).candidates
        return [(c.agency, c.reference) for c in found]

    def status(self) -> dict[str, int]:
        response = self.stub("olga").Status(jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT)
        counts = {a.agency: a.records for a in response.agencies}
        assert sum(counts.values()) == response.indexed_records
        return counts


@pytest.fixture
def matcher(tmp_path: Path, pki_dir: Path) -> Iterator[Running]:
    running = Running(matcher_harness.matcher_config(tmp_path, pki_dir), pki_dir)
    yield running
    running.stop()


def publish_world(matcher: Running, world: World) -> None:
    for agency, published in (("police", world.police), ("health", world.health)):
        response = matcher.publish(agency, published.batch, published.rows, published.form_of)
        assert response.received == response.inserted == len(published.rows)
        assert response.forms == sum(1 for record in published.form_of if record)


def queries(world: World) -> dict[str, EncodedBatch]:
    """The twin's child as police hold it (sex recorded), and the same with the other sex: a
    node asks once per sex value when it lacks one, and either finds the record's one form
    assuming it (the others contradict the query and are not compared)."""
    row = {name: [values[world.police_row]] for name, values in world.police_columns.items()}
    other = "M" if str(row["sex"][0]).upper().startswith("F") else "F"
    return {
        "as held": world.police.batch.take(
            [world.police.rows.index(world.police.records[world.police_row])]
        ),
        "other sex": encode_records(SCHEMA, KEYS, {**row, "sex": [other]}),
    }


def health_rows_found(found: list[tuple[str, str]], world: World) -> list[str]:
    twin_rows = {world.twin, *world.health.forms_of(world.twin)}
    return [
        reference for agency, reference in found if agency == "health" and reference in twin_rows
    ]


def test_match_names_the_record_once_and_status_counts_records(
    matcher: Running, world: World
) -> None:
    publish_world(matcher, world)
    assert len(world.health.rows) > len(world.health.records)  # some records came as forms
    assert matcher.status() == {
        "police": len(world.police.records),
        "health": len(world.health.records),
    }
    for name, query in queries(world).items():
        found = matcher.match(query)
        assert health_rows_found(found, world) == [world.twin], name
        # no form reference ever leaves the matcher
        form_rows = {r for r, of in zip(world.health.rows, world.health.form_of, strict=True) if of}
        assert not form_rows & {reference for _, reference in found}, name
        assert len(found) == len(set(found)), name


def test_a_lookup_without_sex_is_one_match_naming_each_record_once(
    matcher: Running, world: World
) -> None:
    publish_world(matcher, world)
    values = {name: column[world.police_row] for name, column in world.police_columns.items()}
    rows = forms.encode_query(SCHEMA, KEYS, {**values, "sex": None})
    assert len(rows) == forms.max_forms(SCHEMA)  # one hypothesis per sex value
    found = matcher.match(rows)  # every row in the one call
    assert health_rows_found(found, world) == [world.twin]
    police_record = world.police.records[world.police_row]
    assert found.count(("police", police_record)) == 1
    assert len(found) == len(set(found))


def test_republish_both_ways_withdraw_and_restart(
    tmp_path: Path, pki_dir: Path, world: World
) -> None:
    config = matcher_harness.matcher_config(tmp_path, pki_dir)
    matcher = Running(config, pki_dir)
    try:
        publish_world(matcher, world)
        counts = matcher.status()
        rows = matcher.runtime.store.count()  # rows: a record's forms count each
        # the twin's sex became known: published as itself, its three forms go
        known = dict(world.health_columns, sex=[*world.health_columns["sex"][:-1], "F"])
        itself = encode_records(SCHEMA, KEYS, {k: [v[-1]] for k, v in known.items()})
        response = matcher.publish("health", itself, [world.twin], [""])
        assert (response.inserted, response.replaced) == (1, 0)
        assert matcher.status() == counts
        assert matcher.runtime.store.count() == rows - 2
        held = {r for c in matcher.runtime.store.iter_encodings() for r in c.references}
        assert world.twin in held and not held & set(world.health.forms_of(world.twin))
        assert health_rows_found(matcher.match(queries(world)["as held"]), world) == [world.twin]
        # its sex was erased: published as forms again, its own row goes
        twin_forms = world.health.forms_of(world.twin)
        at = [world.health.rows.index(r) for r in twin_forms]
        matcher.publish("health", world.health.batch.take(at), twin_forms, [world.twin] * 3)
        held = {r for c in matcher.runtime.store.iter_encodings() for r in c.references}
        assert world.twin not in held and set(twin_forms) <= held
        assert matcher.status() == counts
        assert matcher.runtime.store.count() == rows
    finally:
        matcher.stop()
    # a restart rebuilds the form map from the store
    matcher = Running(config, pki_dir)
    try:
        assert matcher.status() == counts
        for name, query in queries(world).items():
            assert health_rows_found(matcher.match(query), world) == [world.twin], name
        withdrawn = matcher.stub("health-node").Withdraw(
            jigsaw_pb2.WithdrawRequest(references=[world.twin]), timeout=TIMEOUT
        )
        assert withdrawn.withdrawn == 1
        assert matcher.status() == {**counts, "health": counts["health"] - 1}
        for name, query in queries(world).items():
            assert health_rows_found(matcher.match(query), world) == [], name
        held = {r for c in matcher.runtime.store.iter_encodings() for r in c.references}
        assert not held & set(twin_forms)
    finally:
        matcher.stop()


def test_link_clusters_name_each_record_once(matcher: Running, world: World) -> None:
    publish_world(matcher, world)
    final = list(matcher.stub("olga").Link(jigsaw_pb2.LinkRequest(), timeout=120))[-1]
    assert final.result_id
    page = matcher.stub("olga").GetLinkResult(
        jigsaw_pb2.GetLinkResultRequest(result_id=final.result_id, page_size=1000),
        timeout=TIMEOUT,
    )
    assert page.total_records == len(world.police.records) + len(world.health.records)
    records = {("police", r) for r in world.police.records} | {
        ("health", r) for r in world.health.records
    }
    members = [(m.agency, m.reference) for c in page.clusters for m in c.members]
    assert set(members) <= records  # records, never forms
    assert len(members) == len(set(members))  # each once
    police_ref = world.police.records[world.police_row]
    twin_cluster = [
        {(m.agency, m.reference) for m in c.members}
        for c in page.clusters
        if ("health", world.twin) in {(m.agency, m.reference) for m in c.members}
    ]
    assert len(twin_cluster) == 1 and ("police", police_ref) in twin_cluster[0]
    for cluster in page.clusters:
        pairs = {tuple(sorted((e.left, e.right))) for e in cluster.edges}
        assert len(pairs) == len(cluster.edges)
        assert all(left != right for left, right in pairs)
    assert np.all([len(c.members) >= 2 for c in page.clusters])


def test_link_clusters_records_not_rows(
    matcher: Running, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Link hands the pipeline each row's record (``record=``), the forms of one record under
    one number: what keeps a record's forms from landing in two clusters (build_clusters
    alone would only hide that by listing the record once per cluster)."""
    seen: list[np.ndarray] = []
    real = pipeline.cluster_datasets

    def spy(*args: object, **kwargs: object) -> pipeline.ClusterResult:
        record = kwargs.get("record")
        assert isinstance(record, np.ndarray)
        seen.append(record)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "cluster_datasets", spy)
    publish_world(matcher, world)
    final = list(matcher.stub("olga").Link(jigsaw_pb2.LinkRequest(), timeout=120))[-1]
    assert final.result_id and len(seen) == 1
    rows = len(world.police.rows) + len(world.health.rows)
    records = len(world.police.records) + len(world.health.records)
    (record,) = seen
    assert record.shape == (rows,) and len(np.unique(record)) == records


def test_candidates_per_record_reports_each_record_once_at_its_best() -> None:
    form_map = FormMap()
    record, other = "a" * 32, "b" * 32
    form_refs = [forms.form_reference(record, i) for i in range(3)]
    form_map.assign("health", form_refs, [record] * 3)

    def candidate(agency: str, reference: str, probability: float) -> IndexedCandidate:
        return IndexedCandidate(agency, reference, probability, (0,), (False,))

    found = [
        candidate("health", form_refs[1], 0.99),
        candidate("police", form_refs[1], 0.98),  # another agency's row: not a form here
        candidate("health", other, 0.97),
        candidate("health", form_refs[0], 0.96),
        candidate("health", form_refs[2], 0.95),
    ]
    kept = candidates_per_record([found], form_map, 10)
    assert [(c.agency, c.reference, c.probability) for c in kept] == [
        ("health", record, 0.99),
        ("police", form_refs[1], 0.98),
        ("health", other, 0.97),
    ]
    assert candidates_per_record([found], form_map, 2) == kept[:2]
    # several query rows (hypotheses about one person): one list, each record at its best
    second_row = [candidate("health", other, 0.995), candidate("school", "c" * 32, 0.5)]
    merged = candidates_per_record([found, second_row], form_map, 10)
    assert [(c.agency, c.reference, c.probability) for c in merged] == [
        ("health", other, 0.995),
        ("health", record, 0.99),
        ("police", form_refs[1], 0.98),
        ("school", "c" * 32, 0.5),
    ]
    assert candidates_per_record([found, second_row], form_map, 1) == merged[:1]
    assert form_map.surplus_rows() == {"health": 2}  # 3 rows, 1 record
    form_map.discard("health", form_refs[:2])
    assert form_map.surplus_rows() == {"health": 0}
    assert form_map.record_of("health", form_refs[2]) == record
    form_map.assign("health", [form_refs[2]], [""])  # now a record itself
    assert form_map.record_of("health", form_refs[2]) == form_refs[2]
    assert len(form_map) == 0
