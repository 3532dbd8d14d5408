"""``jigsaw ingest``, ``publish`` and ``quality``: an agency's records into its node's store,
their encodings to the matcher, and the data-quality report of the store.

Contract: ingest lists rejected rows and warnings by line and field, never by value; publish
sends only pending records and withdrawals; ``quality --json`` prints the ``DataQuality``
message of the proto, the same the node's Status RPC returns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from client.commands.common import (
    EXIT_OK,
    out,
    progress,
)
from client.output import printable
from linkage.errors import JigsawError


def cmd_ingest(args: argparse.Namespace) -> int:
    from server.node.config import load_node_config
    from server.node.ingest import ingest_source
    from server.node.store import NodeStore

    config = load_node_config(args.config)
    store = NodeStore(config.store)
    worst = EXIT_OK
    try:
        for source in config.sources:
            with progress() as bar:
                task = bar.add_task(f"ingest {source.path.name}", total=None)

                def tick(done: int, _task: Any = task, _bar: Any = bar) -> None:
                    _bar.update(_task, completed=done)

                report = ingest_source(
                    store,
                    source,
                    config.schema,
                    progress=tick,
                    chunk_rows=config.ingest_chunk_rows,
                )
            out.print(
                f"{source.path.name}: {report.rows_read} rows read, {report.inserted} inserted, "
                f"{report.updated} updated, {report.unchanged} unchanged, "
                f"{report.superseded} superseded by a later row of their id, "
                f"{report.rejected_rows} rejected, {len(report.warnings)} warnings"
            )
            problems = [("rejected", p) for p in report.rejected] + [
                ("warning", p) for p in report.warnings
            ]
            if problems:
                table = Table("line", "field", "outcome", "reason")
                for outcome, p in problems[: args.show]:
                    table.add_row(str(p.line), p.field, outcome, p.reason)
                out.print(table)
                if len(problems) > args.show:
                    out.print(f"... and {len(problems) - args.show} more")
    finally:
        store.close()
    return worst


def cmd_publish(args: argparse.Namespace) -> int:
    from proto.jigsaw.v1 import jigsaw_pb2_grpc
    from server.common.pki import UNIT_AGENCY, server_name
    from server.common.tls import secure_channel
    from server.node.config import load_node_config, read_linkage_keys
    from server.node.publish import publish_pending
    from server.node.store import NodeStore

    config = load_node_config(args.config)
    keys = read_linkage_keys(config)
    store = NodeStore(config.store)
    channel = secure_channel(config.matcher, config.tls, expect=server_name("matcher", UNIT_AGENCY))
    try:
        stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        with progress() as bar:
            task = bar.add_task(f"publish {config.agency}", total=None)

            def tick(done: int) -> None:
                bar.update(task, completed=done)

            report = publish_pending(
                store,
                config.schema,
                keys,
                stub,
                batch_size=config.publish_batch_size,
                progress=tick,
            )
        out.print(
            f"{config.agency}: {report.published} records published, "
            f"{report.withdrawn} withdrawn, in {report.calls} calls"
        )
    finally:
        channel.close()
        store.close()
    return EXIT_OK


def _percent(share: float) -> str:
    return f"{100 * share:.1f} %"


def print_quality(quality: Any) -> None:
    """A ``DataQuality`` message as tables: per source, per field, and after a link."""
    for source in quality.sources:
        out.print(
            f"source {printable(source.source)} (ingested {printable(source.ingested_at)}): "
            f"{source.rows_read} rows read, {source.stored} stored, "
            f"{source.superseded} superseded, {source.rejected_rows} rejected "
            f"({_percent(source.rejected_share)}), "
            f"{source.invalid_nhs_numbers} invalid NHS numbers (stored as missing)"
        )
        if source.rejected:
            table = Table("rejected: reason", "field", "rows")
            for reason in source.rejected:
                table.add_row(printable(reason.reason), printable(reason.field), str(reason.rows))
            out.print(table)
    table = Table("field", "missing", "share", *(f"in {s.source}" for s in quality.sources))
    by_source = [{m.field: m for m in s.missing} for s in quality.sources]
    for m in quality.missing:
        shares = [_percent(f[m.field].share) if m.field in f else "" for f in by_source]
        table.add_row(printable(m.field), str(m.missing), _percent(m.share), *shares)
    out.print(f"{quality.records} records in the store")
    out.print(table)
    if quality.nhs_number_field:
        out.print(
            f"with an NHS number: {quality.with_nhs_number} of {quality.records} "
            f"({_percent(quality.nhs_number_share)})"
        )
    link = quality.link
    if not link.result_id:
        out.print("linked to other agencies: no link result fetched yet (jigsaw linked --fetch)")
        return
    out.print(
        f"linked to other agencies (link result {printable(link.result_id)}, fetched "
        f"{printable(link.fetched_at)}): {link.linked} of {quality.records} "
        f"({_percent(link.linked_share)})"
    )
    if quality.nhs_number_field:
        out.print(
            f"  of the {quality.without_nhs_number} without an NHS number: "
            f"{link.linked_without_nhs_number} ({_percent(link.linked_share_without_nhs_number)})"
        )


def cmd_quality(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from server.node.config import load_node_config
    from server.node.quality import data_quality
    from server.node.store import NodeStore

    config = load_node_config(args.config)
    if not Path(config.store).exists():
        raise JigsawError(f"{args.config}: node.store does not exist yet (run jigsaw ingest)")
    with NodeStore(config.store) as store:
        quality = data_quality(store, config.schema)
    if args.json:
        text = json_format.MessageToJson(
            quality,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            indent=2,
        )
        sys.stdout.write(text + "\n")
    else:
        out.print(f"agency {printable(config.agency)}")
        print_quality(quality)
    return EXIT_OK


def add_ingest(sub: Any) -> None:
    """``ingest``."""
    ing = sub.add_parser("ingest", help="read a node's sources into its store")
    ing.add_argument("--config", required=True)
    ing.add_argument("--show", type=int, default=20, help="problems to list")
    ing.set_defaults(func=cmd_ingest)


def add_publish(sub: Any) -> None:
    """``publish``."""
    pub = sub.add_parser("publish", help="encode and publish pending records to the matcher")
    pub.add_argument("--config", required=True)
    pub.set_defaults(func=cmd_publish)


def add_quality(sub: Any) -> None:
    """``quality``."""
    qu = sub.add_parser(
        "quality",
        help="an agency's data quality: per source (rows read, stored, rejected by reason, "
        "missing per field, invalid NHS numbers) and after a link (share linked)",
    )
    qu.add_argument("--config", required=True, help="the node's config (its store is read)")
    qu.add_argument(
        "--json", action="store_true", help="print the DataQuality message (proto) as JSON"
    )
    qu.set_defaults(func=cmd_quality)
