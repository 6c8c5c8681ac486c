"""Atomic writes: all or nothing, with the usual file mode."""

from __future__ import annotations

import os

import pytest

from noisear_rl.io import atomic_path, write_json


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_files_get_the_umask_mode(tmp_path):
    write_json(tmp_path / "b.json", [1])
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o666 & ~mask
