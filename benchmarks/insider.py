"""Insider probing, measured: how many identities a node that holds the key can test.

The insider runs an agency node. It holds the linkage secret and a node
certificate, and it controls its node's code and config, so the node's own limits on staff
lookups (``[rate_limits]`` of the node config) do not bind it: it encodes any guessed
identity itself and calls the matcher's ``Match`` RPC directly. What stops it is the
matcher's ``[match_limits]`` per calling node: a token bucket (``matches_per_minute``,
``burst``), an audited ``enumeration_alert`` above ``enumeration_alert_per_hour`` in a
sliding hour, and a hard ``max_matches_per_hour``.

:func:`run_insider` measures that on real parts: a matcher process with the demo's config
(the shipped defaults), mutual TLS on loopback, a seeded synthetic population published
through ``Publish`` with a node certificate, then the insider's probe: one guessed identity
per ``Match`` call (a real child's given name, family name, date of birth and postcode,
encoded with the production single-record encoder), as fast as the matcher accepts, honouring
each refusal's ``retry-after-s`` (the best a rate-limited prober can do), for
``probe_seconds``. It reports what it saw (calls accepted in the first burst, the sustained
accepted rate, refusals, when the alert entry appeared in the matcher's audit log and after
how many accepted calls) and, from the measured rate and the configured hourly cap, how many
identities per day and per week the insider could test and how long a population of
``population`` children would take. A second matcher with the limits lifted gives the rate an
insider gets without them (the matcher before it had ``[match_limits]``).

Run: ``python -m benchmarks.insider`` (JSON line on stdout, progress on stderr), or as part of
``jigsaw bench attack``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from linkage import synthetic
from linkage.encode import encode_record, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import retry_after_from_metadata
from server import launcher
from server.common.tls import secure_channel, tls_files_for
from server.common.wire import encoded_to_columns, encoded_to_proto

#: The insider's node (any agency would do) and what its probes are sent as.
INSIDER_AGENCY = "police"
#: Another node, whose one call fits the matcher's model before the probe starts.
WARM_UP_AGENCY = "health"
PROBE_FIELDS = ("given_name", "family_name", "date_of_birth", "sex", "postcode")
#: Records per PublishRequest message (under the matcher's default max_publish_batch).
PUBLISH_CHUNK = 2000
#: Seconds the insider probes the matcher with its limits lifted.
UNLIMITED_SECONDS = 10.0
#: The [match_limits] values that lift the limits for the baseline run.
LIFTED_LIMITS = {
    "matches_per_minute": 100_000_000,
    "burst": 1_000_000,
    "enumeration_alert_per_hour": 100_000_000,
    "max_matches_per_hour": 100_000_000,
}
#: Bands a prober would read as "this child is known to the agencies".
CONFIRMING_BANDS = frozenset({"PROBABILITY_BAND_HIGH", "PROBABILITY_BAND_VERY_HIGH"})

Emit = Callable[[dict[str, Any]], None]


def _progress(message: str) -> None:
    print(f"[insider {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _match_limits(config_path: Path) -> dict[str, float]:
    """The ``[match_limits]`` table of a matcher config file as written (the defaults are
    written out in full by ``client.launcher.write_matcher_config``)."""
    table = tomllib.loads(config_path.read_text("utf-8")).get("match_limits", {})
    return {key: float(value) for key, value in table.items()}


def _set_limits(config_path: Path, values: Mapping[str, str | float]) -> None:
    """Replace ``[match_limits]`` values of a matcher config (text is read as a TOML number)."""
    document = tomllib.loads(config_path.read_text("utf-8"))
    numbers = {key: _number(value) for key, value in values.items()}
    launcher.write_toml(
        config_path, "Insider matcher", launcher.merged(document, {"match_limits": numbers})
    )


def _number(value: str | float) -> float:
    """``value`` as a number; text as TOML reads it (``"5"`` an integer, ``"0.5"`` a float)."""
    if not isinstance(value, str):
        return value
    number: float = tomllib.loads(f"value = {value}")["value"]
    return number


def _probe_requests(
    population: synthetic.SyntheticData, keys: KeySet, count: int, seed: int
) -> list[jigsaw_pb2.MatchRequest]:
    """One ``MatchRequest`` per guessed identity: real children of the population, in a
    random order, each from one of its records, encoded as a node encodes a lookup."""
    schema = default_child_schema()
    columns = population.all_records().columns
    rows = len(columns[PROBE_FIELDS[0]])
    order = np.random.default_rng(seed).permutation(rows)[:count]
    header = jigsaw_pb2.EncodingHeader(
        schema_fingerprint=schema.fingerprint(), key_version=keys.key_version
    )
    requests = []
    for number, row in enumerate(order.tolist()):
        identifiers = {f: columns[f][row] or "" for f in PROBE_FIELDS}
        batch = encode_record(schema, keys, identifiers)
        requests.append(
            jigsaw_pb2.MatchRequest(
                header=header,
                queries=encoded_to_proto(batch, [f"{number:032x}"]),
                max_candidates=5,
                purpose_code="s47_enquiry",
                # the node names whom it acts for: a new name per probe, so that only the
                # node's own limits bind (the per-person shares do not hold a node back)
                on_behalf_of=f"insider-{number}",
            )
        )
    return requests


def _publish(
    stub: jigsaw_pb2_grpc.MatcherStub, population: synthetic.SyntheticData, keys: KeySet
) -> int:
    """Publish every record of the population through one node identity; records indexed."""
    schema = default_child_schema()
    columns = population.all_records().columns
    batch = encode_records(schema, keys, columns)
    references = [f"{i:032x}" for i in range(len(batch))]
    header = jigsaw_pb2.EncodingHeader(
        schema_fingerprint=schema.fingerprint(), key_version=keys.key_version
    )
    messages = [
        jigsaw_pb2.PublishRequest(
            header=header if start == 0 else None,
            columns=encoded_to_columns(
                batch.take(np.arange(start, min(start + PUBLISH_CHUNK, len(batch)))),
                references[start : start + PUBLISH_CHUNK],
            ),
        )
        for start in range(0, len(batch), PUBLISH_CHUNK)
    ]
    response = stub.Publish(iter(messages), timeout=600.0)
    return int(response.inserted + response.replaced + response.unchanged)


class _Probe:
    """The insider's probing loop against one matcher (one caller, no concurrency: the
    limits are per node identity, so more threads would only be refused sooner)."""

    def __init__(self, stub: jigsaw_pb2_grpc.MatcherStub, requests: list[jigsaw_pb2.MatchRequest]):
        self.stub = stub
        self.requests = requests
        self.accepted_at: list[float] = []  # wall-clock seconds of each accepted call
        self.refused = 0
        self.first_refusal: float | None = None
        self.confirmed = 0

    def run(self, seconds: float, *, honour_retry_after: bool) -> None:
        deadline = time.time() + seconds
        sent = 0
        while time.time() < deadline:
            request = self.requests[sent % len(self.requests)]
            sent += 1
            try:
                response = self.stub.Match(request, timeout=10.0)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                self.refused += 1
                if self.first_refusal is None:
                    self.first_refusal = time.time()
                wait = retry_after_from_metadata(exc.trailing_metadata()) or 0.05
                if honour_retry_after:
                    time.sleep(min(wait, max(0.0, deadline - time.time())))
                continue
            self.accepted_at.append(time.time())
            bands = {jigsaw_pb2.ProbabilityBand.Name(c.band) for c in response.candidates}
            self.confirmed += bool(bands & CONFIRMING_BANDS)


def _warm_up(address: str, root: Path, request: jigsaw_pb2.MatchRequest) -> None:
    """One Match from another node identity, so the model is fitted before the probe and
    the insider's figures count only its own calls (the limits are per node)."""
    tls = tls_files_for(root / "pki", f"{WARM_UP_AGENCY}-node")
    with secure_channel(address, tls) as channel:
        stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        stub.Match(request, timeout=120.0)


