"""The federation benchmark's lookup load: queries drawn from the population, fired at a node.

Role: the lookup half of :mod:`benchmarks.federation` (also used by
:mod:`benchmarks.console`). :func:`pick_queries` draws records of the synthetic population as
another agency typed them; :func:`run_lookups` sends them through a node's ``Lookup`` from
several caller threads, each with its own channel, and returns latency percentiles,
throughput, errors and the hit rate against the truth of :func:`child_of_references`.

Invariants: a failed lookup is counted (``_errors``), never fatal; in a paced run (``rate``)
a lookup's latency runs from the time it was due, so a server falling behind shows its
queueing delay; the truth is read from the node stores, never from what a lookup returned.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from linkage import synthetic
from server import launcher

QUERY_AGENCIES = ("police", "health", "school")
LOOKUP_PURPOSE = "s47_enquiry"
LOOKUP_NOTE = "federation benchmark"


@dataclass
class Query:
    identifiers: dict[str, str]
    agency: str
    local_id: str
    child: int


def pick_queries(
    population: synthetic.SyntheticData, count: int, seed: int, fields: Sequence[str]
) -> list[Query]:
    rng = np.random.default_rng(seed + 1)
    pool = [(a, i) for a in QUERY_AGENCIES for i in range(len(population.agencies[a]))]
    queries: list[Query] = []
    for p in rng.permutation(len(pool)).tolist():
        if len(queries) == count:
            break
        agency, row = pool[p]
        data = population.agencies[agency]
        identifiers = {
            f: str(data.columns[f][row]).strip()
            for f in fields
            if data.columns[f][row] and str(data.columns[f][row]).strip()
        }
        record_id = data.columns["record_id"][row]
        queries.append(Query(identifiers, agency, str(record_id), int(data.child_id[row])))
    return queries


def child_of_references(
    root: Path, population: synthetic.SyntheticData
) -> dict[tuple[str, str], tuple[int, str]]:
    """(agency, reference) -> (true child, local id), read from the node stores."""
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for agency in launcher.AGENCIES:
        data = population.agencies[agency]
        by_local = dict(zip(data.columns["record_id"], data.child_id.tolist(), strict=True))
        con = sqlite3.connect(root / agency / "store.sqlite")
        try:
            for local_id, reference in con.execute("SELECT local_id, reference FROM records"):
                if local_id in by_local:
                    out[(agency, reference)] = (by_local[local_id], local_id)
        finally:
            con.close()
    return out


def _percentile(values: NDArray[np.float64], q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


class _CollectorPauses:
    """A ``gc.callbacks`` hook: the longest garbage collection of this process (the
    benchmark's own callers), which stops every caller thread while it runs."""

    def __init__(self) -> None:
        self.longest_ms = 0.0
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            elapsed = (time.perf_counter() - self._started) * 1000.0
            self.longest_ms = max(self.longest_ms, elapsed)
            self._started = None


def run_lookups(
    address: str,
    tls: Any,
    queries: Sequence[Query],
    *,
    concurrency: int,
    max_seconds: float,
    truth: dict[tuple[str, str], tuple[int, str]],
    records_of_child: dict[int, int],
    holders: dict[int, dict[str, set[str]]],
    rate: float | None = None,
) -> dict[str, Any]:
    """Lookups from ``concurrency`` threads (own channel each), until count or time runs out.

    Closed loop (each thread sends its next lookup when the last returns) unless ``rate``:
    then lookup ``i`` is due at ``start + i / rate`` (an offered load of ``rate`` a second,
    at most ``concurrency`` in flight) and its latency runs from the time it was due, so a
    server that falls behind shows its queueing delay (no coordinated omission).
    """
    from client.client import NodeClient

    pauses = _CollectorPauses()
    clients = [NodeClient(address, tls) for _ in range(concurrency)]
    for client in clients:
        client.wait_ready()
        client.lookup(
            queries[0].identifiers, purpose_code=LOOKUP_PURPOSE, note=LOOKUP_NOTE
        )  # warm the connection
    latencies: list[float] = []
    hits = [0, 0]  # (lookups whose child has another record, of which found)
    ranks = [0, 0, 0]  # (lookup and agency holding another record of its child, top 1, top 5)
    errors = [0]
    lock = threading.Lock()
    next_query = [0]
    deadline = time.perf_counter() + max_seconds
    start_time = [time.perf_counter()]

    def worker(client: Any) -> None:
        while True:
            with lock:
                i = next_query[0]
                next_query[0] += 1
            if i >= len(queries) or time.perf_counter() > deadline:
                return
            query = queries[i]
            started = time.perf_counter()
            if rate is not None:
                due = start_time[0] + i / rate
                if due > started:
                    time.sleep(due - started)
                started = due
            try:
                response = client.lookup(
                    query.identifiers, purpose_code=LOOKUP_PURPOSE, note=LOOKUP_NOTE
                )
            except grpc.RpcError:  # counted and reported, never fatal
                with lock:
                    errors[0] += 1
                continue
            elapsed = time.perf_counter() - started
            others = [truth.get((c.agency, c.reference), (-1, "")) for c in response.candidates]
            found = any(child == query.child and local != query.local_id for child, local in others)
            held = [  # agencies holding another record of the child
                agency
                for agency, locals_ in holders.get(query.child, {}).items()
                if locals_ - {query.local_id if agency == query.agency else ""}
            ]
            ranked = {  # per agency, its candidates' children best first, the query excluded
                agency: [
                    child
                    for c, (child, local) in zip(response.candidates, others, strict=True)
                    if c.agency == agency
                    and not (agency == query.agency and local == query.local_id)
                ]
                for agency in held
            }
            with lock:
                latencies.append(elapsed)
                if records_of_child.get(query.child, 0) > 1:
                    hits[0] += 1
                    hits[1] += int(found)
                for children in ranked.values():
                    ranks[0] += 1
                    ranks[1] += int(children[:1] == [query.child])
                    ranks[2] += int(query.child in children[:5])

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    gc.callbacks.append(pauses)
    started = time.perf_counter()
    start_time[0] = started
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.callbacks.remove(pauses)
    wall = time.perf_counter() - started
    for client in clients:
        client.close()
    ms = np.asarray(latencies) * 1000.0
    prefix = f"lookup_c{concurrency}" if rate is None else f"lookup_r{rate:g}"
    return {
        f"{prefix}_count": int(ms.size),
        f"{prefix}_errors": errors[0],
        f"{prefix}_p50_ms": _percentile(ms, 50),
        f"{prefix}_p99_ms": _percentile(ms, 99),
        f"{prefix}_per_s": ms.size / wall if wall > 0 else 0.0,
        f"{prefix}_hit_rate": hits[1] / hits[0] if hits[0] else float("nan"),
        f"{prefix}_top1": ranks[1] / ranks[0] if ranks[0] else float("nan"),
        f"{prefix}_top5": ranks[2] / ranks[0] if ranks[0] else float("nan"),
        f"{prefix}_harness_gc_max_ms": pauses.longest_ms,
        f"_{prefix}_latencies_ms": ms,
    }
