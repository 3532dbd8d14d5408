"""``jigsaw demo`` and ``synthetic``: the demo federation and synthetic extracts, for anyone
trying Jigsaw out (never real records).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from client.commands.common import (
    EXIT_OK,
    out,
)
from client.output import printable


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


def add_demo(sub: Any) -> None:
    """``demo``."""
    demo = sub.add_parser("demo", help="run the demo federation on synthetic data")
    demo.add_argument("--dir", default="jigsaw-demo", help="where the demo writes its data")
    demo.add_argument("--children", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument(
        "--serve", action="store_true", help="keep the federation and staff console running"
    )
    demo.set_defaults(func=cmd_demo)


def add_synthetic(sub: Any) -> None:
    """``synthetic``."""
    sy = sub.add_parser(
        "synthetic", help="write four agencies' synthetic extracts (CSV) and their ground truth"
    )
    sy.add_argument("--out", required=True, help="directory to write into")
    sy.add_argument("--children", type=int, default=300)
    sy.add_argument("--seed", type=int, default=2026)
    sy.set_defaults(func=cmd_synthetic)
