"""My activity a page at a time: the activity file's pages (:meth:`server.console.activity.
ActivityLog.page`: newest first, boundaries, none lost or repeated, the last page, one
person's entries only, an index range and no sort in its query plan) and the page itself
(25 entries, "Older entries" to the next page by entry number, nothing else in the URL,
``no-store``; a number that is no entry is the newest page).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.console.activity import PAGE_SIZE, Activity, ActivityLog
from server.console.state import Console
from tests.helpers.console import Browser, console_pki, stub_console

START = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)


def _entry(n: int) -> Activity:
    """Entry ``n``: its number in the minutes of its time, its purpose by parity."""
    purpose = "s47_enquiry" if n % 2 else "strategy_discussion"
    return Activity(START + datetime.timedelta(minutes=n), "lookup", purpose, "ok", ("police",))


@pytest.fixture
def log(tmp_path: Path) -> Iterator[ActivityLog]:
    opened = ActivityLog(tmp_path / "activity.sqlite")
    for n in range(60):  # alice's 0..59, interleaved with bob's
        opened.add("alice", _entry(n))
        opened.add("bob", _entry(1000 + n))
    yield opened
    opened.close()


def _minutes(entries: list[Activity]) -> list[int]:
    return [int((e.at - START).total_seconds() // 60) for e in entries]


@pytest.mark.parametrize("size", [1, 7, 25, 60, 100])
def test_pages_are_one_persons_entries_newest_first_once(log: ActivityLog, size: int) -> None:
    pages, before = [], 0
    while True:
        page = log.page("alice", before, size)
        pages.append(_minutes(page.entries))
        if not page.older:
            break
        before = page.older
    assert [n for page in pages for n in page] == list(range(59, -1, -1))  # none lost, none twice
    assert all(len(page) == size for page in pages[:-1])
    assert 0 < len(pages[-1]) <= size  # the last page: the rest, and no older page
    assert log.page("nobody").entries == [] and log.page("nobody").older == 0


def test_the_latest_entries_come_first_as_they_are_added(log: ActivityLog) -> None:
    assert _minutes(log.page("alice", 0, 2).entries) == [59, 58]
    log.add("alice", _entry(60))
    assert _minutes(log.page("alice", 0, 2).entries) == [60, 59]


def test_a_page_reads_an_index_range_without_sorting(log: ActivityLog) -> None:
    older = log.page("alice").older
    statements: list[str] = []
    log._db.set_trace_callback(statements.append)
    try:
        log.page("alice", older)
    finally:
        log._db.set_trace_callback(None)
    [query] = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    plan = [str(row[3]) for row in log._db.execute("EXPLAIN QUERY PLAN " + query)]
    assert plan == ["SEARCH activity USING INDEX activity_by_person (person=? AND id<?)"], plan


class _NoNode:
    """The activity page of staff calls no node."""


@pytest.fixture(scope="module")
def pki_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return console_pki(tmp_path_factory.mktemp("console-activity"))


@pytest.fixture
def console(pki_root: Path, tmp_path: Path) -> Iterator[Console]:
    made = stub_console(pki_root, _NoNode(), tmp_path / "activity.sqlite")
    yield made
    made.activity.close()


def test_my_activity_is_shown_a_page_at_a_time(console: Console, pki_root: Path) -> None:
    for n in range(PAGE_SIZE * 2 + 3):
        console.activity.add("alice", _entry(n))
        console.activity.add("bob", _entry(1000 + n))
    browser = Browser.of(console, pki_root, "alice")
    browser.sign_in()
    seen: list[str] = []
    path = "/activity"
    for _ in range(3):
        page = browser.get(path)
        assert page.status_code == 200 and "no-store" in page.headers["cache-control"]
        seen += re.findall(r"01 Dec 2026 \d\d:\d\d", page.text)
        older = re.findall(r'href="(/activity\?before=\d+)" rel="next"', page.text)
        assert ("Newest entries" in page.text) == (path != "/activity")
        if not older:
            break
        [path] = older
    expected = [_entry(n).at.strftime("%d %b %Y %H:%M") for n in range(PAGE_SIZE * 2 + 2, -1, -1)]
    assert seen == expected and path != "/activity"
    # a number that is no entry of the log: the newest page, not an error
    for odd in ("/activity?before=abc", "/activity?before=-5", "/activity?before=" + "9" * 40):
        page = browser.get(odd)
        assert page.status_code == 200 and re.findall(r"01 Dec 2026 \d\d:\d\d", page.text)[:1] == [
            expected[0]
        ]
