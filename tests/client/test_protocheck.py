"""Tests for client.protocheck: current generated modules pass, stale or missing ones fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from client.protocheck import PROTO_SOURCE, REPOSITORY_ROOT, generated_paths, main


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPOSITORY_ROOT / "proto", tmp_path / "proto")
    return tmp_path


def test_generated_paths() -> None:
    assert generated_paths() == [
        "proto/jigsaw/v1/jigsaw_pb2.py",
        "proto/jigsaw/v1/jigsaw_pb2.pyi",
        "proto/jigsaw/v1/jigsaw_pb2_grpc.py",
    ]


def test_committed_modules_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "current" in capsys.readouterr().out


def test_copy_is_current(repo_copy: Path) -> None:
    assert main(["--root", str(repo_copy)]) == 0


def test_changed_proto_names_stale_files(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = repo_copy / PROTO_SOURCE
    source.write_text(source.read_text() + "\nmessage AddedLater {\n  string note = 1;\n}\n")
    assert main(["--root", str(repo_copy)]) == 1
    errors = capsys.readouterr().err
    assert "proto/jigsaw/v1/jigsaw_pb2.py" in errors
    assert "proto/jigsaw/v1/jigsaw_pb2.pyi" in errors
    assert "jigsaw_pb2_grpc.py" not in errors  # no service changed


def test_missing_generated_file(repo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo_copy / "proto/jigsaw/v1/jigsaw_pb2_grpc.py").unlink()
    assert main(["--root", str(repo_copy)]) == 1
    assert "jigsaw_pb2_grpc.py" in capsys.readouterr().err


def test_edited_generated_file(repo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = repo_copy / "proto/jigsaw/v1/jigsaw_pb2_grpc.py"
    generated.write_text(generated.read_text() + "# hand edit\n")
    assert main(["--root", str(repo_copy)]) == 1
    assert "jigsaw_pb2_grpc.py" in capsys.readouterr().err


def test_protoc_failure(repo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo_copy / PROTO_SOURCE).write_text('syntax = "proto3";\nmessage Broken {\n')
    assert main(["--root", str(repo_copy)]) == 2
    assert "protoc failed" in capsys.readouterr().err


def test_module_entry_point() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "client.protocheck"],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
