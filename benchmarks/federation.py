"""Federation benchmark: a real matcher and real agency nodes on loopback with mutual TLS.

Role: the operator's end-to-end figures for a deployment on one machine. Everything runs
exactly as an operator would run it — ``jigsaw matcher serve`` and four ``jigsaw node
serve`` processes (:mod:`server.launcher`), each agency's records ingested by the node's own
code and published by four concurrent ``jigsaw publish`` processes, lookups through a node's
``Lookup`` RPC as a unit staff member, a batch ``Link`` as the operator — on the seeded
synthetic four-agency population (about :data:`RECORDS_PER_CHILD` records per child).
Certificates come from :func:`server.common.pki.init_pki` and a fresh
:class:`~linkage.keys.LinkageSecret`; everything lives in a temporary directory removed at
the end (``keep=True`` keeps it). :func:`run_federation` lists the figures it reports;
``benchmarks/RESULTS.md`` holds them.

Rate limits of the nodes are raised in their config for the benchmark (the limiter and the
enumeration guard still run on every lookup). Progress lines go to standard error.
The lookup load (queries, caller threads, latency figures) is
:mod:`benchmarks.federation_lookups`.
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.federation_lookups import (
    LOOKUP_NOTE,
    LOOKUP_PURPOSE,
    child_of_references,
    pick_queries,
    run_lookups,
)
from linkage import evaluate, synthetic
from linkage.keys import LinkageSecret
from server import launcher

RECORDS_PER_CHILD = 2.26
STAFF = ("alice", "childrens_social_care")
OPERATOR = "olivia"
#: Offered load (lookups a second) of the paced lookup run (the target: 300 at p99 <= 50 ms).
LOOKUP_RATE = 300.0
Emit = Callable[[dict[str, Any]], None]


def _progress(message: str) -> None:
    print(f"[federation {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _keep(figures: dict[str, Any], row: dict[str, Any]) -> None:
    figures.update((k, v) for k, v in row.items() if k != "stage")


def _rss_bytes(pid: int) -> int:
    """VmRSS of process ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


#: Limits raised far above any rate the benchmark reaches: it measures the services, not them.
UNLIMITED_NODE = {
    "rate_limits": {
        "lookups_per_minute": 100_000_000,
        "burst": 1_000_000,
        "enumeration_alert_per_hour": 100_000_000,
    }
}
UNLIMITED_MATCHER = {
    "match_limits": {
        "matches_per_minute": 100_000_000,
        "burst": 1_000_000,
        "enumeration_alert_per_hour": 100_000_000,
        "max_matches_per_hour": 100_000_000,
    }
}


def _node_config(root: Path, agency: str, matcher_address: str, batch_size: int) -> Path:
    """The demo node config with the benchmark's publish batch and raised rate limits."""
    overrides = launcher.merged(UNLIMITED_NODE, {"node": {"publish_batch_size": batch_size}})
    return launcher.write_node_config(root, agency, matcher_address, overrides=overrides)


def _matcher_config(root: Path) -> Path:
    """The demo matcher config with its per-node Match limits raised for the benchmark: its
    lookups run hundreds a second through one node, which the defaults would refuse."""
    return launcher.write_matcher_config(root, overrides=UNLIMITED_MATCHER)


@dataclass
class _Member:
    agency: str
    reference: str


@dataclass
class _Cluster:
    members: list[_Member]


def _clusters_from_matcher_store(path: Path, result_id: str) -> list[_Cluster]:
    """A link result's clusters read from the matcher's store file (benchmark fallback only)."""
    import json

    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT cluster FROM link_clusters WHERE result_id = ? ORDER BY ordinal", (result_id,)
        ).fetchall()
    finally:
        con.close()
    return [_Cluster([_Member(a, r) for a, r in json.loads(text)["members"]]) for (text,) in rows]


def _score_clusters(
    clusters: Sequence[Any], truth: dict[tuple[str, str], tuple[int, str]]
) -> dict[str, float]:
    keys = sorted(truth)
    position = {k: i for i, k in enumerate(keys)}
    labels = np.arange(len(keys), dtype=np.int64)
    for cluster in clusters:
        members = [
            position[(m.agency, m.reference)]
            for m in cluster.members
            if (m.agency, m.reference) in position
        ]
        if members:
            labels[members] = min(members)
    child = np.array([truth[k][0] for k in keys], dtype=np.int64)
    from linkage.solve import pairs_from_labels

    ti, tj = evaluate.true_pairs_from_entities(child)
    pi, pj = pairs_from_labels(labels)
    q = evaluate.pairwise_quality(pi, pj, ti, tj)
    return {"link_precision": q.precision, "link_recall": q.recall, "link_f1": q.f1}


