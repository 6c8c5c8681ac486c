"""Atomic writes: all or nothing, with the usual file mode."""

from __future__ import annotations

import os

import pytest

from noisear_rl.io import atomic_folder, atomic_path, write_json


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


def test_atomic_folder_replaces_the_old_folder_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "1"
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~mask


def test_atomic_folder_clears_what_a_killed_swap_left(tmp_path):
    target = tmp_path / "prior"
    (tmp_path / ".prior.k1ll3d.tmp").mkdir()  # killed while writing the new folder
    (tmp_path / ".prior.k1ll3d.tmp" / "half.bin").write_text("half")
    set_aside = tmp_path / ".prior.k1ll3d.old"  # killed between setting the old folder aside and the swap
    set_aside.mkdir()
    (set_aside / "weights.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            raise RuntimeError("this save fails too")
    assert (target / "weights.bin").read_text() == "old"  # the set-aside folder is back where it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior"]
    with atomic_folder(target) as tmp:
        (tmp / "weights.bin").write_text("new")
    assert (target / "weights.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior"]


def test_missing_saved_models_name_what_is_missing_and_how_to_make_it(tmp_path):
    from noisear_rl.noise_sources.golden import load_noise_prompt_network
    from noisear_rl.worlds.shapes import load_shapes_pipeline

    with pytest.raises(FileNotFoundError, match=r"noise prompt network .*config\.json missing.*golden_train"):
        load_noise_prompt_network(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ShapesPipeline .*model_index\.json missing.*shapes\.train"):
        load_shapes_pipeline(path=tmp_path)
