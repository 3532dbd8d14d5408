"""The staff console in a real browser: Debian's Chromium driven by Playwright, against real
matcher, node and console processes over mutual TLS on loopback.

The federation is the demo's (four agencies, synthetic children); the console is the
children's social care one, and the browser presents alice's staff certificate from her
PKCS#12 bundle (``jigsaw pki p12``). Journeys: sign in, look a child up, see the agencies
and the evidence, request the police record, see both in My activity; bad input (an
invalid NHS number, an impossible date) shows the error summary. Security: another
agency's staff certificate is refused, a POST without the CSRF token is refused, no page
or redirect puts an identifier in a URL, and the node's audit entry of a console lookup
names the staff member. axe-core (installed by ``make console-assets``) checks every page.
Screenshots go to ``tests/artefacts/console/`` (gitignored). The federation, the browser and
the journey's steps and checks are :mod:`tests.helpers.console_browser`.
"""

from __future__ import annotations

import csv
import http.cookiejar
import json
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from server.common.pki import issue_certificate, revoke_certificate
from server.console.app import KNOWN_PAGE_SIZE
from server.console.forms import agency_label
from server.launcher import AGENCIES, CONSOLE_AGENCY
from tests.helpers.console_browser import (
    ARTEFACTS,
    REPO,
    ConsoleFederation,
    Journey,
    chromium,
    console_federation,
    fill_lookup,
    form_values,
    https_context,
    new_context,
    references_of,
    sign_in,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFederation]:
    with console_federation(tmp_path_factory.mktemp("console-fed")) as fed:
        yield fed


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_staff_journey(browser: Any, federation: ConsoleFederation) -> None:
    context = new_context(browser, federation, "alice")
    journey = Journey(context, federation, "journey")
    page = journey.page
    sign_in(journey)
    values = form_values(federation.child)
    fill_lookup(page, values)
    journey.shot("lookup-form")
    page.get_by_role("button", name="Look up").click()
    heading = page.locator("h1").inner_text()
    assert "records that may be about this child" in heading
    assert page.locator("text=Police").first.is_visible()
    body = page.locator("main").inner_text()
    assert any(word in body for word in ("Very high", "High", "Possible"))
    assert "How it compared" in body and "Date of birth" in body
    for forbidden in ("probability", "weight", "log"):
        assert forbidden not in body.lower()
    assert page.locator("svg[role=img]").count() >= 1
    journey.shot("answer")
    page.get_by_role("button", name="Request the record from Police").first.click()
    assert page.locator("h1").inner_text() == "Request the record from Police"
    page.check("#priority")  # red
    journey.shot("request")
    page.get_by_role("button", name="Request the record").click()
    assert "Record released by Police" in page.locator("h1").inner_text()
    released = page.locator("main").inner_text()
    assert "Withheld details" in released and "Release expires" in released
    journey.shot("released")
    page.get_by_role("link", name="My activity").click()
    table = page.locator("table").inner_text()
    assert "Lookup" in table and "Record request (Red)" in table and "Released" in table
    journey.shot("activity")
    page.get_by_role("link", name="Children known to other agencies").click()
    journey.shot("known")
    journey.assert_no_identifier_in_urls(
        [values["given_name"], values["family_name"], values["postcode"].replace(" ", "")]
    )
    context.close()
    # the node's audit log names alice as the actor of the console's lookup and disclosure
    entries = [
        json.loads(line)
        for line in (federation.root / CONSOLE_AGENCY / "audit.jsonl").read_text().splitlines()
    ]
    console_entries = [e for e in entries if (e.get("details") or {}).get("via")]
    actions = {(e["action"], e["actor"]) for e in console_entries}
    assert ("lookup", "alice") in actions and ("disclose", "alice") in actions
    assert all(e["details"]["via"] == f"{CONSOLE_AGENCY}-console" for e in console_entries)


