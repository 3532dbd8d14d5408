"""The ``jigsaw`` command line: one entry point for operators and staff.

Role: builds the parser from the command modules of :mod:`client.commands` (one per group
of commands, each adding its parsers) and maps what a command raises to an exit code;
``jigsaw --help`` and ``jigsaw COMMAND --help`` list and explain every command.
The commands, by who runs them:

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
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

import grpc

from client.commands import data, link, ops, pki, serve, staff, tryout
from client.commands.common import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_RPC,
    EXIT_USAGE,
    UsageError,
    err,
)
from client.output import printable
from linkage.errors import JigsawError
from proto.jigsaw.v1.transport import WrongServerError

#: The entry-point group through which other packages add subcommands: each entry point is a
#: function given the subparsers object, which adds its parser and sets ``func``.
COMMAND_ENTRY_POINTS = "jigsaw.commands"

#: The command modules' parser builders, in the order ``jigsaw --help`` lists the commands.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    pki.add_pki,
    pki.add_secret,
    serve.add_node,
    serve.add_console,
    serve.add_matcher,
    data.add_ingest,
    data.add_publish,
    staff.add_lookup,
    staff.add_disclose,
    link.add_link,
    link.add_linked,
    staff.add_resolve,
    ops.add_status,
    data.add_quality,
    ops.add_config,
    ops.add_audit,
    tryout.add_demo,
    tryout.add_synthetic,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jigsaw",
        description="Privacy-preserving record linkage for multi-agency child protection.",
        epilog="Exit codes: 0 ok, 1 bad input/config, 2 usage, 3 remote call failed, "
        "4 audit verification failed, 130 interrupted.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
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
    except (JigsawError, WrongServerError) as exc:
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
