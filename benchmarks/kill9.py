"""kill -9 during ingest, publish and link, measured: records lost and duplicated.

Real processes, as an operator runs them: ``jigsaw ingest`` and ``jigsaw publish`` (the
node's jobs), ``jigsaw matcher serve``, and a link (``jigsaw link``, or an operator's client
streaming ``Link`` progress), mutual TLS on loopback, SQLite stores. At each kill point one
process gets SIGKILL at a chosen point of progress, read from outside the process (no hook
in the code): rows committed in the node store, rows held by the matcher's store, or the
``Link`` progress stream. The killed process is restarted (a matcher on its own store), the
job is run again to the end, and the counts are checked:

* ingest: the store holds every row of the CSV once (rows = distinct local ids = CSV rows);
* publish: the matcher holds every record of the node once (records counted as the e2e tests
  count them, a record published as forms once), and the node has nothing left pending;
* link: the stored result covers every record the matcher holds (its ``total_records``), no
  record is in two clusters, and it has the clusters and clustered records of a link run
  without a kill.

Points (:data:`POINTS`, 20 in all): ``jigsaw ingest`` after 1-4 chunks committed;
``jigsaw publish`` killed after 1, 3, 8 and 15 batches reached the matcher; the matcher killed
mid-publish after 1, 4, 9 and 16 batches; the matcher killed mid-link at the queued, snapshot,
blocking, comparing, fitting and clustering stages; ``jigsaw link`` killed as its link begins
and 0.3 s later. A kill that lands after the job already finished is reported as such
(``killed`` false; the counts are still checked).

Run: ``python -m benchmarks.kill9 [--report]`` (a JSON line per point on
stdout). The test suite runs four points (tests/benchmarks/test_kill9.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from linkage import synthetic
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server import launcher
from server.common.tls import secure_channel, tls_files_for
from server.node.config import CHUNK_ROWS

REPO = Path(__file__).resolve().parent.parent
AGENCY = "health"
PUBLISH_BATCH = 200
POLL_S = 0.005
WAIT_S = 120.0


@dataclass(frozen=True)
class Point:
    """One kill: which job, which process, and the progress at which it is killed."""

    name: str
    job: str  # "ingest" | "publish" | "link"
    victim: str  # "client" (the jigsaw job) | "matcher"
    at: int  # ingest: chunks committed; publish: batches at the matcher; link: stage index


LINK_STAGES = ("queued", "snapshot", "blocking", "comparing", "fitting", "clustering", "storing")

POINTS: tuple[Point, ...] = (
    *(Point(f"ingest after {n} chunks", "ingest", "client", n) for n in (1, 2, 3, 4)),
    *(Point(f"publish after {n} batches", "publish", "client", n) for n in (1, 3, 8, 15)),
    *(Point(f"matcher mid-publish, {n} batches", "publish", "matcher", n) for n in (1, 4, 9, 16)),
    *(
        Point(f"matcher mid-link, {LINK_STAGES[i]}", "link", "matcher", i)
        for i in (0, 1, 2, 3, 4, 5)
    ),
    Point("jigsaw link at the start", "link", "client", 0),
    Point("jigsaw link mid-link", "link", "client", 3),
)
#: The points the test suite runs (one per job and victim).
SUITE_POINTS = (
    "ingest after 2 chunks",
    "publish after 3 batches",
    "matcher mid-publish, 4 batches",
    "matcher mid-link, comparing",
)


def jigsaw(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"jigsaw {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "client.cli", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL ``process``; False when it had already exited (the kill came too late)."""
    alive = process.poll() is None
    if alive:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return alive


