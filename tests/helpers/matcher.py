"""A real matcher for tests: its config (mutual TLS from a test PKI, a SQLite store in the
test's directory) and a started server with channels to it per identity. Shared by the
matcher, forms and publish tests."""

from __future__ import annotations

from pathlib import Path

import grpc

from proto.jigsaw.v1 import jigsaw_pb2_grpc
from server.common.tls import secure_channel, tls_files_for
from server.matcher.config import MatcherConfig, parse_matcher_config
from server.matcher.service import MatcherRuntime, build_matcher


def tls_section(pki_dir: Path, name: str) -> str:
    """The ``[tls]`` section of a config for identity ``name``'s bundle in ``pki_dir``."""
    tls = tls_files_for(pki_dir, name)
    return f'[tls]\nca_cert = "{tls.ca_cert}"\ncert = "{tls.cert}"\nkey = "{tls.key}"'


def matcher_config(
    tmp_path: Path, pki_dir: Path, *, max_batch: int = 5000, match_limits: str = ""
) -> MatcherConfig:
    """The test matcher config; ``match_limits``, when given, is the body of [match_limits]."""
    limits = f"[match_limits]\n{match_limits}\n" if match_limits else ""
    text = f"""
[matcher]
schema = "child"
key_version = 1
store = "matcher.sqlite"
audit_log = "matcher-audit.jsonl"
listen = "127.0.0.1:0"
benchmark_mode = true
max_publish_batch = {max_batch}
{tls_section(pki_dir, "matcher")}
{limits}"""
    return parse_matcher_config(text, base_dir=tmp_path)


class FakeClock:
    """Monotonic seconds that move only when a test says so (drives the match limits)."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Running:
    """A started matcher and channels to it per identity."""

    def __init__(
        self, config: MatcherConfig, pki_dir: Path, *, clock: FakeClock | None = None
    ) -> None:
        self.config = config
        self.pki_dir = pki_dir
        self.runtime: MatcherRuntime = (
            build_matcher(config) if clock is None else build_matcher(config, clock=clock)
        )
        self.runtime.server.start()
        self.address = f"127.0.0.1:{self.runtime.port}"
        self._channels: dict[str, grpc.Channel] = {}

    def stub(self, identity: str) -> jigsaw_pb2_grpc.MatcherStub:
        if identity not in self._channels:
            self._channels[identity] = secure_channel(
                self.address, tls_files_for(self.pki_dir, identity)
            )
        return jigsaw_pb2_grpc.MatcherStub(self._channels[identity])  # type: ignore[no-untyped-call]

    def channel(self, identity: str) -> grpc.Channel:
        self.stub(identity)
        return self._channels[identity]

    def stop(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self.runtime.stop()
