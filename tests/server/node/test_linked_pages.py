"""The node store's list of records known to other agencies, a page at a time
(:meth:`server.node.store.NodeStore.linked_page`, what ``ListLinked`` serves): store order,
page boundaries, no record lost or repeated across pages, the last page; the list closing up
when a linked record is deleted; and the page's query walking an index range, never scanning
or sorting the table (EXPLAIN QUERY PLAN).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.node.store import LinkedRow, NodeStore

RECORDS = 120


def _fields(i: int) -> dict[str, str | None]:
    return {"given_name": f"child{i}", "family_name": "smith", "date_of_birth": "2014-03-02"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    """A store of ``RECORDS`` records, every third one (by store order) linked: one agency
    for even numbers, two for odd ones."""
    with NodeStore(tmp_path / "node.sqlite") as opened:
        opened.upsert_many((f"id-{i:04d}", _fields(i)) for i in range(RECORDS))
        opened.replace_linked("r" * 32, _linked_rows(opened))
        yield opened


def _references(store: NodeStore) -> list[tuple[str, str]]:
    """(local id, reference) of every record, in store order."""
    rows = store._conn.execute("SELECT local_id, reference FROM records ORDER BY rowid")
    return [(str(a), str(b)) for a, b in rows]


def _linked_rows(store: NodeStore) -> list[LinkedRow]:
    agencies = (("police", 1), ("health", 2))
    # given out of store order, as the matcher's pages give them
    return [
        LinkedRow(reference, f"{'r' * 32}-{i}", agencies[: 1 + i % 2])
        for i, (_, reference) in reversed(list(enumerate(_references(store))))
        if i % 3 == 0
    ]


def _walk(store: NodeStore, size: int) -> list[list[LinkedRow]]:
    """Every page of ``size``, each after the position of the previous page's last record
    (as ``ListLinked``'s ``next_page_token``), until an empty page."""
    pages, after = [], 0
    while page := store.linked_page(after, size):
        pages.append(page)
        after += len(page)
    return pages


def _expected(store: NodeStore) -> list[str]:
    return [local_id for i, (local_id, _) in enumerate(_references(store)) if i % 3 == 0]


@pytest.mark.parametrize("size", [1, 7, 25, 40, 1000])
def test_pages_cover_the_list_in_store_order_once(store: NodeStore, size: int) -> None:
    expected = _expected(store)
    assert store.linked_count() == len(expected) == 40
    pages = _walk(store, size)
    assert [row.local_id for page in pages for row in page] == expected  # none lost or repeated
    assert all(len(page) == size for page in pages[:-1])
    assert len(pages[-1]) == len(expected) - size * (len(pages) - 1)  # the last page: the rest
    assert store.linked_page(len(expected), size) == []  # after the last position: nothing


def test_a_page_is_its_positions_whatever_page_came_before(store: NodeStore) -> None:
    # random access: page n is positions (n-1)*size+1 .. n*size, as the console asks for it
    expected = _expected(store)
    for after in (0, 1, 24, 25, 39):
        assert [row.local_id for row in store.linked_page(after, 25)] == expected[after:][:25]


def test_a_row_carries_its_agencies_and_cluster(store: NodeStore) -> None:
    rows = store.linked_page(0, 3)
    references = dict(_references(store))
    assert [row.reference for row in rows] == [references[row.local_id] for row in rows]
    assert [row.agencies for row in rows] == [
        (("police", 1),),
        (("health", 2), ("police", 1)),  # by agency name
        (("police", 1),),
    ]
    assert [row.cluster_id for row in rows] == [f"{'r' * 32}-{i}" for i in (0, 3, 6)]


@pytest.mark.parametrize("published", [False, True], ids=["purged", "marked"])
def test_a_deleted_record_leaves_the_list_which_closes_up(
    store: NodeStore, published: bool
) -> None:
    if published:  # then deleting marks the record for withdrawal; else it is purged
        store._conn.execute("UPDATE records SET published_hash = content_hash")
    expected = _expected(store)
    store.mark_deleted([expected[0], expected[20], "id-0001"])  # two linked, one not
    left = [local_id for local_id in expected if local_id not in (expected[0], expected[20])]
    assert store.linked_count() == len(left)
    for size in (1, 7, 25):
        assert [row.local_id for page in _walk(store, size) for row in page] == left
    assert store.linked_references() == {
        ref for local_id, ref in _references(store) if local_id in left
    }
    # restored, the record waits for the next link to be listed again
    store.upsert_many([(expected[0], _fields(0) | {"given_name": "amy"})])
    assert store.linked_count() == len(left)
    store.replace_linked("s" * 32, _linked_rows(store))
    listed = [row.local_id for page in _walk(store, 25) for row in page]
    live = {
        str(r[0]) for r in store._conn.execute("SELECT local_id FROM records WHERE deleted = 0")
    }
    assert listed == [i for i in _expected(store) if i in live]  # a deleted one is not kept
    assert expected[0] in listed and expected[20] not in listed


def test_an_empty_list(tmp_path: Path) -> None:
    with NodeStore(tmp_path / "node.sqlite") as empty:
        assert empty.linked_count() == 0 and empty.linked_page(0, 25) == []
        empty.upsert_many([("a", _fields(0))])
        assert empty.replace_linked("r" * 32, [LinkedRow("f" * 32, "c", (("police", 1),))]) == 0
        assert empty.linked_count() == 0 and empty.linked_page(0, 25) == []


def test_a_page_and_the_total_read_an_index_range_not_the_table(store: NodeStore) -> None:
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        store.linked_page(25, 10)
        store.linked_count()
    finally:
        store._conn.set_trace_callback(None)
    plans = {sql: _plan(store._conn, sql) for sql in statements}
    assert len(plans) == 3, statements  # the page, its agencies, the total
    for sql, plan in plans.items():
        assert not any(step.startswith("SCAN") for step in plan), (sql, plan)
        assert not any("TEMP B-TREE" in step for step in plan), (sql, plan)
    page, agencies, total = plans.values()
    assert "SEARCH lr USING INTEGER PRIMARY KEY (rowid>?)" in page
    assert any(step.startswith("SEARCH r USING INDEX") for step in page)
    assert any(step.startswith("SEARCH linked USING INDEX") for step in agencies)
    assert any("linked_records" in step for step in total)


def _plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    return [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]


def test_a_page_larger_than_one_query_of_references(tmp_path: Path) -> None:
    # ListLinked allows pages of thousands; their agencies are read a few hundred at a time
    with NodeStore(tmp_path / "node.sqlite") as big:
        big.upsert_many((f"id-{i:05d}", _fields(i)) for i in range(1300))
        rows = [
            LinkedRow(ref, f"c-{i}", (("police", 1),))
            for i, (_, ref) in enumerate(_references(big))
        ]
        assert big.replace_linked("r" * 32, rows) == 1300
        pages = _walk(big, 1200)
        assert [len(page) for page in pages] == [1200, 100]
        assert [row.cluster_id for page in pages for row in page] == [r.cluster_id for r in rows]