def count(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def wait_until(predicate: Callable[[], bool], process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if process is not None and process.poll() is not None:
            return  # the job finished first: the kill comes too late, reported as such
        if time.monotonic() > deadline:
            raise TimeoutError("the kill point was never reached")
        time.sleep(POLL_S)


class Bench:
    """One federation directory: PKI, secret, the agency's CSV, a matcher, the node config;
    and templates (an ingested node store, a published matcher store) that points start from.
    The node's ingest commits every ``chunk_rows`` rows (``node.ingest_chunk_rows``)."""

    def __init__(self, root: Path, children: int, chunk_rows: int = CHUNK_ROWS) -> None:
        self.root = root
        self.chunk_rows = chunk_rows
        self.pki = str(root / "pki")
        jigsaw("pki", "init", "--dir", self.pki, f"--agency={AGENCY}", "--operator", "olivia")
        jigsaw("secret", "init", "--out", str(root / "secret.hex"))
        (root / "data").mkdir()
        population = synthetic.generate_population(children, seed=9)
        self.rows = launcher.write_agency_csv(
            population.agencies[AGENCY], root / "data" / f"{AGENCY}.csv", bad_row=False
        )
        launcher.write_matcher_config(root)
        self.matcher_dir = root / "matcher"
        self.matcher_store = self.matcher_dir / "store.sqlite"
        self.node_store = root / AGENCY / "store.sqlite"
        self.matcher: launcher.Service | None = None
        self.start_matcher()
        self.config = self.write_config()
        jigsaw("ingest", "--config", str(self.config))
        self.ingested = self.snapshot(self.node_store, "ingested")
        jigsaw("publish", "--config", str(self.config))
        self.published_node = self.snapshot(self.node_store, "published-node")
        self.stop_matcher()
        self.published_matcher = self.snapshot(self.matcher_store, "published-matcher")
        self.start_matcher()
        self.reference_clusters = self.link_clusters(self.link_to_end())

    # -- processes and files

    def start_matcher(self) -> None:
        self.matcher = launcher.start_service(
            "matcher",
            ["matcher", "serve", "--config", str(self.matcher_dir / "matcher.toml")],
            self.matcher_dir,
        )
        launcher.wait_ready([self.matcher])

    def stop_matcher(self) -> None:
        if self.matcher is not None:
            launcher.stop_services([self.matcher])
            self.matcher = None

    def kill_matcher(self) -> bool:
        assert self.matcher is not None
        alive = kill(self.matcher.process)
        self.matcher = None
        return alive

    def write_config(self) -> Path:
        assert self.matcher is not None
        return launcher.write_node_config(
            self.root,
            AGENCY,
            self.matcher.address(),
            overrides={
                "node": {"publish_batch_size": PUBLISH_BATCH, "ingest_chunk_rows": self.chunk_rows}
            },
        )

    def snapshot(self, store: Path, name: str) -> Path:
        target = self.root / "templates" / name
        target.mkdir(parents=True)
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(store) + suffix)
            if source.exists():
                shutil.copy2(source, Path(str(target / store.name) + suffix))
        return target / store.name

    def restore(self, template: Path | None, store: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(store) + suffix).unlink(missing_ok=True)
        if template is not None:
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(template) + suffix)
                if source.exists():
                    shutil.copy2(source, Path(str(store) + suffix))

    # -- counts

    def node_rows(self) -> int:
        return count(self.node_store, "SELECT count(*) FROM records")

    def node_local_ids(self) -> int:
        return count(self.node_store, "SELECT count(DISTINCT local_id) FROM records")

    def matcher_rows(self) -> int:
        return count(self.matcher_store, "SELECT count(*) FROM encodings")

    def matcher_records(self) -> int:
        rows = self.matcher_rows()
        forms = count(self.matcher_store, "SELECT count(*) FROM forms")
        records = count(
            self.matcher_store, "SELECT count(DISTINCT agency || ' ' || record) FROM forms"
        )
        return rows - forms + records

    def link_to_end(self) -> str:
        assert self.matcher is not None
        out = jigsaw(
            "link", "--matcher", self.matcher.address(), "--pki", self.pki, "--identity", "olivia"
        ).stdout
        con = sqlite3.connect(self.matcher_store, timeout=10)
        try:
            (result_id,) = con.execute(
                "SELECT result_id FROM link_results WHERE status = 'complete' "
                "ORDER BY finished_at DESC LIMIT 1"
            ).fetchone()
        finally:
            con.close()
        assert "clusters" in out
        return str(result_id)

    def link_clusters(self, result_id: str) -> tuple[int, int, int]:
        """(clusters, member rows, distinct members) of a stored link result."""
        con = sqlite3.connect(self.matcher_store, timeout=10)
        try:
            texts = [
                row[0]
                for row in con.execute(
                    "SELECT cluster FROM link_clusters WHERE result_id = ?", (result_id,)
                )
            ]
        finally:
            con.close()
        members = [tuple(m) for text in texts for m in json.loads(text)["members"]]
        return len(texts), len(members), len(set(members))


@dataclass
class Outcome:
    point: str
    killed: bool  # False: the job had finished before the kill point was reached
    expected: int
    counted: int
    lost: int
    duplicated: int
    seconds: float


def _ingest(bench: Bench, point: Point) -> Outcome:
    bench.restore(None, bench.node_store)
    job = spawn("ingest", "--config", str(bench.config))
    wait_until(lambda: bench.node_rows() >= point.at * bench.chunk_rows, job)
    killed = kill(job)
    jigsaw("ingest", "--config", str(bench.config))
    rows, ids = bench.node_rows(), bench.node_local_ids()
    return Outcome(point.name, killed, bench.rows, rows, max(bench.rows - ids, 0), rows - ids, 0)


