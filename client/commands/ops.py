"""``jigsaw status``, ``config check`` and ``audit verify|anchor|export-anchors``: an
operator's checks of a running federation, its configs and its audit logs.

Contract: ``config check`` starts nothing and exits 1 listing every problem; ``audit verify``
exits 4 when a chain is broken or disagrees with the heads another party holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from client.commands.common import (
    EXIT_AUDIT,
    EXIT_INPUT,
    EXIT_OK,
    add_identity_args,
    err,
    out,
    tls,
)
from client.commands.data import print_quality
from client.output import printable
from linkage.errors import JigsawError


def cmd_status(args: argparse.Namespace) -> int:
    from client.client import MatcherClient, NodeClient

    if args.matcher:
        with MatcherClient(args.matcher, tls(args)) as matcher:
            status = matcher.status()
        out.print(f"matcher: {status.indexed_records} records, schema {status.schema_fingerprint}")
        for a in status.agencies:
            out.print(f"  {a.agency}: {a.records}")
    else:
        with NodeClient(args.node, tls(args), agency=args.agency) as node:
            ns = node.status()
        out.print(
            f"node {ns.agency}: {ns.records} records, {ns.published} published, "
            f"{ns.pending} pending"
        )
        print_quality(ns.quality)
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
            with MatcherClient(args.matcher, tls(args)) as matcher:
                fetched = matcher.anchors(args.owner)
        else:
            with NodeClient(args.node, tls(args), agency=args.agency) as node:
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

    with NodeClient(args.node, tls(args), agency=args.agency) as node:
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


def add_status(sub: Any) -> None:
    """``status``."""
    st = sub.add_parser("status", help="node or matcher status")
    grp = st.add_mutually_exclusive_group(required=True)
    grp.add_argument("--node")
    grp.add_argument("--matcher")
    st.add_argument("--agency", help="the node's agency (default: your certificate's)")
    add_identity_args(st)
    st.set_defaults(func=cmd_status)


def add_config(sub: Any) -> None:
    """``config check``."""
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


def add_audit(sub: Any) -> None:
    """``audit verify|anchor|export-anchors``."""
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
    add_identity_args(aa)
    aa.set_defaults(func=cmd_audit_anchor)
    ae = audit.add_parser("export-anchors", help="extract one owner's heads from a witnessed file")
    ae.add_argument("--witnessed", required=True, help="this party's witnessed-heads file")
    ae.add_argument("--owner", required=True)
    ae.add_argument("--ca", required=True)
    ae.add_argument("--out", required=True)
    ae.set_defaults(func=cmd_audit_export)
