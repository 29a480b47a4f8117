"""One way to write a file safely: whole or not at all, with the permissions the umask gives a new file."""

from __future__ import annotations

import os
import stat

import pytest

from qslr.pipelines.atomic_output import atomic_directory, atomic_path, copy_atomic, partial_path, write_text_atomic


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_a_written_file_appears_whole_with_the_umasks_permissions(tmp_path, umask_027):
    target = tmp_path / "sub" / "model.onnx"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".onnx" and tmp.parent == target.parent  # writers that go by the suffix still do
        tmp.write_bytes(b"graph")
        assert not target.exists()
    assert target.read_bytes() == b"graph" and not tmp.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_leftover(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and not partial_path(target).exists()


def test_a_leftover_of_a_killed_run_is_overwritten(tmp_path):
    target = tmp_path / "video.webm"
    partial_path(target).write_bytes(b"half a video from a killed run")
    write_text_atomic(target, "whole")
    assert target.read_text() == "whole" and not partial_path(target).exists()


def test_copies_and_directories_get_ordinary_permissions(tmp_path, umask_027):
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(3 << 20))
    copy_atomic(source, tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == source.read_bytes()
    with atomic_directory(tmp_path / "dataset") as staging:
        write_text_atomic(staging / "vocab.json", "{}")
    assert stat.S_IMODE((tmp_path / "dataset").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "dataset" / "vocab.json").stat().st_mode) == 0o640
