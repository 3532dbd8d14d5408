"""The staff console in a real browser, for tests: the federation it runs against, Chromium
driven by Playwright, and the steps and checks of a journey through the console's pages.

Role: the machinery of ``tests/server/console/test_console_browser.py`` (its module-scoped
fixtures call :func:`console_federation` and :func:`chromium`). The federation is the demo's
(four agencies, synthetic children, real matcher, node and console processes over mutual
TLS on loopback); the console is the children's social care one.

Invariants: nothing is mocked; the federation's processes are stopped on leaving
:func:`console_federation`, which fails if one did not exit cleanly; every page a
:class:`Journey` screenshots is checked by axe-core (:func:`check_accessibility`), and
screenshots go to ``tests/artefacts/console/`` (gitignored). Missing assets (``make
console-assets``) fail the test, never skip it.
"""

from __future__ import annotations

import json
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.demo import _pick_children
from linkage import synthetic
from linkage.keys import LinkageSecret
from linkage.normalise import normalise_date, normalise_sex
from server.common.pki import export_pkcs12, init_pki, issue_certificate
from server.launcher import (
    AGENCIES,
    CONSOLE_AGENCY,
    DEMO_P12_PASSWORD,
    STAFF,
    Service,
    jigsaw_command,
    node_addresses,
    reserve_ports,
    start_service,
    stop_services,
    wait_ready,
    write_agency_csv,
    write_matcher_config,
    write_node_config,
)

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "server/console/frontend/node_modules/axe-core/axe.min.js"
GOVUK = REPO / "server/console/frontend/node_modules/govuk-frontend"
ARTEFACTS = REPO / "tests" / "artefacts" / "console"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


#: The console's node lets a person look up 5 children at once, then one every 10 seconds:
#: low enough for a test to meet however slowly the machine answers.
CONSOLE_NODE_LIMITS = {"rate_limits": {"lookups_per_minute": 6, "burst": 5}}


def jigsaw(*args: str) -> None:
    subprocess.run(
        jigsaw_command(*args),
        check=True,
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )


@dataclass
class ConsoleFederation:
    root: Path
    url: str
    child: dict[str, str]
    services: list[Service]
    population: synthetic.SyntheticData


@contextmanager
def console_federation(root: Path) -> Iterator[ConsoleFederation]:
    """The demo federation and the console under ``root``, stopped on leaving."""
    if not CHROMIUM.is_file() or not GOVUK.is_dir():
        pytest.fail("the console tests need `make console-assets` (Chromium and govuk-frontend)")
    population = synthetic.generate_population(1000, seed=2026)
    init_pki(root / "pki", agencies=AGENCIES, staff=STAFF, operators=["olivia"])
    issue_certificate(root / "pki", f"{CONSOLE_AGENCY}-console", CONSOLE_AGENCY, "console")
    issue_certificate(root / "pki", "carol", CONSOLE_AGENCY, "staff")  # meets the limits
    export_pkcs12(root / "pki", "alice", DEMO_P12_PASSWORD.encode())
    (root / "secret.hex").write_text(LinkageSecret.generate().to_hex() + "\n", "ascii")
    (root / "data").mkdir()
    for agency in AGENCIES:
        write_agency_csv(
            population.agencies[agency], root / "data" / f"{agency}.csv", bad_row=False
        )
    services: list[Service] = []
    try:
        matcher = start_service(
            "matcher", ["matcher", "serve", "--config", str(write_matcher_config(root))],
            root / "matcher",
        )  # fmt: skip
        services.append(matcher)
        wait_ready([matcher])
        addresses = node_addresses()
        console_listen = f"127.0.0.1:{reserve_ports(1)[0]}"
        configs = {
            a: write_node_config(
                root, a, matcher.address(), addresses=addresses,
                console_listen=console_listen if a == CONSOLE_AGENCY else None,
                overrides=CONSOLE_NODE_LIMITS if a == CONSOLE_AGENCY else None,
            )
            for a in AGENCIES
        }  # fmt: skip
        nodes = [
            start_service(f"{a}-node", ["node", "serve", "--config", str(configs[a])], root / a)
            for a in AGENCIES
        ]
        services += nodes
        wait_ready(nodes)
        for agency in AGENCIES:
            jigsaw("ingest", "--config", str(configs[agency]))
            jigsaw("publish", "--config", str(configs[agency]))
        # an operator's batch link, then each node fetches its share of the result
        pki = str(root / "pki")
        jigsaw("link", "--matcher", matcher.address(), "--pki", pki, "--identity", "olivia")
        for agency in AGENCIES:
            jigsaw(
                "linked", "--config", str(configs[agency]), "--agency", agency, "--pki", pki,
                "--identity", "olivia", "--fetch", "--out", str(root / f"{agency}-linked.csv"),
            )  # fmt: skip
        console = start_service(
            "console", ["console", "serve", "--config", str(configs[CONSOLE_AGENCY])],
            root / CONSOLE_AGENCY,
        )  # fmt: skip
        services.append(console)
        wait_ready([console])
        child = _pick_children(population, 1, 2026)[0]
        yield ConsoleFederation(
            root,
            f"https://localhost:{console.port_file.read_text().strip()}",
            child,
            services,
            population,
        )
    finally:
        codes = stop_services(services)
    assert all(code == 0 for _, code in codes), codes


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, launched by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        yield launched
        launched.close()


