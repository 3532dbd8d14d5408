"""What every command module shares: exit codes, the terminal, progress bars, the caller's
TLS identity and the node a staff command talks to.

Contract: exit codes 0 success; 1 bad input or configuration; 2 usage error; 3 a remote call
failed; 4 audit verification failed; 130 interrupted. ``out`` is standard output and ``err``
standard error (progress bars draw there, so standard output stays parseable).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from linkage.errors import JigsawError

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_RPC = 3
EXIT_AUDIT = 4
EXIT_INTERRUPTED = 130

out = Console()
err = Console(stderr=True)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def tls(args: argparse.Namespace) -> Any:
    from server.common.tls import tls_files_for

    return tls_files_for(Path(args.pki), args.identity)


def node_target(args: argparse.Namespace) -> tuple[str, str | None]:
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


def add_identity_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--pki", required=True, help="your bundle directory, or the PKI directory holding it"
    )
    sp.add_argument("--identity", required=True, help="your certificate name")


def add_node_target_args(sp: argparse.ArgumentParser) -> None:
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--node", help="the agency node's address")
    where.add_argument(
        "--config", help="the node's config: its agency and listen address (a fixed port)"
    )
    sp.add_argument("--agency", help="the node's agency (default: your certificate's)")
    add_identity_args(sp)
