"""``python -m client.protocheck``: fail when the committed generated gRPC modules are stale.

Role in the pipeline: ``make proto-check`` (part of ``make check`` and CI) runs this. It
regenerates ``proto/jigsaw/v1/jigsaw.proto`` into a temporary directory with exactly the flags
of ``make proto`` (``python -m grpc_tools.protoc -I. --python_out --pyi_out --grpc_python_out``,
run from the repository root) and compares the result byte for byte with the committed
``jigsaw_pb2.py``, ``jigsaw_pb2.pyi`` and ``jigsaw_pb2_grpc.py``.

Exit status: 0 when current, 1 naming every stale or missing file, 2 when protoc fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROTO_SOURCE = "proto/jigsaw/v1/jigsaw.proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def generated_paths(proto_source: str = PROTO_SOURCE) -> list[str]:
    """Repository-relative paths of the modules generated from ``proto_source``."""
    stem = proto_source.removesuffix(".proto")
    return [stem + suffix for suffix in GENERATED_SUFFIXES]


def regenerate(root: Path, out_dir: Path, proto_source: str = PROTO_SOURCE) -> None:
    """Run protoc as ``make proto`` does, from ``root``, writing into ``out_dir``."""
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I.",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        proto_source,
    ]
    completed = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"protoc failed ({completed.returncode}): {completed.stderr.strip()}")


def stale_files(root: Path, proto_source: str = PROTO_SOURCE) -> list[str]:
    """Generated files under ``root`` that differ from a fresh protoc run (or are missing)."""
    with tempfile.TemporaryDirectory(prefix="jigsaw-protocheck-") as temp:
        out_dir = Path(temp)
        regenerate(root, out_dir, proto_source)
        stale = []
        for relative in generated_paths(proto_source):
            committed, fresh = root / relative, out_dir / relative
            if not committed.is_file() or committed.read_bytes() != fresh.read_bytes():
                stale.append(relative)
        return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m client.protocheck",
        description="Check that the committed generated gRPC modules match the .proto.",
    )
    parser.add_argument(
        "--root", type=Path, default=REPOSITORY_ROOT, help="repository root (default: this one)"
    )
    arguments = parser.parse_args(argv)
    try:
        stale = stale_files(arguments.root)
    except RuntimeError as exc:
        print(f"proto-check: {exc}", file=sys.stderr)
        return 2
    if stale:
        for relative in stale:
            print(f"proto-check: stale or missing generated file: {relative}", file=sys.stderr)
        print("proto-check: run `make proto` and commit the result", file=sys.stderr)
        return 1
    print(f"proto-check: generated modules for {PROTO_SOURCE} are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