def new_context(browser: Any, federation: ConsoleFederation, person: str) -> Any:
    """A fresh browser context presenting ``person``'s certificate (alice: her PKCS#12)."""
    bundle = federation.root / "pki" / person
    certificate: dict[str, Any] = {"origin": federation.url}
    if (bundle / f"{person}.p12").is_file():
        certificate |= {"pfxPath": str(bundle / f"{person}.p12"), "passphrase": DEMO_P12_PASSWORD}
    else:
        certificate |= {
            "certPath": str(bundle / f"{person}.pem"),
            "keyPath": str(bundle / f"{person}.key"),
        }
    # the federation CA is private: the test trusts it by ignoring the browser's own store,
    # as a unit would by installing ca.pem; TLS still requires the client certificate
    return browser.new_context(client_certificates=[certificate], ignore_https_errors=True)


class Journey:
    """One browser page, its screenshots, and every URL it visited (checked for identifiers)."""

    def __init__(self, context: Any, federation: ConsoleFederation, name: str) -> None:
        self.page = context.new_page()
        self.federation = federation
        self.name = name
        self.urls: list[str] = []
        self.page.on("framenavigated", lambda frame: self.urls.append(frame.url))
        self.page.on("request", lambda request: self.urls.append(request.url))
        self.step = 0

    def shot(self, label: str) -> None:
        self.step += 1
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(
            path=str(ARTEFACTS / f"{self.name}-{self.step:02d}-{label}.png"), full_page=True
        )
        check_accessibility(self.page, label)

    def assert_no_identifier_in_urls(self, values: list[str]) -> None:
        for url in self.urls:
            lowered = url.lower()
            for value in values:
                assert value.lower() not in lowered, (
                    f"an identifier reached a URL ({label_of(url)})"
                )


def label_of(url: str) -> str:
    return url.split("?")[0].rsplit("/", 1)[-1] or "/"


def check_accessibility(page: Any, label: str) -> None:
    """axe-core, injected into the page, finds no violation (WCAG 2.x A and AA rules)."""
    if not AXE.is_file():
        pytest.fail("axe-core is missing: run `make console-assets`")
    # the page's CSP forbids scripts; Playwright's evaluate runs in an isolated world
    page.evaluate(AXE.read_text("utf-8") + "\n;0")
    result = page.evaluate(
        "async () => { const r = await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}}); "
        "return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length, "
        "help: v.help, target: v.nodes[0].target}))}"
    )
    assert result == [], f"axe violations on {label}: {json.dumps(result, indent=1)}"


def form_values(child: dict[str, str]) -> dict[str, str]:
    date = normalise_date(child["date_of_birth"], field="date_of_birth") or ""
    year, month, day = date.split("-")
    return {
        "given_name": child["given_name"],
        "family_name": child["family_name"],
        "dob-day": str(int(day)),
        "dob-month": str(int(month)),
        "dob-year": year,
        "sex": normalise_sex(child["sex"], field="sex") or "",
        "postcode": child["postcode"],
    }


def sign_in(journey: Journey) -> None:
    page = journey.page
    page.goto(journey.federation.url + "/")
    assert page.locator("h1").inner_text() == "Sign in"
    journey.shot("sign-in")
    page.get_by_role("button", name="Continue as alice").click()
    assert page.locator("h1").inner_text() == "Look up a child", page.locator("main").inner_text()
    assert page.locator("h1").inner_text() == "Look up a child"


def fill_lookup(page: Any, values: dict[str, str], *, nhs: str = "") -> None:
    for field in ("given_name", "family_name", "postcode"):
        page.fill(f"#{field}", values[field])
    for part in ("day", "month", "year"):
        page.fill(f"#dob-{part}", values[f"dob-{part}"])
    page.check("#sex" if values["sex"] == "f" else f"#sex-{values['sex'] or 'unknown'}")
    if nhs:
        page.fill("#nhs_number", nhs)
    page.check("#purpose")  # the first purpose of the list
    page.fill("#note", "case 0001, strategy discussion")


def references_of(federation: ConsoleFederation) -> set[str]:
    """Every agency's references (none may ever appear on a console page)."""
    found: set[str] = set()
    for agency in AGENCIES:
        con = sqlite3.connect(federation.root / agency / "store.sqlite")
        try:
            found |= {r for (r,) in con.execute("SELECT reference FROM records")}
        finally:
            con.close()
    return found


def https_context(federation: ConsoleFederation, person: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(federation.root / "pki/ca/ca.pem"))
    bundle = federation.root / "pki" / person
    context.load_cert_chain(bundle / f"{person}.pem", bundle / f"{person}.key")
    return context
