"""``jigsaw lookup``, ``disclose`` and ``resolve``: what unit staff ask of their own node.

Contract: a lookup names a purpose code and the staff member's note (the note stays in her
node's audit log); ``lookup --from`` runs a paced, resumable batch through
:mod:`client.batch`; everything a node sent is printed through
:func:`client.output.printable`, and disclosed fields go to a 0600 CSV file with ``--csv``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from client.commands.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_identity_args,
    add_node_target_args,
    err,
    node_target,
    out,
    progress,
    tls,
)
from client.exports import AGREEMENT_NAMES, BAND_NAMES, evidence_text
from client.output import printable, write_private_csv


def cmd_lookup(args: argparse.Namespace) -> int:
    from client.client import NodeClient

    if args.from_file:
        return _batch_lookup(args)
    identifiers: dict[str, str] = {}
    for item in args.field:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print("--field: expected FIELD=VALUE")
            return EXIT_USAGE
        identifiers[key] = value
    address, agency = node_target(args)
    with NodeClient(address, tls(args), agency=agency) as node:
        response = node.lookup(
            identifiers, purpose_code=args.purpose, note=args.note, max_candidates=args.max
        )
    if args.json:
        print(json.dumps(_lookup_json(response)))
        return EXIT_OK
    table = Table("agency", title=f"lookup {printable(response.lookup_id)}")
    # the reference is what a disclosure request needs: shown whole, never cut to the width
    table.add_column("reference", no_wrap=True, min_width=32)
    table.add_column("match")
    table.add_column("evidence")
    for c in response.candidates:
        table.add_row(
            printable(c.agency),
            printable(c.reference),
            BAND_NAMES.get(c.band, "?"),
            printable(evidence_text(c.evidence)),
        )
    out.print(table if response.candidates else "no agency holds a matching record")
    for note in response.notes:
        out.print(f"note: {printable(note)}")
    return EXIT_OK


def _batch_lookup(args: argparse.Namespace) -> int:
    from client.batch import read_queries, run_batch
    from client.client import NodeClient

    if not args.out or args.field:
        err.print("--from: give --out FILE (JSON Lines) and no --field")
        return EXIT_USAGE
    columns: dict[str, str] = {}
    for item in args.column:
        key, sep, column = item.partition("=")
        if not sep or not key or not column:
            err.print("--column: expected FIELD=COLUMN")
            return EXIT_USAGE
        columns[key] = column
    source = Path(args.from_file)
    total = sum(1 for _ in read_queries(source, columns or None, args.id_column))
    address, agency = node_target(args)
    with NodeClient(address, tls(args), agency=agency) as node, progress() as bar:
        task = bar.add_task("lookups", total=total)
        report = run_batch(
            node,
            read_queries(source, columns or None, args.id_column),
            Path(args.out),
            purpose_code=args.purpose,
            note=args.note,
            per_minute=args.per_minute,
            max_candidates=args.max,
            progress=lambda r: bar.update(
                task,
                completed=r.rows,
                description=(
                    f"lookups: waiting {r.waiting_s:,.0f} s for the rate limits"
                    if r.waiting_s
                    else "lookups"
                ),
            ),
        )
        bar.update(task, completed=report.rows)
    out.print(
        f"{report.rows} rows: {report.done} looked up, {report.invalid} refused as invalid "
        f"(their line and field are in {printable(args.out)}), {report.skipped} already done"
    )
    return EXIT_OK


def _lookup_json(response: Any) -> dict[str, Any]:
    return {
        "lookup_id": response.lookup_id,
        "notes": list(response.notes),
        "candidates": [
            {
                "agency": c.agency,
                "reference": c.reference,
                "band": BAND_NAMES.get(c.band, "?"),
                "evidence": {e.field: AGREEMENT_NAMES.get(e.agreement, "?") for e in c.evidence},
            }
            for c in response.candidates
        ],
    }


def cmd_disclose(args: argparse.Namespace) -> int:
    from client.client import NodeClient

    with NodeClient(args.node, tls(args)) as node:
        response = node.disclose(
            args.reference, purpose_code=args.purpose, note=args.note, priority=args.priority or ""
        )
    out.print(f"{printable(response.agency)} record {printable(response.reference)}")
    if args.csv:
        write_private_csv(
            Path(args.csv),
            [("field", "value"), *((key, response.fields[key]) for key in sorted(response.fields))],
        )
        out.print(f"{len(response.fields)} fields written to {printable(args.csv)} (mode 0600)")
    else:
        table = Table("field", "value")
        for key in sorted(response.fields):
            table.add_row(printable(key), printable(response.fields[key]))
        out.print(table)
    if response.withheld_fields:
        out.print("withheld by policy: " + printable(", ".join(response.withheld_fields)))
    out.print(f"disclosure id {printable(response.disclosure_id)} (audited)")
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace) -> int:
    from client.client import NodeClient

    address, agency = node_target(args)
    with NodeClient(address, tls(args), agency=agency) as node:
        local_id = node.resolve(args.reference, purpose=args.purpose)
    out.print(f"{printable(args.reference)} -> {printable(local_id)} (audited)")
    return EXIT_OK


def add_lookup(sub: Any) -> None:
    """``lookup``."""
    lk = sub.add_parser("lookup", help="staff: which agencies hold records about this child?")
    add_node_target_args(lk)
    lk.add_argument(
        "--purpose",
        required=True,
        metavar="CODE",
        help="a purpose code of your sharing agreement, e.g. s47_enquiry (any other is refused "
        "with the list your node accepts); the only purpose the matcher is told",
    )
    lk.add_argument(
        "--note",
        required=True,
        metavar="TEXT",
        help="your own words on the lookup (a case reference, a reason): your node's audit "
        "log only",
    )
    lk.add_argument("--field", action="append", default=[], help="FIELD=VALUE (repeat)")
    lk.add_argument(
        "--from",
        dest="from_file",
        metavar="CSV",
        help="batch: one lookup per row of this CSV file (needs --out); paced, resumable",
    )
    lk.add_argument("--out", help="batch: append results here, JSON Lines, one per row")
    lk.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="batch: schema field -> CSV column (repeat; default: columns named as fields)",
    )
    lk.add_argument("--id-column", help="batch: a column copied to each result as its id")
    lk.add_argument(
        "--per-minute",
        type=float,
        default=60.0,
        help="batch: lookups started per minute at most (default 60, a node's default limit)",
    )
    lk.add_argument("--max", type=int, default=10)
    lk.add_argument("--json", action="store_true")
    lk.set_defaults(func=cmd_lookup)


def add_disclose(sub: Any) -> None:
    """``disclose``."""
    dc = sub.add_parser("disclose", help="staff: request the record behind a reference")
    dc.add_argument(
        "--node", required=True, help="your own agency's node, where you looked the child up"
    )
    add_identity_args(dc)
    dc.add_argument("--reference", required=True)
    dc.add_argument(
        "--purpose",
        required=True,
        metavar="CODE",
        help="a purpose code of your sharing agreement, e.g. s47_enquiry (audited on both nodes)",
    )
    dc.add_argument(
        "--note", default="", metavar="TEXT", help="your own words: your node's audit log only"
    )
    dc.add_argument(
        "--priority",
        choices=("red", "amber", "green"),
        help="how soon you need it (MASH practice: red within hours, amber a day, green days)",
    )
    dc.add_argument(
        "--csv", help="write the released fields to this CSV file (mode 0600) instead of the screen"
    )
    dc.set_defaults(func=cmd_disclose)


def add_resolve(sub: Any) -> None:
    """``resolve``."""
    rs = sub.add_parser("resolve", help="one of your node's references to its local record id")
    add_node_target_args(rs)
    rs.add_argument("--reference", required=True)
    rs.add_argument("--purpose", required=True, help="why (kept in the node's audit log)")
    rs.set_defaults(func=cmd_resolve)