def run_federation(
    records: int,
    *,
    seed: int,
    emit: Emit,
    lookups: int = 2000,
    lookup_seconds: float = 30.0,
    publish_batch_size: int = 2000,
    link: bool = True,
    library: bool = False,
    workdir: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the federation benchmark on about ``records`` records (see the module docstring).

    Returns every figure (keys starting with ``_`` hold raw arrays for plots, not figures).

    Figures (one row per stage to ``emit``; the returned dict holds them all):

    * ``ingest_*``: CSV → node store, per agency in turn, in-process (``server.node.ingest``).
    * ``publish_records_per_s``: records published / wall time of the four concurrent
      ``jigsaw publish`` processes (node encoding + proto + matcher store + index, both cores
      shared by all five processes); ``matcher_publish_cpu_s`` and
      ``matcher_publish_records_per_cpu_s`` isolate the matcher's share (user + system CPU of the
      matcher process over the publish, from ``/proc/<pid>/stat``).
    * ``matcher_rss_*`` and ``matcher_bytes_per_record``: VmRSS of the matcher process (from
      ``/proc/<pid>/status``) before and after publishing, difference divided by records indexed.
    * ``lookup_c{1,32}_*``: p50/p99 latency (ms) and lookups/s through the children's social care
      node's ``Lookup`` at concurrency 1 and 32 (threads, each with its own channel), bounded by
      a count and a time budget; queries are records of the synthetic data as another agency
      typed them (police, health or school), all their non-empty linkage fields. ``hit_rate`` is
      the share of lookups whose candidates include a record of the same child (the query
      record itself excluded), among queries whose child has another record. ``top1`` and
      ``top5``: for each lookup and each agency holding another record of its child, whether
      the child's record is that agency's first candidate, or among its first five.
    * ``lookup_r300_*``: the same with an offered load of ``LOOKUP_RATE`` (300) lookups a second
      from 32 callers (lookup ``i`` due at ``i / 300`` s; latency from the time it was due), so
      p99 is measured at the target throughput rather than at whatever a closed loop
      of 32 callers queues up to (by Little's law 32 callers always in flight at 300/s wait
      107 ms on average, whatever the server).
    * ``link_seconds``: the ``Link`` RPC from the request to the result id (run after the
      lookups, which therefore use the model the matcher fits on a sample at the first lookup);
      ``link_matcher_peak_rss_mb`` the matcher's peak VmRSS meanwhile; ``link_precision``,
      ``link_recall``, ``link_f1`` score the stored clusters (fetched with ``GetLinkResult``,
      or read from the matcher's store file when a cluster is too large for one message,
      flagged ``link_result_error``), mapped back to the true children through the node stores;
      ``library_f1`` is :func:`benchmarks.quality.run_synthetic` on the same population
      (in-process library run), when asked for.
    """
    from client.client import MatcherClient
    from server.common.pki import init_pki
    from server.common.tls import tls_files_for
    from server.node.config import load_node_config
    from server.node.ingest import ingest_source
    from server.node.store import NodeStore

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="jigsaw-federation-"))
    root.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"records_requested": records}
    services: list[launcher.Service] = []
    try:
        init_pki(root / "pki", agencies=launcher.AGENCIES, staff=[STAFF], operators=[OPERATOR])
        secret = root / "secret.hex"
        secret.write_text(LinkageSecret.generate().to_hex() + "\n", "ascii")
        os.chmod(secret, 0o600)

        children = max(1, round(records / RECORDS_PER_CHILD))
        started = time.perf_counter()
        population = synthetic.generate_population(children, seed=seed)
        (root / "data").mkdir(exist_ok=True)
        total = 0
        for name in launcher.AGENCIES:
            total += launcher.write_agency_csv(
                population.agencies[name], root / "data" / f"{name}.csv", bad_row=False
            )
        figures.update(children=children, records=total)
        _progress(
            f"{total} records of {children} children generated and written to CSV in "
            f"{time.perf_counter() - started:.1f} s (workdir {root})"
        )

        matcher = launcher.start_service(
            "matcher",
            ["matcher", "serve", "--config", str(_matcher_config(root))],
            root / "matcher",
        )
        services.append(matcher)
        launcher.wait_ready([matcher])
        configs = {
            a: _node_config(root, a, matcher.address(), publish_batch_size)
            for a in launcher.AGENCIES
        }
        nodes = {
            a: launcher.start_service(
                f"{a}-node", ["node", "serve", "--config", str(configs[a])], root / a
            )
            for a in launcher.AGENCIES
        }
        services.extend(nodes.values())
        launcher.wait_ready(list(nodes.values()))
        _progress(f"matcher (pid {matcher.process.pid}) and 4 nodes serving")

        # ---- ingest (node code, in-process, one agency after another)
        started = time.perf_counter()
        for agency in launcher.AGENCIES:
            config = load_node_config(configs[agency])
            store = NodeStore(config.store)
            try:
                for source in config.sources:
                    ingest_source(store, source, config.schema)
            finally:
                store.close()
        ingest_s = time.perf_counter() - started
        row = {
            "stage": "ingest",
            "records": total,
            "ingest_seconds": ingest_s,
            "ingest_records_per_s": total / ingest_s,
        }
        _keep(figures, row)
        emit(row)
        _progress(f"ingested in {ingest_s:.1f} s")

        # ---- publish (four concurrent `jigsaw publish` processes)
        matcher_pid = matcher.process.pid
        rss_before = _rss_bytes(matcher_pid)
        cpu_before = _cpu_seconds(matcher_pid)
        started = time.perf_counter()
        publishers = []
        for agency in launcher.AGENCIES:
            log = open(root / agency / "publish.log", "wb")  # noqa: SIM115 - closed below
            publishers.append(
                (
                    agency,
                    log,
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "client.cli",
                            "publish",
                            "--config",
                            str(configs[agency]),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=Path(__file__).resolve().parent.parent,
                    ),
                )
            )
        peak_rss = rss_before
        while any(p.poll() is None for _, _, p in publishers):
            peak_rss = max(peak_rss, _rss_bytes(matcher_pid))
            time.sleep(0.2)
        publish_s = time.perf_counter() - started
        cpu_after = _cpu_seconds(matcher_pid)
        for agency, log, proc in publishers:
            log.close()
            if proc.returncode != 0:
                raise RuntimeError(f"publish for {agency} failed; see {root / agency}/publish.log")
        time.sleep(1.0)
        rss_after = _rss_bytes(matcher_pid)
        with MatcherClient(matcher.address(), tls_files_for(root / "pki", OPERATOR)) as mc:
            indexed = int(mc.status().indexed_records)
        matcher_cpu = cpu_after - cpu_before
        row = {
            "stage": "publish",
            "records": indexed,
            "publish_seconds": publish_s,
            "publish_records_per_s": indexed / publish_s,
            "matcher_publish_cpu_s": matcher_cpu,
            "matcher_publish_records_per_cpu_s": indexed / matcher_cpu if matcher_cpu else 0.0,
            "matcher_rss_before_mb": rss_before / 2**20,
            "matcher_rss_after_mb": rss_after / 2**20,
            "matcher_rss_peak_mb": peak_rss / 2**20,
            "matcher_bytes_per_record": (rss_after - rss_before) / max(1, indexed),
        }
        _keep(figures, row)
        emit(row)
        _progress(
            f"published {indexed} records in {publish_s:.1f} s "
            f"({indexed / publish_s:,.0f}/s); matcher CPU {matcher_cpu:.1f} s, "
            f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
        )

        truth = child_of_references(root, population)
        records_of_child: dict[int, int] = {}
        holders: dict[int, dict[str, set[str]]] = {}  # child -> agency -> its local ids
        for (agency, _), (child, local_id) in truth.items():
            records_of_child[child] = records_of_child.get(child, 0) + 1
            holders.setdefault(child, {}).setdefault(agency, set()).add(local_id)
        # ---- lookups through the children's social care node, as staff (none: skipped)
        if lookups > 0:
            from linkage.schema import default_child_schema

            queries = pick_queries(population, lookups, seed, default_child_schema().input_names)
            staff_tls = tls_files_for(root / "pki", STAFF[0])
            node_address = nodes[STAFF[1]].address()
            # without a link run, the first lookup makes the matcher fit its model on the whole
            # index, which can outlast the node's deadline: retry it, and keep it out of timings
            started = time.perf_counter()
            from client.client import NodeClient

            with NodeClient(node_address, staff_tls) as warm:
                while True:
                    try:
                        warm.lookup(
                            queries[0].identifiers, purpose_code=LOOKUP_PURPOSE, note=LOOKUP_NOTE
                        )
                        break
                    except grpc.RpcError:
                        if time.perf_counter() - started > 1800:
                            raise
                        time.sleep(2.0)
            figures["first_lookup_seconds"] = time.perf_counter() - started
            _progress(f"first lookup (fits the model) took {figures['first_lookup_seconds']:.1f} s")
            # The benchmark holds the whole population and its ground truth (millions of Python
            # objects); a full collection of them stops every caller thread for longer than a
            # lookup takes, which the figures would charge to the servers. Freeze them out of
            # the collector while the callers run (``*_harness_gc_max_ms`` shows what is left).
            gc.collect()
            gc.freeze()
            # closed loop at 1 and 32 callers, then an offered load of LOOKUP_RATE a second
            for concurrency, rate in ((1, None), (32, None), (32, LOOKUP_RATE)):
                prefix = f"lookup_c{concurrency}" if rate is None else f"lookup_r{rate:g}"
                _progress(f"lookups: {prefix} (at most {len(queries)} or {lookup_seconds:g} s)")
                pids = {
                    "matcher": matcher_pid,
                    "node": nodes[STAFF[1]].process.pid,
                    "client": os.getpid(),
                }
                cpu_start = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                result = run_lookups(
                    node_address,
                    staff_tls,
                    queries,
                    concurrency=concurrency,
                    max_seconds=lookup_seconds,
                    truth=truth,
                    records_of_child=records_of_child,
                    holders=holders,
                    rate=rate,
                )
                done = max(1, result[f"{prefix}_count"])
                for name, pid in pids.items():
                    result[f"{prefix}_{name}_cpu_ms_per_lookup"] = (
                        1000.0 * (_cpu_seconds(pid) - cpu_start[name]) / done
                    )
                figures.update(result)
                row = {"stage": prefix, "records": indexed}
                row.update({k: v for k, v in result.items() if not k.startswith("_")})
                emit(row)
            gc.unfreeze()

        # ---- batch link as the operator
        if link:
            _progress("batch link")
            with MatcherClient(matcher.address(), tls_files_for(root / "pki", OPERATOR)) as mc:
                started = time.perf_counter()
                last_stage = [""]

                def on_progress(p: Any) -> None:
                    if p.stage != last_stage[0]:
                        last_stage[0] = p.stage
                        _progress(f"link stage {p.stage} ({time.perf_counter() - started:.1f} s)")

                peak = [_rss_bytes(matcher_pid)]
                linking = threading.Event()

                def watch_memory() -> None:
                    while not linking.wait(0.5):
                        peak[0] = max(peak[0], _rss_bytes(matcher_pid))

                watcher = threading.Thread(target=watch_memory, daemon=True)
                watcher.start()
                try:
                    result_id = mc.link(on_progress=on_progress)
                finally:
                    linking.set()
                    watcher.join()
                link_s = time.perf_counter() - started
                row = {
                    "stage": "link",
                    "records": indexed,
                    "link_seconds": link_s,
                    "link_matcher_peak_rss_mb": peak[0] / 2**20,
                }
                clusters: list[Any]
                try:
                    clusters = [
                        c
                        for page in mc.link_result_pages(result_id, page_size=100)
                        for c in page.clusters
                    ]
                except grpc.RpcError as exc:  # a cluster too large for one message
                    row["link_result_error"] = str(exc.code())
                    clusters = _clusters_from_matcher_store(
                        root / "matcher" / "store.sqlite", result_id
                    )
                    row["link_scored_from"] = "matcher store (GetLinkResult failed)"
                row["link_clusters"] = len(clusters)
                row["link_largest_cluster"] = max((len(c.members) for c in clusters), default=0)
                row.update(_score_clusters(clusters, truth))
            _keep(figures, row)
            emit(row)
        if library:
            from benchmarks import quality

            _progress("library link on the same population (benchmarks.quality)")
            lib = quality.run_synthetic(children, seed)
            row = {
                "stage": "library",
                "records": lib.records,
                "library_precision": lib.precision,
                "library_recall": lib.recall,
                "library_f1": lib.f1,
                "library_seconds": lib.seconds,
            }
            _keep(figures, row)
            emit(row)
    finally:
        codes = launcher.stop_services(services)
        bad = [(n, c) for n, c in codes if c != 0]
        if bad:
            _progress(f"services exited with {bad}; logs in {root}")
        if not keep and workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return figures
