"""The ``jigsaw`` command line: one entry point for operators and staff.

Role: parses the command line and calls the client (:mod:`client.client`), the server
entry points and the linkage library; ``jigsaw --help`` and ``jigsaw COMMAND --help`` list
and explain every command. The commands, by who runs them:

* operators: ``pki init|issue|revoke|p12``, ``secret init``, ``config check``,
  ``node serve``, ``matcher serve``, ``console serve``, ``ingest``, ``publish``, ``link``,
  ``linked --fetch``, ``status``, ``quality``, ``audit verify|anchor|export-anchors``;
* unit staff: ``lookup`` (one child, or a CSV of them with ``--from``), ``disclose``,
  ``linked``, ``resolve``;
* anyone trying it out: ``demo``, ``synthetic``; ``bench`` is added by the ``benchmarks``
  package through the ``jigsaw.commands`` entry point, so this module imports no benchmark.

Contract: exit codes 0 success; 1 bad input or configuration (the message says which field;
a server's INVALID_ARGUMENT is bad input too); 2 usage error; 3 a remote call failed (the
gRPC status is printed); 4 audit verification failed; 130 interrupted.

Invariants: messages never carry identifier values (errors name the field, line or
expectation); everything a server sent is printed through :func:`client.output.printable`, so
no control character reaches the terminal; files that hold records are written by
:mod:`client.output` (mode 0600, spreadsheet formulas neutralised).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from client.exports import AGREEMENT_NAMES, BAND_NAMES, evidence_text
from client.output import printable, write_private_csv
from linkage.errors import JigsawError

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_RPC = 3
EXIT_AUDIT = 4
EXIT_INTERRUPTED = 130

#: Environment variable that may hold the CA key's passphrase (instead of a file).
CA_PASSPHRASE_ENV = "JIGSAW_CA_PASSPHRASE"
P12_PASSWORD_ENV = "JIGSAW_P12_PASSWORD"

out = Console()
err = Console(stderr=True)

#: The entry-point group through which other packages add subcommands: each entry point is a
#: function given the subparsers object, which adds its parser and sets ``func``.
COMMAND_ENTRY_POINTS = "jigsaw.commands"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


# ------------------------------------------------------------------------------ pki / secret


def cmd_pki_init(args: argparse.Namespace) -> int:
    from server.common.pki import init_pki

    staff = []
    for item in args.staff:
        name, sep, agency = item.partition(":")
        if not sep or not name or not agency:
            err.print(f"--staff {item!r}: expected NAME:AGENCY")
            return EXIT_USAGE
        staff.append((name, agency))
    passphrase = _ca_passphrase(args)
    layout = init_pki(
        Path(args.dir),
        agencies=args.agency,
        staff=staff,
        operators=args.operator,
        passphrase=passphrase,
        days=args.days,
        force=args.force,
    )
    encrypted = "encrypted" if passphrase is not None else "NOT encrypted (no passphrase given)"
    out.print(
        f"certificate authority: {layout.ca_cert.parent} (key {encrypted}; keep this "
        "directory apart: it is needed only to issue and revoke)"
    )
    out.print("bundles (hand each directory to its identity only):")
    for name in layout.names():
        out.print(f"  {name}: {layout[name][0].parent}")
    return EXIT_OK


def _ca_passphrase(args: argparse.Namespace) -> Any:
    """The CA passphrase from ``--ca-passphrase-file`` or :data:`CA_PASSPHRASE_ENV`, or None.

    Never from a command-line value: a command line is visible to every user of the machine.
    """
    from server.common.pki import CaPassphrase, PkiError

    if args.ca_passphrase_file is not None:
        try:
            data = Path(args.ca_passphrase_file).read_bytes()
        except OSError as exc:
            raise PkiError(f"cannot read the CA passphrase file: {exc.strerror}") from None
        return CaPassphrase(data.rstrip(b"\r\n"))
    value = os.environ.get(CA_PASSPHRASE_ENV)
    return None if value is None else CaPassphrase(value.encode("utf-8"))


def cmd_pki_issue(args: argparse.Namespace) -> int:
    from server.common.pki import issue_certificate

    cert_path, _key_path = issue_certificate(
        Path(args.dir),
        args.name,
        args.agency,
        args.role,
        passphrase=_ca_passphrase(args),
        days=args.days,
        extra_hosts=args.host,
        force=args.force,
    )
    out.print(f"{args.name}: bundle {cert_path.parent} (hand it to that identity only)")
    return EXIT_OK


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    from server.common.pki import CRL_FILE, ca_dir, revoke_certificate

    serial = None
    if args.serial is not None:
        try:
            serial = int(args.serial, 16)
        except ValueError:
            err.print("--serial: expected the certificate serial in hexadecimal")
            return EXIT_USAGE
    revoked = revoke_certificate(
        Path(args.dir), name=args.name, serial=serial, passphrase=_ca_passphrase(args)
    )
    out.print(
        f"certificate serial {revoked:x} revoked in {ca_dir(Path(args.dir)) / CRL_FILE} and "
        f"the server bundles' copies; servers refuse it from their next call (copy {CRL_FILE} "
        "to servers on other machines)"
    )
    return EXIT_OK


def cmd_pki_p12(args: argparse.Namespace) -> int:
    from server.common.pki import PkiError, export_pkcs12

    if args.password_file is not None:
        try:
            password = Path(args.password_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise PkiError(f"cannot read the PKCS#12 password file: {exc.strerror}") from None
    else:
        value = os.environ.get(P12_PASSWORD_ENV)
        if value is None:
            err.print(f"give the bundle's password with --password-file or {P12_PASSWORD_ENV}")
            return EXIT_USAGE
        password = value.encode("utf-8")
    path = export_pkcs12(Path(args.dir), args.name, password)
    out.print(f"{args.name}: PKCS#12 bundle {path} (import it into that person's browser only)")
    return EXIT_OK


def cmd_secret_init(args: argparse.Namespace) -> int:
    from linkage.keys import LinkageSecret

    path = Path(args.out)
    if path.exists() and not args.force:
        err.print(f"{path} exists; use --force to replace it (every agency must then re-encode)")
        return EXIT_INPUT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(LinkageSecret.generate().to_hex() + "\n", "ascii")
    tmp.chmod(0o600)
    tmp.replace(path)
    out.print(f"linkage secret written to {path} (share it only with the agencies)")
    return EXIT_OK


# ------------------------------------------------------------------------------ serving


def _port_file_writer(port_file: str | None) -> Callable[[int], None] | None:
    """``--port-file``: once serving, the bound port is written to a temporary file that is
    then renamed into place, so a reader never sees a partly written port."""
    if not port_file:
        return None

    def write_port(port: int) -> None:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)

    return write_port


def cmd_node_serve(args: argparse.Namespace) -> int:
    from server.node.config import load_node_config
    from server.node.service import serve

    try:
        serve(load_node_config(args.config), on_started=_port_file_writer(args.port_file))
    except OSError as exc:  # its address taken: say so, without a traceback
        err.print(f"error: {printable(str(exc))}")
        return EXIT_INPUT
    return EXIT_OK


def cmd_console_serve(args: argparse.Namespace) -> int:
    from server.console.app import serve
    from server.node.config import load_node_config

    serve(load_node_config(args.config), on_started=_port_file_writer(args.port_file))
    return EXIT_OK


def cmd_matcher_serve(args: argparse.Namespace) -> int:
    from server.matcher.config import load_matcher_config
    from server.matcher.service import serve

    try:
        serve(load_matcher_config(args.config), on_started=_port_file_writer(args.port_file))
    except OSError as exc:  # its address taken: say so, without a traceback
        err.print(f"error: {printable(str(exc))}")
        return EXIT_INPUT
    return EXIT_OK


# ------------------------------------------------------------------------------ node work


def cmd_ingest(args: argparse.Namespace) -> int:
    from server.node.config import load_node_config
    from server.node.ingest import ingest_source
    from server.node.store import NodeStore

    config = load_node_config(args.config)
    store = NodeStore(config.store)
    worst = EXIT_OK
    try:
        for source in config.sources:
            with _progress() as bar:
                task = bar.add_task(f"ingest {source.path.name}", total=None)

                def tick(done: int, _task: Any = task, _bar: Any = bar) -> None:
                    _bar.update(_task, completed=done)

                report = ingest_source(store, source, config.schema, progress=tick)
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
        with _progress() as bar:
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


# ------------------------------------------------------------------------------ staff


def _tls(args: argparse.Namespace) -> Any:
    from server.common.tls import tls_files_for

    return tls_files_for(Path(args.pki), args.identity)


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
    address, agency = _node_target(args)
    with NodeClient(address, _tls(args), agency=agency) as node:
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
    address, agency = _node_target(args)
    with NodeClient(address, _tls(args), agency=agency) as node, _progress() as bar:
        task = bar.add_task("lookups", total=total)
        report = run_batch(
            node,
            read_queries(source, columns or None, args.id_column),
            Path(args.out),
            purpose_code=args.purpose,
            note=args.note,
            per_minute=args.per_minute,
            max_candidates=args.max,
            progress=lambda r: bar.update(task, completed=r.rows),
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

    with NodeClient(args.node, _tls(args)) as node:
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


# ------------------------------------------------------------------------------ operators


def cmd_link(args: argparse.Namespace) -> int:
    from client.client import MatcherClient
    from client.exports import file_format, write_link_result

    out_path = Path(args.out) if args.out else None
    if out_path is not None:
        file_format(out_path)  # refuse an unknown suffix before the link runs
    with MatcherClient(args.matcher, _tls(args)) as matcher, _progress() as bar:
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


def _node_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The node address and agency: ``--node``/``--agency``, or the node's own config
    (``--config``: its agency and ``listen`` address, which must then be a fixed port)."""
    if args.config is None:
        return args.node, args.agency
    from server.node.config import load_node_config

    config = load_node_config(args.config)
    host, _, port = config.listen.rpartition(":")
    if port == "0":
        raise UsageError(
            f"{args.config}: node.listen has port 0; give the node a fixed port or use --node"
        )
    if host in ("0.0.0.0", "[::]", ""):
        host = "127.0.0.1"
    return f"{host}:{port}", config.agency


