"""Golden-noise collection: shards, resumption after interruption, the dataset, reward filtering."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from noisear_rl.collect import CollectConfig, collect, main
from noisear_rl.data import GoldenNoiseDataset, list_shards, read_prompt_file, read_shard, shard_path
from noisear_rl.pipelines import DiffusionBackend, load_backend
from noisear_rl.reward_models import register_reward

PROMPTS = ["a red circle", "two blue squares", "a green triangle", "a yellow star", "a purple circle"]


@pytest.fixture(scope="module")
def backend() -> DiffusionBackend:
    return load_backend("tiny-hunyuan-dit", num_inference_steps=2)


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n\n")
    return path


def config_for(prompt_file: Path, out: Path, **overrides) -> CollectConfig:
    base = CollectConfig(
        output_dir=out,
        backend="tiny-hunyuan-dit",
        prompts=prompt_file,
        num_prompts=None,
        noises_per_prompt=3,
        prompts_per_shard=2,
        batch_size=4,
        progress=False,
    )
    return replace(base, **overrides)


def all_tensors(out: Path) -> dict[str, torch.Tensor]:
    shards = [read_shard(path) for path in list_shards(out)]
    return {key: torch.cat([shard[key] for shard in shards]) for key in shards[0]}


class Interrupted(Exception):
    pass


def test_interrupted_collection_resumes_to_the_uninterrupted_result(
    backend: DiffusionBackend, prompt_file: Path, tmp_path: Path
) -> None:
    reference = collect(config_for(prompt_file, tmp_path / "whole"), backend=backend)
    assert reference["complete"] and reference["num_pairs"] == len(PROMPTS) * 3 and reference["num_shards"] == 3

    def stop_after_two(index: int) -> None:
        if index == 1:
            raise Interrupted

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        collect(config_for(prompt_file, out), backend=backend, on_shard_done=stop_after_two)
    assert len(list_shards(out)) == 2
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(RuntimeError, match="unfinished"):
        GoldenNoiseDataset(out, require_complete=True)

    # A killed writer leaves a temporary file; a damaged shard is unreadable: both are redone.
    (out / "shards" / ".shard-00002.safetensors.abc.tmp").write_bytes(b"partial")
    shard_path(out, 0).write_bytes(b"not a safetensors file")
    written: list[int] = []
    resumed = collect(config_for(prompt_file, out), backend=backend, on_shard_done=written.append)
    assert written == [0, 2]  # shard 1 was finished and is kept
    assert resumed["complete"] and resumed["runs"][-1]["shards_written"] == 2
    assert not list((out / "shards").glob("*.tmp"))

    got, expected = all_tensors(out), all_tensors(tmp_path / "whole")
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    pairs = set(zip(got["prompt_index"].tolist(), got["noise_index"].tolist(), strict=True))
    assert len(pairs) == len(got["prompt_index"]) == len(PROMPTS) * 3  # no duplicates, none missing

    assert collect(config_for(prompt_file, out), backend=backend)["runs"][-1]["shards_written"] == 0


def test_dataset_round_trips(backend: DiffusionBackend, prompt_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    collect(config_for(prompt_file, out, storage_dtype="float16"), backend=backend)
    stored = all_tensors(out)
    assert stored["golden"].dtype == torch.float16
    dataset = GoldenNoiseDataset(out, with_noise=True, require_complete=True)
    lazy = GoldenNoiseDataset(out, in_memory=False, with_noise=True)
    assert dataset.prompts == read_prompt_file(prompt_file) == PROMPTS
    assert len(dataset) == len(lazy) == len(PROMPTS) * 3
    assert dataset.latent_shape == backend.latent_shape
    for i in range(len(dataset)):
        item, lazy_item = dataset[i], lazy[i]
        assert item["prompt"] == PROMPTS[item["prompt_index"]] == lazy_item["prompt"]
        assert item["golden"].dtype == torch.float32 and item["golden"].shape == backend.latent_shape
        torch.testing.assert_close(item["golden"], stored["golden"][i].float(), rtol=0, atol=0)
        torch.testing.assert_close(lazy_item["golden"], item["golden"], rtol=0, atol=0)
        torch.testing.assert_close(lazy_item["noise"], item["noise"], rtol=0, atol=0)
    assert dataset[-1]["prompt_index"] == len(PROMPTS) - 1
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    batch = next(iter(torch.utils.data.DataLoader(lazy, batch_size=4)))
    assert batch["golden"].shape == (4, *backend.latent_shape) and len(batch["prompt"]) == 4
    # Golden noises differ from their noises, which are standard normal draws.
    assert (dataset.golden - dataset.noise).abs().mean() > 1e-3  # type: ignore[operator]


def test_other_settings_in_the_same_folder_are_refused(
    backend: DiffusionBackend, prompt_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    collect(config_for(prompt_file, out, num_prompts=2), backend=backend)
    with pytest.raises(ValueError, match="noises_per_prompt.*--overwrite"):
        collect(config_for(prompt_file, out, num_prompts=2, noises_per_prompt=2), backend=backend)
    manifest = collect(
        config_for(prompt_file, out, num_prompts=2, noises_per_prompt=2, overwrite=True), backend=backend
    )
    assert manifest["num_pairs"] == 4 and GoldenNoiseDataset(out).prompts == [PROMPTS[0], PROMPTS[-1]]


@register_reward("test-collect-brightness")
def brightness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    return images.mean(dim=(1, 2, 3))


def test_reward_filtering_keeps_pairs_the_reward_prefers(
    backend: DiffusionBackend, prompt_file: Path, tmp_path: Path
) -> None:
    everything = collect(
        config_for(prompt_file, tmp_path / "all", reward="test-collect-brightness", reward_threshold=-1.0),
        backend=backend,
    )
    assert everything["num_pairs"] == everything["num_candidates"] == 15
    scored = all_tensors(tmp_path / "all")
    gain = scored["reward_golden"] - scored["reward_original"]
    # The stored rewards are those of the images generated from the stored noises.
    cond = backend.encode([PROMPTS[i] for i in scored["prompt_index"][:2]])
    for noise_key, reward_key in (("noise", "reward_original"), ("golden", "reward_golden")):
        images = backend.generate(scored[noise_key][:2], cond)
        torch.testing.assert_close(brightness(images, []), scored[reward_key][:2], rtol=0, atol=1e-4)
    threshold = float(gain.median())
    collect(
        config_for(prompt_file, tmp_path / "kept", reward="test-collect-brightness", reward_threshold=threshold),
        backend=backend,
    )
    kept = all_tensors(tmp_path / "kept")
    expected = gain > threshold
    assert 0 < len(kept["golden"]) == int(expected.sum()) < 15
    torch.testing.assert_close(kept["golden"], scored["golden"][expected], rtol=0, atol=1e-6)
    assert ((kept["reward_golden"] - kept["reward_original"]) > threshold).all()


def test_selected_golden_keeps_the_noises_whose_own_image_the_reward_passes(
    backend: DiffusionBackend, prompt_file: Path, tmp_path: Path
) -> None:
    scored_everything = collect(
        config_for(prompt_file, tmp_path / "all", golden="selected", reward="test-collect-brightness", reward_threshold=-1.0),
        backend=backend,
    )
    assert scored_everything["num_pairs"] == 15
    scored = all_tensors(tmp_path / "all")
    torch.testing.assert_close(scored["golden"], scored["noise"], rtol=0, atol=0)  # the noise is its own target
    cond = backend.encode([PROMPTS[i] for i in scored["prompt_index"][:3]])
    images = backend.generate(scored["noise"][:3], cond)
    torch.testing.assert_close(brightness(images, []), scored["reward_original"][:3], rtol=0, atol=1e-4)
    threshold = float(scored["reward_original"].median())
    collect(
        config_for(prompt_file, tmp_path / "kept", golden="selected", reward="test-collect-brightness", reward_threshold=threshold),
        backend=backend,
    )
    kept = all_tensors(tmp_path / "kept")
    expected = scored["reward_original"] > threshold
    assert 0 < len(kept["golden"]) == int(expected.sum()) < 15
    torch.testing.assert_close(kept["golden"], scored["noise"][expected], rtol=0, atol=0)
    assert (kept["reward_original"] > threshold).all()


def test_selected_golden_needs_a_reward(prompt_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--reward"):
        collect(config_for(prompt_file, tmp_path / "none", golden="selected"))


def test_cli_runs_end_to_end_on_tiny_sdxl(
    prompt_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "sdxl"
    argv = ["collect", "--backend", "tiny-sdxl", "--prompts", str(prompt_file), "--num-prompts", "2",
            "--noises-per-prompt", "2", "--out", str(out), "--no-progress"]  # fmt: skip  (--out: the old --output-dir)
    monkeypatch.setattr(sys, "argv", argv)
    main()
    assert "4 pairs" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"]["class"] == "SDXLBackend" and manifest["golden"]["guidance_scale"] == 5.5
    dataset = GoldenNoiseDataset(out)
    assert len(dataset) == 4 and dataset[0]["golden"].shape == tuple(manifest["latent_shape"])


def test_prompt_files_and_sources(tmp_path: Path) -> None:
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "a cat"}\n\n{"caption": "a dog", "id": 3}\n')
    assert read_prompt_file(jsonl) == ["a cat", "a dog"]
    jsonl.write_text('{"title": "a cat"}\n')
    with pytest.raises(ValueError, match="'prompt'"):
        read_prompt_file(jsonl)
    with pytest.raises(FileNotFoundError):
        read_prompt_file(tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="--prompts FILE"):
        collect(CollectConfig(output_dir=tmp_path / "x", backend="tiny-sdxl", progress=False))


def test_shapes_world_with_its_own_prompt_generator(tmp_path: Path) -> None:
    from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline, sample_prompts

    backend = ShapesBackend(pipe=build_tiny_shapes_pipeline())
    config = CollectConfig(
        output_dir=tmp_path / "shapes", num_prompts=6, prompt_seed=3, noises_per_prompt=4, prompts_per_shard=4, progress=False
    )
    manifest = collect(config, backend=backend)
    assert manifest["num_pairs"] == 24 and manifest["latent_shape"] == list(backend.latent_shape)
    dataset = GoldenNoiseDataset(tmp_path / "shapes", with_noise=True)
    assert dataset.prompts == sample_prompts(6, 3)
    assert torch.isfinite(dataset.golden).all() and not torch.equal(dataset.golden, dataset.noise)  # type: ignore[arg-type]


def test_named_prompt_sets_and_files(prompt_file: Path) -> None:
    from noisear_rl.envs.prompts import prompt_set
    from noisear_rl.worlds.shapes import evaluation_prompts, training_prompts

    assert prompt_set("eval", "shapes") == evaluation_prompts()
    assert prompt_set("train", "shapes") == training_prompts()
    assert prompt_set(str(prompt_file), "sdxl") == PROMPTS
    with pytest.raises(ValueError, match="embedded world.*needs a prompt file"):
        prompt_set("train", "sdxl")


def test_collect_on_the_shapes_training_prompts(tmp_path: Path) -> None:
    from noisear_rl.worlds.shapes import training_prompts

    config = CollectConfig(output_dir=tmp_path / "shapes", backend="shapes", prompts="train", num_prompts=3,
                           noises_per_prompt=1, progress=False)  # fmt: skip
    manifest = collect(config)
    assert manifest["num_pairs"] == 3
    pool = training_prompts()  # --num-prompts spreads evenly over the set, first and last included
    assert GoldenNoiseDataset(tmp_path / "shapes").prompts == [pool[0], pool[len(pool) // 2], pool[-1]]