def _alert_times(audit_log: Path) -> list[float]:
    """Wall-clock seconds of the matcher's ``enumeration_alert`` audit entries."""
    times = []
    for line in audit_log.read_text("utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("action") == "enumeration_alert":
            stamp = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
            times.append(stamp.timestamp())
    return times


def _start_matcher(
    root: Path, *, lifted: bool, limits: Mapping[str, str | float] | None
) -> tuple[launcher.Service, Path]:
    """A matcher process with the demo config, its ``[match_limits]`` lifted or replaced
    by ``limits`` (None: the shipped defaults)."""
    directory = root / ("matcher-lifted" if lifted else "matcher")
    directory.mkdir(parents=True, exist_ok=True)
    config = launcher.write_matcher_config(root)
    if directory != config.parent:  # the demo writes root/matcher/; this run gets its own
        moved = directory / "matcher.toml"  # same depth, so "../pki/" still resolves
        moved.write_text(config.read_text("utf-8"), "utf-8")
        config = moved
    if lifted:
        _set_limits(config, LIFTED_LIMITS)
    elif limits:
        _set_limits(config, limits)
    service = launcher.start_service(
        directory.name, ["matcher", "serve", "--config", str(config)], directory
    )
    launcher.wait_ready([service])
    return service, config


def run_insider(
    *,
    children: int = 2_000,
    seed: int = 7,
    probe_seconds: float = 150.0,
    population: int = 1_000_000,
    unlimited_seconds: float = UNLIMITED_SECONDS,
    limits: Mapping[str, str | float] | None = None,
    workdir: Path | None = None,
    emit: Emit | None = None,
) -> dict[str, Any]:
    """Measure insider probing (module docstring); returns one row of figures (``None`` for
    an alert not raised). ``limits`` replaces some ``[match_limits]`` values (tests)."""
    from server.common.pki import init_pki

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="jigsaw-insider-"))
    root.mkdir(parents=True, exist_ok=True)
    init_pki(root / "pki", agencies=launcher.AGENCIES, staff=[], operators=[launcher.OPERATOR])
    secret = LinkageSecret.generate()
    (root / "secret.hex").write_text(secret.to_hex() + "\n", "ascii")
    os.chmod(root / "secret.hex", 0o600)
    keys = KeySet(secret)
    people = synthetic.generate_population(children, seed=seed)
    requests = _probe_requests(people, keys, 5_000, seed)
    tls = tls_files_for(root / "pki", f"{INSIDER_AGENCY}-node")
    row: dict[str, Any] = {"stage": "insider", "children": children}

    services: list[launcher.Service] = []
    try:
        matcher, config = _start_matcher(root, lifted=False, limits=limits)
        services.append(matcher)
        configured = _match_limits(config)
        with secure_channel(matcher.address(), tls) as channel:
            stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
            row["indexed_records"] = _publish(stub, people, keys)
            _warm_up(matcher.address(), root, requests[0])
            _progress(
                f"matcher serving {row['indexed_records']} records with [match_limits] "
                f"{configured}; probing for {probe_seconds:.0f} s"
            )
            probe = _Probe(stub, requests)
            started = time.time()
            probe.run(probe_seconds, honour_retry_after=True)
        alerts = [t for t in _alert_times(config.parent / "audit.jsonl") if t >= started]
        accepted = np.asarray(probe.accepted_at)
        burst = (
            int((accepted < probe.first_refusal).sum()) if probe.first_refusal else accepted.size
        )
        if probe.first_refusal is not None:
            span = started + probe_seconds - probe.first_refusal
            after = int((accepted >= probe.first_refusal).sum())
            sustained = 60.0 * after / span if span > 0 else 0.0
        else:
            sustained = 60.0 * accepted.size / probe_seconds
        row.update(
            {"configured_" + key: value for key, value in configured.items()},
            probe_seconds=probe_seconds,
            accepted=int(accepted.size),
            refused=probe.refused,
            burst_accepted=burst,
            sustained_per_minute=sustained,
            confirmed_share=probe.confirmed / max(1, accepted.size),
            alert_raised=bool(alerts),
            alert_after_s=(alerts[0] - started) if alerts else None,
            # calls accepted before the alert; the call that raised it may be a refused one
            # (refused calls count towards the alert too)
            alert_after_accepted=int((accepted < alerts[0]).sum()) if alerts else None,
        )
        launcher.stop_services(services)
        services.clear()

        lifted, _ = _start_matcher(root, lifted=True, limits=None)
        services.append(lifted)
        with secure_channel(lifted.address(), tls) as channel:
            stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
            _publish(stub, people, keys)
            _warm_up(lifted.address(), root, requests[0])
            _progress(f"limits lifted: probing for {unlimited_seconds:.0f} s")
            free = _Probe(stub, requests)
            free.run(unlimited_seconds, honour_retry_after=False)
        row["unlimited_per_minute"] = 60.0 * len(free.accepted_at) / unlimited_seconds
    finally:
        launcher.stop_services(services)

    cap = configured.get("max_matches_per_hour", math.inf)
    per_day = min(24 * cap, 1440 * row["sustained_per_minute"])
    unlimited_day = 1440 * row["unlimited_per_minute"]
    row.update(
        population=population,
        tests_per_day=per_day,
        share_per_day=min(1.0, per_day / population),
        share_per_week=min(1.0, 7 * per_day / population),
        days_for_population=population / per_day if per_day else None,
        unlimited_tests_per_day=unlimited_day,
        unlimited_days_for_population=population / unlimited_day if unlimited_day else None,
    )
    _progress(
        f"accepted {row['accepted']} (first burst {row['burst_accepted']}), refused "
        f"{row['refused']}, sustained {row['sustained_per_minute']:.1f}/min, alert "
        + (f"after {row['alert_after_s']:.0f} s" if alerts else "not raised")
    )
    if emit:
        emit(row)
    return row