def test_children_known_to_other_agencies(browser: Any, federation: ConsoleFederation) -> None:
    """The console lists the agency's own records the batch link joined to other agencies'
    records — the node's fetched list exactly, right against the synthetic ground truth —
    by local id, with agencies and bands in words, and no agency's reference anywhere."""
    population = federation.population
    holders: dict[int, set[str]] = defaultdict(set)
    for agency in AGENCIES:
        for child in population.agencies[agency].child_id.tolist():
            holders[int(child)].add(agency_label(agency))
    own = population.agencies[CONSOLE_AGENCY]
    child_of = dict(zip(own.columns["record_id"], own.child_id.tolist(), strict=True))
    truly = {
        lid for lid, child in child_of.items() if holders[child] - {agency_label(CONSOLE_AGENCY)}
    }
    references = references_of(federation)

    context = new_context(browser, federation, "alice")
    journey = Journey(context, federation, "known")
    page = journey.page
    sign_in(journey)
    page.get_by_role("link", name="Children known to other agencies").click()
    listed: dict[str, set[str]] = {}
    while True:
        assert page.locator("h1").inner_text() == "Children known to other agencies"
        html = page.content()
        assert not any(reference in html for reference in references)
        for row in page.locator("table tbody tr").all():
            local_id = row.locator("th").inner_text().strip()
            agencies = set()
            for item in row.locator("td li").all():
                label, _, band = item.inner_text().partition(":")
                assert band.strip() in ("Very high", "High", "Possible", "Low")
                agencies.add(label.strip())
            listed[local_id] = agencies
        journey.shot(f"page-{len(listed)}")
        following = page.get_by_role("link", name="Next page")
        if following.count() == 0:
            break
        following.click()
    context.close()
    # exactly what the node fetched (the operator's `jigsaw linked` file of the same node)
    with open(federation.root / f"{CONSOLE_AGENCY}-linked.csv", newline="") as handle:
        fetched: dict[str, set[str]] = defaultdict(set)
        for r in csv.DictReader(handle):
            fetched[r["local_id"]].add(agency_label(r["agency"]))
    assert listed == dict(fetched)
    assert len(listed) > KNOWN_PAGE_SIZE  # more than one page
    # right against the ground truth: the agencies named really hold the child, mostly
    assert all(agency_label(CONSOLE_AGENCY) not in agencies for agencies in listed.values())
    named = [(lid, a) for lid, agencies in listed.items() for a in agencies]
    right = sum(a in holders[child_of[lid]] for lid, a in named)
    assert right / len(named) > 0.9
    assert len(set(listed) & truly) / len(truly) > 0.6
    # the node audited the listing as alice's, via the console, with no local id in it
    audit = (federation.root / CONSOLE_AGENCY / "audit.jsonl").read_text()
    entries = [json.loads(line) for line in audit.splitlines()]
    listings = [e for e in entries if e["action"] == "list_linked" and e["actor"] == "alice"]
    assert listings and all(e["details"]["via"] == f"{CONSOLE_AGENCY}-console" for e in listings)
    assert not any(lid in audit for lid in listed)


def test_an_operator_sees_the_nodes_status(browser: Any, federation: ConsoleFederation) -> None:
    """An operator of the federation signs in with the operator certificate and sees, in My
    activity, what the node's Status reports; the pages that act on records are refused."""
    context = new_context(browser, federation, "olivia")
    journey = Journey(context, federation, "operator")
    page = journey.page
    page.goto(federation.url + "/")
    assert page.locator("h1").inner_text() == "Sign in"
    assert "operator certificate of olivia" in page.locator("main").inner_text()
    journey.shot("sign-in")
    page.get_by_role("button", name="Continue as olivia").click()
    assert page.locator("h1").inner_text() == "My activity"
    assert page.get_by_role("link", name="Look up a child").count() == 0
    summary = {
        row.locator("dt").inner_text().strip(): row.locator("dd").inner_text().strip()
        for row in page.locator(".govuk-summary-list__row").all()
    }
    held = len(federation.population.agencies[CONSOLE_AGENCY])
    assert summary["Records held"] == f"{held:,}"
    assert summary["Published to the matcher"] == f"{held:,}"
    assert summary["Waiting to be published"] == "0"
    assert summary["Publishing"] == "Up to date"
    assert summary["Linkage key version"] == "1"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", summary["Schema fingerprint"])
    # the agency's data quality, from the node's Status: NHS-number coverage of its records
    with_nhs = sum(
        value is not None and value.strip() != ""
        for value in federation.population.agencies[CONSOLE_AGENCY].columns["nhs_number"]
    )
    coverage = summary["Records with an NHS number"]
    assert coverage.startswith(f"{with_nhs:,} of {held:,}"), coverage
    assert "Known to other agencies (last link)" in summary
    assert "Missing values by field" in page.locator("main").inner_text()
    assert "matcher's status" in page.locator("main").inner_text()
    journey.shot("status")
    for path in ("/known",):
        response = page.goto(federation.url + path)
        assert response is not None and response.status == 403
        assert page.locator("h1").inner_text() == "This page is for staff"
    journey.shot("refused")
    context.close()
    # a certificate of another role (the agency's own node) is refused outright
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=https_context(federation, f"{CONSOLE_AGENCY}-node"))
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(federation.url + "/", timeout=10)
    refused.value.close()  # its connection: left open, it warns in whichever test runs next
    assert refused.value.code == 403


def test_bad_input_shows_the_error_summary(browser: Any, federation: ConsoleFederation) -> None:
    context = new_context(browser, federation, "alice")
    journey = Journey(context, federation, "bad-input")
    page = journey.page
    sign_in(journey)
    values = form_values(federation.child) | {"dob-day": "31", "dob-month": "2"}
    fill_lookup(page, values, nhs="1234567890")
    page.get_by_role("button", name="Look up").click()
    summary = page.locator(".govuk-error-summary")
    assert summary.is_visible()
    text = summary.inner_text()
    assert "Date of birth must be a real date" in text
    assert "Enter a valid NHS number" in text
    assert page.title().startswith("Error:")
    assert page.locator("#nhs_number-error").is_visible()
    journey.shot("errors")
    journey.assert_no_identifier_in_urls([values["given_name"], "1234567890"])
    context.close()