def _publish(bench: Bench, point: Point) -> Outcome:
    bench.stop_matcher()
    bench.restore(bench.ingested, bench.node_store)
    bench.restore(None, bench.matcher_store)
    bench.start_matcher()
    bench.config = bench.write_config()
    expected = bench.node_rows()
    job = spawn("publish", "--config", str(bench.config))
    wait_until(lambda: bench.matcher_rows() >= point.at * PUBLISH_BATCH, job)
    if point.victim == "client":
        killed = kill(job)
    else:
        killed = bench.kill_matcher()
        job.wait(timeout=WAIT_S)
        bench.start_matcher()
        bench.config = bench.write_config()
    jigsaw("publish", "--config", str(bench.config))
    records = bench.matcher_records()
    pending = count(
        bench.node_store,
        "SELECT count(*) FROM records WHERE deleted = 0 "
        "AND (published_hash IS NULL OR published_hash != content_hash)",
    )
    lost = max(expected - records, 0) + pending
    return Outcome(point.name, killed, expected, records, lost, max(records - expected, 0), 0)


def _link(bench: Bench, point: Point) -> Outcome:
    bench.stop_matcher()
    bench.restore(bench.published_matcher, bench.matcher_store)
    bench.start_matcher()
    assert bench.matcher is not None
    expected = bench.matcher_records()
    if point.victim == "client":
        job = spawn(
            "link", "--matcher", bench.matcher.address(), "--pki", bench.pki, "--identity", "olivia"
        )
        sql = "SELECT count(*) FROM link_results WHERE status != 'complete'"
        # the link's row is written when it begins; ``at`` tenths of a second later, mid-link
        wait_until(lambda: count(bench.matcher_store, sql) > 0, job)
        time.sleep(0.1 * point.at)
        killed = kill(job)
    else:
        killed = _kill_matcher_at_stage(bench, LINK_STAGES[point.at])
        bench.start_matcher()
    result_id = bench.link_to_end()
    clusters, members, distinct = bench.link_clusters(result_id)
    reference_clusters, _, reference_distinct = bench.reference_clusters
    total = count(
        bench.matcher_store,
        f"SELECT total_records FROM link_results WHERE result_id = '{result_id}'",
    )
    # a record is lost when the result does not cover it, or a clustered record is missing
    # or a cluster differs from the uninterrupted link's
    lost = (
        max(expected - total, 0)
        + max(reference_distinct - distinct, 0)
        + abs(clusters - reference_clusters)
    )
    duplicated = members - distinct + max(total - expected, 0)
    return Outcome(point.name, killed, expected, total, lost, duplicated, 0)


def _kill_matcher_at_stage(bench: Bench, stage: str) -> bool:
    """Stream Link progress as the operator; SIGKILL the matcher when ``stage`` begins."""
    assert bench.matcher is not None
    tls = tls_files_for(Path(bench.pki), "olivia")
    with secure_channel(bench.matcher.address(), tls) as channel:
        stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        try:
            for message in stub.Link(jigsaw_pb2.LinkRequest(), timeout=WAIT_S):
                if message.stage == stage:
                    return bench.kill_matcher()
        except grpc.RpcError:
            pass
    return bench.kill_matcher()  # the link ended before the stage: too late


JOBS = {"ingest": _ingest, "publish": _publish, "link": _link}


def run_points(
    points: Sequence[Point],
    *,
    children: int,
    chunk_rows: int = CHUNK_ROWS,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    root = Path(tempfile.mkdtemp(prefix="jigsaw-kill9-"))
    bench: Bench | None = None
    try:
        bench = Bench(root, children, chunk_rows)
        for point in points:
            started = time.perf_counter()
            outcome = JOBS[point.job](bench, point)
            outcome.seconds = round(time.perf_counter() - started, 1)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        if bench is not None:
            bench.stop_matcher()
        shutil.rmtree(root, ignore_errors=True)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kill9", description=__doc__)
    parser.add_argument("--children", type=int, default=22_000)  # 4 full ingest chunks
    parser.add_argument("--report", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    def show(outcome: Outcome) -> None:
        print(json.dumps(outcome.__dict__), flush=True)

    outcomes = run_points(POINTS, children=args.children, on_outcome=show)
    if args.report:
        from benchmarks.report import write_table_section

        write_table_section(
            "kill9",
            "kill -9 during ingest, publish and link",
            "benchmarks.kill9",
            argv,
            "Each point: one process killed with SIGKILL at the progress named, restarted, the "
            "job run to its end, then the counts checked (see benchmarks/kill9.py). "
            "'killed' is false when the job had finished before the point was reached.",
            [dict(outcome.__dict__) for outcome in outcomes],
        )
    return 0 if all(o.lost == 0 and o.duplicated == 0 for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
