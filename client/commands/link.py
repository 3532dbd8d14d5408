"""``jigsaw link`` and ``linked``: an operator's batch link, and each agency's share of it.

Contract: an output file's suffix (.csv or .jsonl) is checked before any call is made; files
hold full references and are written mode 0600 by :mod:`client.exports`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from client.commands.common import (
    EXIT_OK,
    add_identity_args,
    add_node_target_args,
    node_target,
    out,
    progress,
    tls,
)
from client.output import printable


def cmd_link(args: argparse.Namespace) -> int:
    from client.client import MatcherClient
    from client.exports import file_format, write_link_result

    out_path = Path(args.out) if args.out else None
    if out_path is not None:
        file_format(out_path)  # refuse an unknown suffix before the link runs
    with MatcherClient(args.matcher, tls(args)) as matcher, progress() as bar:
        tasks: dict[str, Any] = {}

        def on_progress(p: Any) -> None:
            if p.stage and p.stage not in tasks:
                tasks[p.stage] = bar.add_task(p.stage, total=p.total or None)
            if p.stage:
                bar.update(tasks[p.stage], completed=p.done, total=p.total or None)

        result_id = matcher.link(min_probability=args.min_probability, on_progress=on_progress)
        fetch = bar.add_task("fetch clusters", total=None)
        shown: list[Any] = []
        total = 0

        def clusters() -> Iterator[Any]:
            nonlocal total
            for page in matcher.link_result_pages(result_id):
                total = page.total_clusters
                bar.update(fetch, advance=len(page.clusters), total=total)
                for cluster in page.clusters:
                    if len(shown) < args.show:
                        shown.append(cluster)
                    yield cluster

        if out_path is not None:
            write_link_result(out_path, clusters())
        else:
            for _ in clusters():
                if len(shown) >= args.show:
                    break
    out.print(f"link result {result_id}: {total} clusters of two or more records")
    if out_path is not None:
        out.print(f"every cluster written to {printable(str(out_path))} (mode 0600)")
    table = Table("cluster", "members")
    for c in shown:
        table.add_row(c.cluster_id, ", ".join(f"{m.agency}:{m.reference[:8]}" for m in c.members))
    out.print(table)
    return EXIT_OK


def cmd_linked(args: argparse.Namespace) -> int:
    from client.client import NodeClient
    from client.exports import file_format, write_linked_records

    out_path = Path(args.out)
    file_format(out_path)
    address, agency = node_target(args)
    with NodeClient(address, tls(args), agency=agency) as node:
        if args.fetch:
            fetched = node.fetch_linked(args.result or "")
            out.print(
                f"fetched link result {printable(fetched.result_id)}: "
                f"{fetched.linked_records} records known to other agencies"
            )
        with progress() as bar:
            task = bar.add_task("linked records", total=None)
            first: list[Any] = []

            def records() -> Iterator[Any]:
                for page in node.linked_pages():
                    if not first:
                        first.append(page)
                    bar.update(task, advance=len(page.records), total=page.total_records)
                    yield from page.records

            written = write_linked_records(out_path, records())
    result = printable(first[0].result_id) if first and first[0].result_id else "none fetched"
    out.print(
        f"{written} records known to other agencies (link result {result}) written to "
        f"{printable(str(out_path))} (mode 0600)"
    )
    return EXIT_OK


def add_link(sub: Any) -> None:
    """``link``."""
    ln = sub.add_parser("link", help="operator: batch-link all agencies")
    ln.add_argument("--matcher", required=True)
    add_identity_args(ln)
    ln.add_argument("--min-probability", type=float, default=0.0)
    ln.add_argument("--show", type=int, default=10, help="clusters to show on the terminal")
    ln.add_argument(
        "--out",
        help="write every cluster, full references and the band and evidence of its edges, "
        "to this file (.csv: one row per edge; .jsonl: one cluster a line; mode 0600)",
    )
    ln.set_defaults(func=cmd_link)


def add_linked(sub: Any) -> None:
    """``linked``."""
    lkd = sub.add_parser(
        "linked", help="an agency's records known to other agencies after a batch link"
    )
    add_node_target_args(lkd)
    lkd.add_argument("--out", required=True, help="file to write (.csv or .jsonl; mode 0600)")
    lkd.add_argument(
        "--fetch",
        action="store_true",
        help="operator: first have the node fetch its share of a link result from the matcher",
    )
    lkd.add_argument("--result", help="with --fetch: the link result id (default: the latest)")
    lkd.set_defaults(func=cmd_linked)