def test_the_nodes_limit_is_the_staff_members_and_says_when(
    browser: Any, federation: ConsoleFederation
) -> None:
    """carol looks children up faster than the node's per-person limit allows (its burst,
    then its rate: :data:`CONSOLE_NODE_LIMITS`): the node refuses her, not the console, and
    the page is the GOV.UK error summary saying when to try again (429, ``Retry-After``),
    with no trace and no value in it."""
    context = new_context(browser, federation, "carol")
    journey = Journey(context, federation, "limits")
    page = journey.page
    page.goto(federation.url + "/")
    page.get_by_role("button", name="Continue as carol").click()
    values = form_values(federation.child)
    statuses = []
    for _ in range(12):
        fill_lookup(page, values)
        with page.expect_response(lambda r: r.url.endswith("/lookup")) as answered:
            page.get_by_role("button", name="Look up").click()
        statuses.append(answered.value.status)
        if statuses[-1] == 429:
            retry_after = int(answered.value.headers["retry-after"])
            break
        page.goto(federation.url + "/")
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses
    assert len(statuses) > 3  # the node's burst came first
    assert 1 <= retry_after <= 10
    summary = page.locator(".govuk-error-summary").inner_text()
    assert "You have made too many requests" in summary
    assert re.search(r"Try again in \d+ seconds?, after \d\d:\d\d:\d\d UTC", summary), summary
    body = page.locator("main").inner_text()
    assert "Traceback" not in page.content() and "RESOURCE_EXHAUSTED" not in page.content()
    for value in (values["given_name"], values["family_name"], values["postcode"]):
        assert value not in summary
    assert "Look up a child" in body
    journey.shot("rate-limited")
    page.get_by_role("link", name="My activity").click()
    assert "Too many requests" in page.locator("table").inner_text()
    context.close()
    # the node counted carol's refusal as hers (the console only relays her name)
    audit = (federation.root / CONSOLE_AGENCY / "audit.jsonl").read_text()
    lookups = [json.loads(x) for x in audit.splitlines()]
    assert any(e["action"] == "lookup" and e["actor"] == "carol" for e in lookups)
    assert values["family_name"] not in audit


def test_another_agencys_staff_certificate_is_refused(
    browser: Any, federation: ConsoleFederation
) -> None:
    context = new_context(browser, federation, "bob")  # police staff
    page = context.new_page()
    response = page.goto(federation.url + "/")
    assert response is not None and response.status == 403
    assert page.locator("h1").inner_text() == "You cannot use this console"
    context.close()
    # and without a certificate the TLS handshake itself fails
    bare = ssl.create_default_context(cafile=str(federation.root / "pki/ca/ca.pem"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(federation.url + "/", context=bare, timeout=10).read()


def test_a_post_without_the_csrf_token_is_refused(federation: ConsoleFederation) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=https_context(federation, "alice")),
        urllib.request.HTTPCookieProcessor(jar),
    )

    def post(path: str, fields: dict[str, str]) -> int:
        request = urllib.request.Request(
            federation.url + path, data=urllib.parse.urlencode(fields).encode(), method="POST"
        )
        try:
            with opener.open(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as refused:
            refused.close()
            return refused.code

    with opener.open(federation.url + "/", timeout=10) as page:
        # every page says not to store it, and not to be framed
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.read().decode())
        assert found is not None
        token = found.group(1)
    assert post("/sign-in", {}) == 403
    assert post("/sign-in", {"csrf_token": token}) == 200  # signed in, redirected to the form
    lookup = {"given_name": "Amelia", "purpose": "s47_enquiry", "note": "x"}
    assert post("/lookup", lookup) == 403
    assert post("/lookup", lookup | {"csrf_token": token}) == 403  # the pre-session token
    assert post("/sign-out", {}) == 403


def test_a_revoked_staff_certificate_is_refused_without_a_restart(
    federation: ConsoleFederation,
) -> None:
    pki = federation.root / "pki"
    issue_certificate(pki, "rhoda", CONSOLE_AGENCY, "staff")

    def status() -> int:
        try:
            with urllib.request.urlopen(
                federation.url + "/", context=https_context(federation, "rhoda"), timeout=10
            ) as page:
                return int(page.status)
        except urllib.error.HTTPError as refused:
            refused.close()
            return refused.code

    assert status() == 200
    revoke_certificate(pki, name="rhoda")  # the console reads the new list as it changes
    deadline = time.monotonic() + 10
    while status() != 403 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status() == 403


def test_artefacts_directory_is_ignored() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(ARTEFACTS / "x.png")], cwd=REPO, check=False
    )
    assert ignored.returncode == 0 or shutil.which("git") is None