def insider_report(row: dict[str, Any]) -> str:
    """The insider-probing part of the attack section of RESULTS.md."""
    alert = (
        f"after {row['alert_after_s']:.0f} s, "
        f"{row['alert_after_accepted']:,} calls accepted before it"
        if row["alert_raised"]
        else f"not within the {row['probe_seconds']:.0f} s probe"
    )
    return (
        "### Insider probing (measured on a real matcher)\n\n"
        f"A node that holds the key calls `Match` directly with its node certificate, one guessed"
        f" identity per call, honouring each refusal's retry-after, for"
        f" {row['probe_seconds']:.0f} s against a matcher process (mutual TLS, loopback) with"
        f" the shipped `[match_limits]` ({row['configured_matches_per_minute']:.0f} per minute,"
        f" burst {row['configured_burst']:.0f}, alert above"
        f" {row['configured_enumeration_alert_per_hour']:.0f} in an hour, at most"
        f" {row['configured_max_matches_per_hour']:.0f} in an hour) and"
        f" {row['indexed_records']:,} published records"
        f" (`benchmarks/insider.py`).\n\n"
        "| figure | value |\n|---|---|\n"
        f"| calls accepted in the first burst | {row['burst_accepted']:,} |\n"
        f"| sustained accepted rate | {row['sustained_per_minute']:.1f} per minute |\n"
        f"| calls refused (RESOURCE_EXHAUSTED) | {row['refused']:,} |\n"
        f"| enumeration alert in the matcher's audit log | {alert} |\n"
        f"| probes answered with a high or very high band | {row['confirmed_share']:.3f} |\n"
        "| identities testable per day (measured rate, hourly cap) |"
        f" {row['tests_per_day']:,.0f} |\n"
        f"| share of {row['population']:,} children per day / per week |"
        f" {row['share_per_day']:.4f} / {row['share_per_week']:.4f} |\n"
        f"| days to test all {row['population']:,} | {row['days_for_population']:.1f} |\n"
        f"| without the matcher's limits: accepted rate | {row['unlimited_per_minute']:,.0f} per"
        f" minute ({row['unlimited_days_for_population']:.2f} days for all) |\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="insider probing against a real matcher")
    parser.add_argument("--children", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=150.0, help="probe duration")
    parser.add_argument("--population", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    row = run_insider(
        children=args.children,
        seed=args.seed,
        probe_seconds=args.seconds,
        population=args.population,
        workdir=args.workdir,
    )
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
