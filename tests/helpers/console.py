"""An in-process browser of the staff console: the real ASGI app called as an ASGI server
calls it, with a person's verified certificate in the scope as uvicorn's protocol puts it
(:mod:`server.console.tls`), cookies kept and redirects followed."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.common.pki import init_pki, issue_certificate
from server.common.revocation import RevocationChecker
from server.console.activity import ActivityLog
from server.console.app import create_app
from server.console.state import Console
from server.launcher import AGENCIES, CONSOLE_AGENCY, STAFF, write_node_config
from server.node.config import load_node_config

__all__ = ["Answer", "Browser", "console_pki", "csrf_of", "stub_console"]


def console_pki(root: Path) -> Path:
    """``root`` with a federation's PKI (the launcher's staff, and carol and dave of the
    console's agency; operator olivia), the console's certificate and a secret."""
    init_pki(
        root / "pki",
        agencies=AGENCIES,
        staff=[*STAFF, ("carol", CONSOLE_AGENCY), ("dave", CONSOLE_AGENCY)],
        operators=["olivia"],
    )
    issue_certificate(root / "pki", f"{CONSOLE_AGENCY}-console", CONSOLE_AGENCY, "console")
    (root / "secret.hex").write_text("00" * 32 + "\n", "ascii")
    return root


def csrf_of(page: str) -> str:
    """The CSRF token of a console page's form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def stub_console(root: Path, node: Any, activity: Path) -> Console:
    """The console of :func:`console_pki`'s ``root`` with ``node`` standing in for its node
    (close its ``activity`` after)."""
    # fixed ports a config needs; nothing listens or connects there
    addresses = {a: f"127.0.0.1:{50990 + i}" for i, a in enumerate(AGENCIES)}
    path = write_node_config(
        root, CONSOLE_AGENCY, "127.0.0.1:50999", addresses=addresses,
        console_listen="127.0.0.1:0",
    )  # fmt: skip
    config = load_node_config(path)
    assert config.console is not None
    return Console(
        config,
        config.console,
        node=node,
        activity=ActivityLog(activity),
        revocations=RevocationChecker.for_tls(config.tls),
    )


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    text: str


class Browser:
    """One browser of one person: requests to the ASGI app over "https", cookies kept."""

    def __init__(self, app: Any, pem: str) -> None:
        self._app, self._pem = app, pem
        self.cookies: dict[str, str] = {}

    @classmethod
    def of(cls, console: Console, root: Path, person: str) -> Browser:
        """A browser of ``console``'s app presenting ``person``'s verified certificate (from
        :func:`console_pki`'s ``root``)."""
        pem = (root / "pki" / person / f"{person}.pem").read_text("ascii")
        return cls(create_app(console), pem)

    def sign_in(self) -> str:
        """Sign in (as a person does: the sign-in page's button); the session's CSRF token."""
        token = csrf_of(self.get("/").text)
        done = self.post("/sign-in", data={"csrf_token": token}, follow_redirects=True)
        assert done.status_code == 200, done.text
        return csrf_of(done.text)

    def get(self, path: str) -> Answer:
        return self._send("GET", path, None, follow_redirects=True)

    def post(self, path: str, data: dict[str, str], *, follow_redirects: bool = False) -> Answer:
        return self._send("POST", path, data, follow_redirects=follow_redirects)

    def _send(
        self, method: str, path: str, data: dict[str, str] | None, *, follow_redirects: bool
    ) -> Answer:
        answer = asyncio.run(self._call(method, path, data))
        if follow_redirects and answer.status_code in (302, 303):
            return self._send("GET", answer.headers["location"], None, follow_redirects=True)
        return answer

    async def _call(self, method: str, path: str, data: dict[str, str] | None) -> Answer:
        body = urllib.parse.urlencode(data).encode() if data is not None else b""
        headers = [(b"host", b"testserver")]
        if self.cookies:
            jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            headers.append((b"cookie", jar.encode()))
        if data is not None:
            headers.append((b"content-type", b"application/x-www-form-urlencoded"))
            headers.append((b"content-length", str(len(body)).encode()))
        path, _, query = path.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "https", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("testserver", 443),
            "extensions": {"tls": {"client_cert_chain": (self._pem,)}},
        }  # fmt: skip
        sent = False
        started: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        answer_headers: dict[str, str] = {}
        for raw_name, raw_value in started.get("headers", []):
            name, value = raw_name.decode().lower(), raw_value.decode()
            if name == "set-cookie":
                cookie = value.split(";", 1)[0]
                key, _, content = cookie.partition("=")
                if content in ("", '""') or "max-age=0" in value.lower():
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = content
            answer_headers[name] = value
        return Answer(int(started["status"]), answer_headers, b"".join(chunks).decode())
