"""The console's rate limits over HTTP, in process: the node's per-person refusals and the
console's own limits on sign-in and form posts, each shown as a page saying when to try
again (status 429, ``Retry-After``), with no stack trace and no identifier value.

The app is the real one (:func:`server.console.app.create_app`), called as an ASGI server
calls it (:class:`Browser`: a cookie jar, redirects followed); the browser's verified
certificate is put in the ASGI scope as uvicorn's protocol puts it (:mod:`server.console.tls`),
and the node is a stub whose calls answer as a node over its
limits does (``RESOURCE_EXHAUSTED`` with ``retry-after-s`` in the trailing metadata).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto.jigsaw.v1 import jigsaw_pb2
from server.console.state import (
    POSTS_EXTRA_BURST,
    POSTS_PER_LOOKUP,
    SIGN_IN_BURST,
    Console,
    try_again,
)
from tests.helpers.calls import FailedCall
from tests.helpers.console import Browser, console_pki, csrf_of, stub_console

FORM = {
    "given_name": "Amelia",
    "family_name": "Zebedee-Quarrington",
    "dob_day": "24",
    "dob_month": "5",
    "dob_year": "2014",
    "sex": "f",
    "postcode": "SW1A 1AA",
    "nhs_number": "943 476 5919",
    "purpose": "s47_enquiry",
    "note": "case 4711",
}
VALUES = ("Amelia", "Zebedee-Quarrington", "SW1A 1AA", "9434765919", "943 476 5919")


@dataclass
class StubNode:
    """A node whose Lookup and Disclose refuse with ``retry_after`` (None: answer)."""

    retry_after: float | None = 95.0
    calls: list[tuple[str, str]] = field(default_factory=list)

    def Lookup(self, request: jigsaw_pb2.LookupRequest, timeout: float) -> Any:
        self.calls.append(("Lookup", request.on_behalf_of))
        if self.retry_after is not None:
            raise FailedCall(grpc.StatusCode.RESOURCE_EXHAUSTED, self.retry_after)
        candidate = jigsaw_pb2.Candidate(
            agency="police", reference="ab" * 16, band=jigsaw_pb2.PROBABILITY_BAND_HIGH
        )
        return jigsaw_pb2.LookupResponse(lookup_id="cd" * 16, candidates=[candidate])

    def ListLinked(self, request: jigsaw_pb2.ListLinkedRequest, timeout: float) -> Any:
        self.calls.append(("ListLinked", request.on_behalf_of))
        return jigsaw_pb2.ListLinkedResponse(total_records=0)

    def Disclose(self, request: jigsaw_pb2.DiscloseRequest, timeout: float) -> Any:
        self.calls.append(("Disclose", request.on_behalf_of))
        raise FailedCall(grpc.StatusCode.RESOURCE_EXHAUSTED, self.retry_after)


@dataclass
class Rig:
    console: Console
    node: StubNode
    root: Path

    def browser(self, person: str) -> Browser:
        """A browser presenting ``person``'s verified certificate."""
        return Browser.of(self.console, self.root, person)


@pytest.fixture(scope="module")
def pki_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return console_pki(tmp_path_factory.mktemp("console-limits"))


@pytest.fixture
def rig(pki_root: Path, tmp_path: Path) -> Iterator[Rig]:
    node = StubNode()
    console = stub_console(pki_root, node, tmp_path / "activity.sqlite")
    yield Rig(console, node, pki_root)
    console.activity.close()


def _assert_clean(text: str) -> None:
    assert "Traceback" not in text and "RpcError" not in text and "FailedCall" not in text
    assert "retry after 95.000" not in text  # the node's details are not shown raw
    for value in VALUES:
        assert value not in text


def test_a_node_refusal_of_a_lookup_is_an_error_summary_saying_when(rig: Rig) -> None:
    client = rig.browser("alice")
    token = client.sign_in()
    before = datetime.datetime.now(datetime.UTC)
    answer = client.post("/lookup", data=FORM | {"csrf_token": token})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "95"
    assert answer.headers["cache-control"] == "no-store"
    # the node was asked as alice: its per-person limits are hers
    assert rig.node.calls == [("Lookup", "alice")]
    summary = re.search(r'<div class="govuk-error-summary".*?</ul>', answer.text, flags=re.DOTALL)
    assert summary is not None
    assert "There is a problem" in summary.group(0)
    assert "You have made too many requests" in summary.group(0)
    found = re.search(r"Try again in 2 minutes, after (\d\d):(\d\d) UTC", summary.group(0))
    assert found is not None, summary.group(0)
    at = before.replace(hour=int(found.group(1)), minute=int(found.group(2)), second=0)
    if at < before - datetime.timedelta(hours=1):
        at += datetime.timedelta(days=1)
    # never earlier than the node's own retry-after; at most a minute's rounding later
    assert before + datetime.timedelta(seconds=95) <= at + datetime.timedelta(seconds=60)
    assert at <= before + datetime.timedelta(seconds=95 + 120)
    assert '<a href="#' not in summary.group(0)  # not one field's problem
    assert answer.text.count("govuk-error-message") == 0
    assert "Error:" in answer.text.split("</title>")[0]
    # the form is kept (POST answer, no-store) but no value is in the error itself
    _assert_clean(summary.group(0))
    activity = client.get("/activity")
    assert "Too many requests" in activity.text and "exhausted" not in activity.text.lower()


