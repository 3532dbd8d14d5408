"""``jigsaw node|matcher|console serve``: run one service in this process until SIGTERM.

Contract: ``--port-file`` receives the bound port once serving, written to a temporary file
and renamed into place, so a reader never sees a partly written port; an address already taken
is exit 1 with the reason, without a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.commands.common import (
    EXIT_INPUT,
    EXIT_OK,
    err,
)
from client.output import printable


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


def add_node(sub: Any) -> None:
    """``node serve``."""
    node = sub.add_parser("node", help="agency node").add_subparsers(
        dest="node_command", required=True
    )
    ns = node.add_parser("serve", help="run an agency node until SIGTERM")
    ns.add_argument("--config", required=True)
    ns.add_argument("--port-file", help="write the bound port here once serving")
    ns.set_defaults(func=cmd_node_serve)


def add_console(sub: Any) -> None:
    """``console serve``."""
    console = sub.add_parser("console", help="staff console").add_subparsers(
        dest="console_command", required=True
    )
    cs = console.add_parser("serve", help="run the agency's staff console until SIGTERM")
    cs.add_argument("--config", required=True, help="the node config (its [console] section)")
    cs.add_argument("--port-file", help="write the bound port here once serving")
    cs.set_defaults(func=cmd_console_serve)


def add_matcher(sub: Any) -> None:
    """``matcher serve``."""
    matcher = sub.add_parser("matcher", help="matcher").add_subparsers(
        dest="matcher_command", required=True
    )
    ms = matcher.add_parser("serve", help="run the matcher until SIGTERM")
    ms.add_argument("--config", required=True)
    ms.add_argument("--port-file", help="write the bound port here once serving")
    ms.set_defaults(func=cmd_matcher_serve)