class UsageError(JigsawError):
    """A command line that cannot work as given (exit 2)."""


def cmd_linked(args: argparse.Namespace) -> int:
    from client.client import NodeClient
    from client.exports import file_format, write_linked_records

    out_path = Path(args.out)
    file_format(out_path)
    address, agency = _node_target(args)
    with NodeClient(address, _tls(args), agency=agency) as node:
        if args.fetch:
            fetched = node.fetch_linked(args.result or "")
            out.print(
                f"fetched link result {printable(fetched.result_id)}: "
                f"{fetched.linked_records} records known to other agencies"
            )
        with _progress() as bar:
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


def cmd_resolve(args: argparse.Namespace) -> int:
    from client.client import NodeClient

    address, agency = _node_target(args)
    with NodeClient(address, _tls(args), agency=agency) as node:
        local_id = node.resolve(args.reference, purpose=args.purpose)
    out.print(f"{printable(args.reference)} -> {printable(local_id)} (audited)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from client.client import MatcherClient, NodeClient

    if args.matcher:
        with MatcherClient(args.matcher, _tls(args)) as matcher:
            status = matcher.status()
        out.print(f"matcher: {status.indexed_records} records, schema {status.schema_fingerprint}")
        for a in status.agencies:
            out.print(f"  {a.agency}: {a.records}")
    else:
        with NodeClient(args.node, _tls(args), agency=args.agency) as node:
            ns = node.status()
        out.print(
            f"node {ns.agency}: {ns.records} records, {ns.published} published, "
            f"{ns.pending} pending"
        )
        print_quality(ns.quality)
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


def _held_heads(args: argparse.Namespace) -> list[Any]:
    """The receipts ``audit verify`` checks against: from files and from the other party."""
    from client.client import MatcherClient, NodeClient
    from server.common.anchor import Receipt, ReceiptFile

    receipts: list[Receipt] = []
    for path in args.anchors:
        receipts.extend(ReceiptFile(Path(path)).read())
    if args.matcher or args.node:
        if not (args.pki and args.identity):
            raise JigsawError("--matcher and --node need --pki and --identity (an operator's)")
        if args.matcher:
            with MatcherClient(args.matcher, _tls(args)) as matcher:
                fetched = matcher.anchors(args.owner)
        else:
            with NodeClient(args.node, _tls(args), agency=args.agency) as node:
                fetched = node.anchors(args.owner)
        receipts.extend(Receipt.from_proto(message) for message in fetched)
    return receipts


def cmd_config_check(args: argparse.Namespace) -> int:
    from server.config_check import check_config

    code = EXIT_OK
    for name in args.files:
        problems = check_config(Path(name))
        if problems:
            code = EXIT_INPUT
            err.print(f"{printable(name)}: {len(problems)} problem(s)")
            for problem in problems:
                err.print(f"  - {printable(problem)}")
        else:
            out.print(f"{printable(name)}: OK")
    return code


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from server.common.anchor import load_ca, verify_against_anchors
    from server.common.audit import verify_audit_log

    anchored = bool(args.anchors or args.matcher or args.node)
    if anchored and not (args.owner and args.ca):
        raise JigsawError("checking against held heads needs --owner and --ca")
    receipts = _held_heads(args) if anchored else []
    code = EXIT_OK
    for path in args.files:
        result = verify_audit_log(Path(path))
        if anchored:
            held = verify_against_anchors(
                Path(path), receipts, owner=args.owner, ca=load_ca(Path(args.ca))
            )
            if not held.ok:
                at = f" at entry {held.first_bad_seq}" if held.first_bad_seq else ""
                out.print(f"{path}: TAMPERED{at} (against the heads held): {held.reason}")
                code = EXIT_AUDIT
                continue
        if result.ok:
            shown = f"; {held.reason}" if anchored else ""
            out.print(f"{path}: OK, {result.entries} entries, chain intact{shown}")
        else:
            out.print(f"{path}: TAMPERED at entry {result.first_bad_seq}: {result.reason}")
            code = EXIT_AUDIT
    return code


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    from client.client import NodeClient

    with NodeClient(args.node, _tls(args), agency=args.agency) as node:
        response = node.anchor_audit()
    done = "anchored" if response.HasField("receipt") else "already anchored"
    out.print(f"audit head at entry {response.seq}: {done} with the matcher")
    return EXIT_OK


def cmd_audit_export(args: argparse.Namespace) -> int:
    from server.common.anchor import ReceiptFile, load_ca, receipts_for

    kept = receipts_for(ReceiptFile(Path(args.witnessed)).read(), args.owner, load_ca(args.ca))
    target = ReceiptFile(Path(args.out))
    for receipt in kept:
        target.append(receipt)
    out.print(f"{len(kept)} heads of {args.owner} written to {args.out}")
    return EXIT_OK


# ------------------------------------------------------------------------------ demo / bench


def cmd_demo(args: argparse.Namespace) -> int:
    from client.demo import run_demo

    return run_demo(
        Path(args.dir), children=args.children, seed=args.seed, console=out, serve=args.serve
    )


def cmd_synthetic(args: argparse.Namespace) -> int:
    from server.launcher import write_synthetic_extracts

    root = Path(args.out)
    written = write_synthetic_extracts(root, children=args.children, seed=args.seed)
    for agency, rows in written.items():
        out.print(f"{printable(str(root / agency))}.csv: {rows} rows")
    out.print(f"{printable(str(root / 'truth.csv'))}: which child each record is (test data only)")
    return EXIT_OK


# ------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jigsaw",
        description="Privacy-preserving record linkage for multi-agency child protection.",
        epilog="Exit codes: 0 ok, 1 bad input/config, 2 usage, 3 remote call failed, "
        "4 audit verification failed, 130 interrupted.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    pki = sub.add_parser("pki", help="certificates").add_subparsers(
        dest="pki_command", required=True
    )
    pi = pki.add_parser("init", help="create a CA and certificates for every identity")
    pi.add_argument("--dir", required=True, help="output directory")
    pi.add_argument("--agency", action="append", default=[], help="agency id (repeat)")
    pi.add_argument("--staff", action="append", default=[], help="NAME:AGENCY (repeat)")
    pi.add_argument("--operator", action="append", default=[], help="operator name (repeat)")
    pi.add_argument("--days", type=int, default=365)
    pi.add_argument("--force", action="store_true", help="replace an existing CA")
    passphrase_help = (
        f"file holding the CA key's passphrase (or set {CA_PASSPHRASE_ENV}); init encrypts "
        "the key with it, issue and revoke need it"
    )
    pi.add_argument("--ca-passphrase-file", help=passphrase_help)
    pi.set_defaults(func=cmd_pki_init)
    pis = pki.add_parser("issue", help="issue one more identity's bundle")
    pis.add_argument("--dir", required=True, help="the PKI directory")
    pis.add_argument("--name", required=True, help="identity name")
    pis.add_argument("--agency", required=True, help='agency id ("unit" for operators)')
    pis.add_argument(
        "--role",
        required=True,
        choices=["node", "staff", "operator", "matcher", "probe", "console"],
        help="probe: a load balancer's health checks only; console: an agency's staff console",
    )
    pis.add_argument("--host", action="append", default=[], help="extra DNS name (repeat)")
    pis.add_argument("--days", type=int, default=365)
    pis.add_argument("--force", action="store_true", help="replace an existing bundle")
    pis.add_argument("--ca-passphrase-file", help=passphrase_help)
    pis.set_defaults(func=cmd_pki_issue)
    pr = pki.add_parser("revoke", help="add a certificate to the revocation list")
    pr.add_argument("--dir", required=True, help="the PKI directory")
    pr.add_argument("--ca-passphrase-file", help=passphrase_help)
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="identity whose certificate to revoke")
    which.add_argument("--serial", help="serial (hexadecimal) of the certificate to revoke")
    pr.set_defaults(func=cmd_pki_revoke)
    p12 = pki.add_parser("p12", help="write an identity's PKCS#12 bundle for a browser")
    p12.add_argument("--dir", required=True, help="the PKI directory, or the identity's bundle")
    p12.add_argument("--name", required=True, help="identity name")
    p12.add_argument(
        "--password-file", help=f"file holding the bundle's password (or set {P12_PASSWORD_ENV})"
    )
    p12.set_defaults(func=cmd_pki_p12)

    secret = sub.add_parser("secret", help="linkage secret").add_subparsers(
        dest="secret_command", required=True
    )
    si = secret.add_parser("init", help="create a new shared linkage secret")
    si.add_argument("--out", required=True)
    si.add_argument("--force", action="store_true")
    si.set_defaults(func=cmd_secret_init)

    node = sub.add_parser("node", help="agency node").add_subparsers(
        dest="node_command", required=True
    )
    ns = node.add_parser("serve", help="run an agency node until SIGTERM")
    ns.add_argument("--config", required=True)
    ns.add_argument("--port-file", help="write the bound port here once serving")
    ns.set_defaults(func=cmd_node_serve)

    console = sub.add_parser("console", help="staff console").add_subparsers(
        dest="console_command", required=True
    )
    cs = console.add_parser("serve", help="run the agency's staff console until SIGTERM")
    cs.add_argument("--config", required=True, help="the node config (its [console] section)")
    cs.add_argument("--port-file", help="write the bound port here once serving")
    cs.set_defaults(func=cmd_console_serve)

    matcher = sub.add_parser("matcher", help="matcher").add_subparsers(
        dest="matcher_command", required=True
    )
    ms = matcher.add_parser("serve", help="run the matcher until SIGTERM")
    ms.add_argument("--config", required=True)
    ms.add_argument("--port-file", help="write the bound port here once serving")
    ms.set_defaults(func=cmd_matcher_serve)

    ing = sub.add_parser("ingest", help="read a node's sources into its store")
    ing.add_argument("--config", required=True)
    ing.add_argument("--show", type=int, default=20, help="problems to list")
    ing.set_defaults(func=cmd_ingest)

    pub = sub.add_parser("publish", help="encode and publish pending records to the matcher")
    pub.add_argument("--config", required=True)
    pub.set_defaults(func=cmd_publish)

    def identity(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--pki", required=True, help="your bundle directory, or the PKI directory holding it"
        )
        sp.add_argument("--identity", required=True, help="your certificate name")

    def node_target(sp: argparse.ArgumentParser) -> None:
        where = sp.add_mutually_exclusive_group(required=True)
        where.add_argument("--node", help="the agency node's address")
        where.add_argument(
            "--config", help="the node's config: its agency and listen address (a fixed port)"
        )
        sp.add_argument("--agency", help="the node's agency (default: your certificate's)")
        identity(sp)

    lk = sub.add_parser("lookup", help="staff: which agencies hold records about this child?")
    node_target(lk)
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

    dc = sub.add_parser("disclose", help="staff: request the record behind a reference")
    dc.add_argument(
        "--node", required=True, help="your own agency's node, where you looked the child up"
    )
    identity(dc)
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

    ln = sub.add_parser("link", help="operator: batch-link all agencies")
    ln.add_argument("--matcher", required=True)
    identity(ln)
    ln.add_argument("--min-probability", type=float, default=0.0)
    ln.add_argument("--show", type=int, default=10, help="clusters to show on the terminal")
    ln.add_argument(
        "--out",
        help="write every cluster, full references and the band and evidence of its edges, "
        "to this file (.csv: one row per edge; .jsonl: one cluster a line; mode 0600)",
    )
    ln.set_defaults(func=cmd_link)

    lkd = sub.add_parser(
        "linked", help="an agency's records known to other agencies after a batch link"
    )
    node_target(lkd)
    lkd.add_argument("--out", required=True, help="file to write (.csv or .jsonl; mode 0600)")
    lkd.add_argument(
        "--fetch",
        action="store_true",
        help="operator: first have the node fetch its share of a link result from the matcher",
    )
    lkd.add_argument("--result", help="with --fetch: the link result id (default: the latest)")
    lkd.set_defaults(func=cmd_linked)

    rs = sub.add_parser("resolve", help="one of your node's references to its local record id")
    node_target(rs)
    rs.add_argument("--reference", required=True)
    rs.add_argument("--purpose", required=True, help="why (kept in the node's audit log)")
    rs.set_defaults(func=cmd_resolve)

    st = sub.add_parser("status", help="node or matcher status")
    grp = st.add_mutually_exclusive_group(required=True)
    grp.add_argument("--node")
    grp.add_argument("--matcher")
    st.add_argument("--agency", help="the node's agency (default: your certificate's)")
    identity(st)
    st.set_defaults(func=cmd_status)

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

    config = sub.add_parser("config", help="node and matcher configs").add_subparsers(
        dest="config_command", required=True
    )
    cc = config.add_parser(
        "check",
        help="check configs (schema, TLS files, secret, each source's header) without "
        "starting anything; exit 1 listing every problem",
    )
    cc.add_argument("files", nargs="+")
    cc.set_defaults(func=cmd_config_check)

    audit = sub.add_parser("audit", help="audit logs").add_subparsers(
        dest="audit_command", required=True
    )
    av = audit.add_parser(
        "verify",
        help="verify hash-chained audit logs, and against the heads another party holds",
    )
    av.add_argument("files", nargs="+")
    av.add_argument("--owner", help="the log owner's identity name (for the heads held)")
    av.add_argument("--ca", help="the federation CA certificate (checks the heads' signatures)")
    av.add_argument(
        "--anchors", action="append", default=[], metavar="FILE",
        help="a witnessed-heads file exported by the other party (repeat)",
    )  # fmt: skip
    held = av.add_mutually_exclusive_group()
    held.add_argument("--matcher", help="fetch the owner's heads the matcher holds")
    held.add_argument("--node", help="fetch the matcher's heads this node holds")
    av.add_argument("--agency", help="the node's agency (with --node)")
    av.add_argument("--pki", help="an operator's bundle (with --matcher or --node)")
    av.add_argument("--identity", help="the operator's certificate name")
    av.set_defaults(func=cmd_audit_verify)
    aa = audit.add_parser("anchor", help="operator: anchor a node's audit head now")
    aa.add_argument("--node", required=True)
    aa.add_argument("--agency", required=True, help="the node's agency")
    identity(aa)
    aa.set_defaults(func=cmd_audit_anchor)
    ae = audit.add_parser("export-anchors", help="extract one owner's heads from a witnessed file")
    ae.add_argument("--witnessed", required=True, help="this party's witnessed-heads file")
    ae.add_argument("--owner", required=True)
    ae.add_argument("--ca", required=True)
    ae.add_argument("--out", required=True)
    ae.set_defaults(func=cmd_audit_export)

    demo = sub.add_parser("demo", help="run the demo federation on synthetic data")
    demo.add_argument("--dir", default="jigsaw-demo", help="where the demo writes its data")
    demo.add_argument("--children", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument(
        "--serve", action="store_true", help="keep the federation and staff console running"
    )
    demo.set_defaults(func=cmd_demo)

    sy = sub.add_parser(
        "synthetic", help="write four agencies' synthetic extracts (CSV) and their ground truth"
    )
    sy.add_argument("--out", required=True, help="directory to write into")
    sy.add_argument("--children", type=int, default=300)
    sy.add_argument("--seed", type=int, default=2026)
    sy.set_defaults(func=cmd_synthetic)

    # commands other packages add (``jigsaw bench``, from benchmarks/), declared as entry
    # points in pyproject.toml so that this CLI imports none of them
    for command in entry_points(group=COMMAND_ENTRY_POINTS):
        command.load()(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        err.print(f"error: {printable(str(exc))}")
        return EXIT_USAGE
    except JigsawError as exc:
        err.print(f"error: {printable(str(exc))}")
        return EXIT_INPUT
    except grpc.RpcError as exc:
        status = exc.code() if isinstance(exc, grpc.Call) else None
        details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
        if status == grpc.StatusCode.INVALID_ARGUMENT:
            # the server refused what was given: bad input, and its details name the field
            err.print(f"error: bad input (INVALID_ARGUMENT): {printable(details)}")
            return EXIT_INPUT
        code_name = status.name if status is not None else "UNKNOWN"
        err.print(f"remote call failed: {code_name}: {printable(details)}")
        return EXIT_RPC
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