def test_a_node_refusal_of_a_record_request_is_a_page_saying_when(rig: Rig) -> None:
    client = rig.browser("alice")
    token = client.sign_in()
    rig.node.retry_after = None
    answer = client.post("/lookup", data=FORM | {"csrf_token": token})
    assert answer.status_code == 200
    candidate = re.search(r'name="candidate" value="([^"]+)"', answer.text)
    assert candidate is not None
    rig.node.retry_after = 12.2
    refused = client.post(
        "/disclose",
        data={
            "csrf_token": token,
            "candidate": candidate.group(1),
            "purpose": "s47_enquiry",
            "priority": "red",
        },
    )
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "13"
    assert ("Disclose", "alice") in rig.node.calls
    assert '<h1 class="govuk-heading-l">You have made too many requests</h1>' in refused.text
    assert re.search(r"Try again in 13 seconds, after \d\d:\d\d:\d\d UTC\.", refused.text)
    _assert_clean(refused.text)
    assert "ab" * 16 not in refused.text  # nor the record's reference


def test_a_refusal_without_a_retry_after_still_says_when(rig: Rig) -> None:
    client = rig.browser("alice")
    token = client.sign_in()
    rig.node.retry_after = None
    refused = FailedCall(grpc.StatusCode.RESOURCE_EXHAUSTED)
    rig.node.Lookup = lambda request, timeout: (_ for _ in ()).throw(refused)  # type: ignore[method-assign]
    answer = client.post("/lookup", data=FORM | {"csrf_token": token})
    assert answer.status_code == 429 and answer.headers["retry-after"] == "60"
    assert "Try again in 60 seconds" in answer.text


def test_sign_in_is_limited_per_person(rig: Rig) -> None:
    statuses = []
    for _ in range(SIGN_IN_BURST + 1):
        client = rig.browser("carol")  # a fresh browser each time: its own sign-in token
        token = csrf_of(client.get("/").text)
        statuses.append(client.post("/sign-in", data={"csrf_token": token}).status_code)
    assert statuses == [303] * SIGN_IN_BURST + [429]
    refused = client.post("/sign-in", data={"csrf_token": token})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "You have made too many requests" in refused.text and "Try again in" in refused.text
    _assert_clean(refused.text)
    # another person is not held back by carol's sign-ins
    assert rig.browser("dave").post("/sign-in", data={"csrf_token": "x"}).status_code == 403


def test_form_posts_are_limited_per_person_before_the_node(rig: Rig) -> None:
    """A person's posts that never reach the node (a form with errors) still meet the
    console's own limit, set from the node's per-person lookup limit."""
    limits = rig.console.config.rate_limits
    burst = POSTS_PER_LOOKUP * limits.burst + POSTS_EXTRA_BURST
    client = rig.browser("dave")
    token = client.sign_in()
    bad = FORM | {"csrf_token": token, "nhs_number": "1234567890"}
    statuses = [client.post("/lookup", data=bad).status_code for _ in range(burst + 10)]
    assert 429 in statuses
    first = statuses.index(429)
    assert burst <= first <= burst + 5  # a few tokens may refill while posting
    assert all(s == 400 for s in statuses[:first])
    assert rig.node.calls == []  # none of it reached the node
    refused = client.post("/lookup", data=bad)
    assert refused.status_code == 429 and "Try again in" in refused.text
    _assert_clean(refused.text)
    # the limit is the person's: alice's posts go through
    other = rig.browser("alice")
    assert other.post("/lookup", data=bad | {"csrf_token": other.sign_in()}).status_code == 400


def test_pages_that_call_the_node_share_the_persons_limit(rig: Rig) -> None:
    """Viewing the children known to other agencies calls the node each time: it counts
    as a form post does, so a person reloading it in a loop is held back by the console."""
    limits = rig.console.config.rate_limits
    burst = POSTS_PER_LOOKUP * limits.burst + POSTS_EXTRA_BURST
    client = rig.browser("alice")
    client.sign_in()
    statuses = [client.get("/known").status_code for _ in range(burst + 10)]
    first = statuses.index(429)
    assert burst <= first <= burst + 5 and set(statuses[:first]) == {200}
    # the refused views never reached the node (a token that refills after the first refusal
    # lets a later view through, which does)
    assert len(rig.node.calls) == statuses.count(200)
    refused = client.get("/known")
    assert refused.status_code == 429 and "Try again in" in refused.text
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.2, "Try again in 1 second, after 10:00:01 UTC."),
        (45.5, "Try again in 46 seconds, after 10:00:46 UTC."),
        (95, "Try again in 2 minutes, after 10:02 UTC."),
        (3000, "Try again in 50 minutes, after 10:50 UTC."),
        (3030, "Try again in 51 minutes, after 10:51 UTC."),
        (3 * 3600, "Try again in 3 hours, after 13:00 UTC."),
    ],
)
def test_when_to_try_again_in_words(seconds: float, words: str) -> None:
    now = datetime.datetime(2026, 12, 8, 10, 0, 0, tzinfo=datetime.UTC)
    assert try_again(seconds, now) == words
