"""hidiff.files: the one atomic, durable write every package uses."""
from __future__ import annotations

import os
import stat

import pytest

from hidiff.files import atomic_path, plain_file_mode, replace_durably, write_atomic


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "x.bin"
    write_atomic(target, b"old")
    write_atomic(target, "new contents")
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == plain_file_mode()  # not mkstemp's 0600

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"half")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.bin"]


def test_the_file_and_then_its_folder_reach_the_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = write_atomic(tmp_path / "x.json", "{}")
    # The temporary file (now renamed to the target, same inode) first, then the folder.
    assert synced == [target.stat().st_ino, tmp_path.stat().st_ino]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_temporary_names_keep_the_suffix_and_stay_within_name_limits(tmp_path):
    target = tmp_path / ("x" * 246 + ".png")  # 250 characters: mkstemp's additions would pass 255
    with atomic_path(target, suffix=".png") as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".x") and temporary.suffix == ".png"
        assert len(os.fsencode(temporary.name)) <= 255
        temporary.write_bytes(b"image")
    assert target.read_bytes() == b"image"


def test_replace_durably_moves_a_staged_file(tmp_path):
    staged = tmp_path / ".stage"
    staged.write_text("graph")
    assert replace_durably(staged, tmp_path / "le_dm.onnx").read_text() == "graph"
    assert not staged.exists()
