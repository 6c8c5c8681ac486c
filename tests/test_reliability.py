"""Nothing lost, nothing half-done (issue 21): one test per case of the issue's checklist, named
after it, plus a fuzz test of the environments. What each guarantee is and which test shows it:
docs/reliability.md."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_noise_sources import PROMPTS as TOY_PROMPTS
from test_noise_sources import RedReward, ToyBackend
from test_train_cli import configs, tiny_prior

import noisear_rl  # noqa: F401  (registers the environments)
from noisear_rl import NoiseARPrior
from noisear_rl import collect as collect_module
from noisear_rl import evaluate as evaluate_module
from noisear_rl import train as train_module
from noisear_rl.collect import CollectConfig, collect
from noisear_rl.data import GoldenNoiseDataset, list_shards, read_shard
from noisear_rl.evaluate import EvaluateConfig, evaluate
from noisear_rl.io import CorruptFileError
from noisear_rl.noise_sources.noisear import resolve_prior
from noisear_rl.run_folder import CheckpointError, checkpoint_dirs
from noisear_rl.train import train
from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline, sample_prompts

INCOMPLETE_PROMPTS = ["a red circle", "red", "on the", "a red circle on the left and"]
GOOD_PROMPT = "a red circle on the left"


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def backend() -> ShapesBackend:
    """The (tiny, random) Shapes world: its pipeline, its `WorldInfo`, its verifier."""
    return ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=2)


@pytest.fixture(scope="module")
def finished_run(backend: ShapesBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-iteration reinforce run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run, algo = configs("reinforce", out, iterations=2, tensorboard=False)
    train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    return out


@pytest.fixture()
def saved_prior(backend: ShapesBackend, tmp_path: Path) -> Path:
    """A tiny prior of the Shapes world's shapes, saved with `save_pretrained`."""
    folder = tmp_path / "prior"
    tiny_prior(backend.cond_dim).save_pretrained(folder)
    return folder


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def resume(backend: ShapesBackend, out: Path, **overrides) -> dict:
    run, algo = configs("reinforce", out, iterations=2, tensorboard=False, resume=True, **overrides)
    return train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def flip_byte(path: Path, offset_from_end: int = 5) -> None:
    """Flips one bit of a byte near the end of a file: inside a safetensors file's tensor data."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def cli(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Runs a command line in-process; returns its exit status and its stderr lines."""
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line_error(code: int, lines: list[str], *needles: str) -> None:
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, lines
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines
    assert len(lines[lines.index(errors[0]):]) <= 2, lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def shapes_env(backend: ShapesBackend) -> gym.Env:
    return gym.make("NoiseAR-Shapes-v1", backend=backend)


def shapes_vector_env(backend: ShapesBackend, num_envs: int = 2) -> gym.vector.VectorEnv:
    return gym.make_vec("NoiseAR-Shapes-v1", num_envs=num_envs, vectorization_mode="vector_entry_point", backend=backend)


def run_episode(env: gym.Env, prompt: str | None = GOOD_PROMPT, seed: int = 0) -> float:
    """A whole episode with standard-normal patches; its reward."""
    env.reset(seed=seed, options=None if prompt is None else {"prompt": prompt})
    rng = np.random.default_rng(seed)
    while True:
        _, reward, terminated, _, _ = env.step(rng.standard_normal(env.action_space.shape).astype(np.float32))
        if terminated:
            return reward


def run_vector_episode(venv: gym.vector.VectorEnv, seed: int = 0) -> np.ndarray:
    venv.reset(seed=seed, options={"prompts": [GOOD_PROMPT] * venv.num_envs})
    rng = np.random.default_rng(seed)
    while True:
        _, rewards, terminated, _, _ = venv.step(rng.standard_normal(venv.action_space.shape).astype(np.float32))
        if terminated.all():
            return rewards


# ======================================================================= data lost or silently wrong
def test_a_run_started_into_a_folder_that_holds_no_checkpoints_never_overwrites_it(backend, tmp_path):
    """A user's config.json, metrics.jsonl and prior/weights.bin stay as they are."""
    out = tmp_path / "mine"
    (out / "prior").mkdir(parents=True)
    (out / "config.json").write_text('{"my": "settings"}')
    (out / "metrics.jsonl").write_text('{"my": 1}\n')
    (out / "prior" / "weights.bin").write_bytes(b"\x00weights")
    before = snapshot(out)
    run, algo = configs("reinforce", out, iterations=1, tensorboard=False)
    with pytest.raises(FileExistsError, match="no training run wrote.*new or empty --output-dir"):
        train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    (out / "config.json").unlink()  # a folder of anything else is refused too
    with pytest.raises(FileExistsError, match="not empty.*metrics.jsonl, prior.*new or empty --output-dir"):
        train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    del before["config.json"]
    assert snapshot(out) == before


def test_a_model_is_never_saved_over_a_users_folder(saved_prior, tmp_path, capsys):
    """Saved models replace only a folder holding a saved model (retraining in place), never a
    user's folder: the network trainer and the release converter refuse it before any work."""
    from noisear_rl.io import save_pretrained_atomically
    from noisear_rl.noise_sources import golden_train
    from noisear_rl.prior import release

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    prior = NoiseARPrior.from_pretrained(saved_prior)
    with pytest.raises(FileExistsError, match="not empty and is not a saved model: nothing in it is replaced"):
        save_pretrained_atomically(prior, mine)
    for main, argv in ((golden_train.main, ["--data", str(tmp_path / "no-data"), "--output-dir", str(mine)]),
                       (release.main, [str(tmp_path / "no.pth"), "--n-heads", "1", "--out", str(mine)])):
        code, lines = cli(main, argv, capsys)
        assert_one_line_error(code, lines, "is not a saved model")
    assert snapshot(mine) == {"notes.txt": b"keep me"}
    save_pretrained_atomically(prior, saved_prior)  # a saved model is replaced, and so is a pipeline
    assert NoiseARPrior.from_pretrained(saved_prior).config == prior.config
    pipeline = build_tiny_shapes_pipeline(seed=0)
    for _ in range(2):
        save_pretrained_atomically(pipeline, tmp_path / "pipeline")
    assert (tmp_path / "pipeline" / "model_index.json").is_file()


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_overwritten_by_a_new_seeds_run(
    backend, finished_run, tmp_path
):
    out = copy_of(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints")
    before = snapshot(out)
    run, algo = configs("reinforce", out, iterations=2, tensorboard=False, seed=1)
    with pytest.raises(FileExistsError, match="holds a run: pass --resume.*new or empty --output-dir"):
        train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    with pytest.raises(ValueError, match="seed: 0 -> 1"):
        resume(backend, out, seed=1)
    assert snapshot(out) == before


def test_bytes_flipped_inside_a_checkpoints_tensor_data_are_an_error_naming_it(backend, finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    (out / "summary.json").unlink()  # as if killed during the final save: resuming loads the checkpoint
    newest = checkpoint_dirs(out)[-1]
    flip_byte(newest / "tensors.safetensors")
    with pytest.raises(CheckpointError, match=f"{newest} is corrupt .*does not match its checksum.*delete {newest}"):
        resume(backend, out)


def test_a_step_edited_into_state_json_is_an_error_naming_it(backend, finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    (out / "summary.json").unlink()
    newest = checkpoint_dirs(out)[-1]
    state = newest / "state.json"
    state.write_text(state.read_text().replace('"step": 2', '"step": 99', 1))
    with pytest.raises(CheckpointError, match=f"{newest} is corrupt \\(state.json: .*checksum.*delete {newest}"):
        resume(backend, out)


@pytest.fixture()
def collection(backend: ShapesBackend, tmp_path: Path) -> tuple[CollectConfig, Path]:
    config = CollectConfig(output_dir=tmp_path / "golden", num_prompts=4, noises_per_prompt=2, prompts_per_shard=2,
                           batch_size=4, progress=False)
    collect(config, backend=backend)
    return config, tmp_path / "golden"


def test_a_collect_shard_with_corrupted_data_bytes_is_not_reported_complete(backend, collection, capsys):
    config, out = collection
    shard = list_shards(out)[0]
    good = {key: value.clone() for key, value in read_shard(shard).items()}
    flip_byte(shard)
    with pytest.raises(CorruptFileError, match=f"{shard}' is corrupt .*checksum.*delete it and rerun"):
        GoldenNoiseDataset(out)
    written: list[int] = []
    manifest = collect(config, backend=backend, on_shard_done=written.append)
    assert written == [0] and manifest["complete"]  # the damaged shard is made again, the other kept
    assert "is damaged" in capsys.readouterr().err
    again = read_shard(shard)
    assert all(torch.equal(again[key], good[key]) for key in good)
    assert len(GoldenNoiseDataset(out, require_complete=True)) == manifest["num_pairs"]


def test_a_prompts_jsonl_cut_short_is_not_reported_complete(backend, collection):
    config, out = collection
    prompts = out / "prompts.jsonl"
    text = prompts.read_text()
    prompts.write_text(text[: len(text) // 2])  # cut mid-line
    with pytest.raises(CorruptFileError, match="prompts.jsonl' is corrupt.*rerun the same collect command"):
        GoldenNoiseDataset(out)
    prompts.write_text(text.splitlines(keepends=True)[0])  # cut at a line end
    with pytest.raises(CorruptFileError, match="prompts.jsonl' is corrupt .*1 prompts do not match the manifest's 4"):
        GoldenNoiseDataset(out)
    assert collect(config, backend=backend)["complete"]  # the rerun rewrites it
    assert prompts.read_text() == text and GoldenNoiseDataset(out).prompts == sample_prompts(4, 0)


def test_an_evaluate_cell_with_corrupted_data_is_recomputed_not_shown_as_nan(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(TOY_PROMPTS) + "\n")
    config = EvaluateConfig(sources=("gaussian",), metrics=("red",), backend="toy", prompts=str(prompts), seeds=(0, 1),
                            batch_size=2, output_dir=tmp_path / "eval", grid_prompts=0, progress=False)
    first = evaluate(config, backend=ToyBackend(), rewards={"red": RedReward()})
    cell = next((tmp_path / "eval" / "cells").rglob("seed-1.safetensors"))
    flip_byte(cell, offset_from_end=3)
    with pytest.raises(CorruptFileError, match="does not match its checksum"):
        evaluate_module.read_cell(cell, "any identity")
    again = evaluate(config, backend=ToyBackend(), rewards={"red": RedReward()})
    assert f"{cell} is damaged" in capsys.readouterr().err
    metrics = again["results"]["gaussian"]["metrics"]
    assert metrics == first["results"]["gaussian"]["metrics"]
    assert all(np.isfinite(value["mean"]) for value in metrics.values())


def test_resume_of_a_finished_run_appends_no_final_evaluation_line(backend, finished_run, tmp_path, capsys):
    out = copy_of(finished_run, tmp_path)
    before = snapshot(out)
    summary = json.loads((out / "summary.json").read_text())
    assert resume(backend, out) == summary and resume(backend, out) == summary
    assert "finished: nothing to do" in capsys.readouterr().out
    assert snapshot(out) == before
    # Killed after the final evaluation was logged, before the summary: one final line all the same.
    (out / "summary.json").unlink()
    assert resume(backend, out)["heldout_after"] == summary["heldout_after"]
    iterations = [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert iterations == [0, 1, 2, 2]


def test_temp_files_of_killed_writes_are_cleaned_on_the_next_start(backend, finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    (out / "summary.json").unlink()
    leftovers = [out / ".metrics.jsonl.k1ll3d00.tmp", out / ".reward_curve.png.k1ll3d01.tmp",
                 out / "images" / ".eval-000002.png.k1ll3d02.tmp", out / "checkpoints" / ".step-000002.k1ll3d03.tmp"]
    for path in leftovers:
        path.mkdir() if path.parent.name == "checkpoints" else path.write_bytes(b"half")
    resume(backend, out)
    assert not [p for p in leftovers if p.exists()]
    assert not list(out.rglob(".*.tmp"))

    # The same for an evaluation's folder, and without counting as content of a new folder.
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / ".config.json.k1ll3d04.tmp").write_text("{")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(TOY_PROMPTS) + "\n")
    config = EvaluateConfig(sources=("gaussian",), metrics=("red",), backend="toy", prompts=str(prompts), seeds=(0,),
                            output_dir=evaluation, grid_prompts=0, progress=False)
    evaluate(config, backend=ToyBackend(), rewards={"red": RedReward()})
    assert not list(evaluation.rglob(".*.tmp")) and (evaluation / "results.md").is_file()


# ======================================================================= work done before input is checked
@pytest.mark.parametrize("prompt", INCOMPLETE_PROMPTS)
def test_incomplete_prompts_fail_in_reset_not_at_the_last_step(backend, prompt):
    env = shapes_env(backend)
    with pytest.raises(ValueError, match="Shapes prompt needs exactly one colour"):
        env.reset(seed=0, options={"prompt": prompt})
    with pytest.raises(RuntimeError, match=r"call reset\(\)"):
        env.step(np.zeros(env.action_space.shape, np.float32))
    assert 0.0 <= run_episode(env) <= 1.0  # still usable


def test_an_action_of_1e20_fails_at_its_step_and_leaves_the_episode_as_it_was(backend):
    env = shapes_env(backend)
    expected = run_episode(env, seed=3)
    env.reset(seed=3, options={"prompt": GOOD_PROMPT})
    rng = np.random.default_rng(3)
    actions = [rng.standard_normal(env.action_space.shape).astype(np.float32) for _ in range(16)]
    for t, action in enumerate(actions):
        if t in (0, 15):  # the first and the last step
            for bad in (np.full_like(action, 1e20), np.full_like(action, -1e39, dtype=np.float64)):
                with pytest.raises(ValueError, match="within ±1000.*episode is unchanged"):
                    env.step(bad)
        obs, reward, terminated, _, _ = env.step(action)
    assert terminated and reward == expected


@pytest.mark.parametrize("command", ["train", "collect", "evaluate"])
def test_prompt_files_with_incomplete_prompts_fail_before_any_file_is_written(command, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{GOOD_PROMPT}\n" + "\n".join(INCOMPLETE_PROMPTS) + "\n")
    out = tmp_path / "out"
    argv = {
        "train": (train_module.main, ["--train-prompts", str(prompts), "--output-dir", str(out)]),
        "collect": (collect_module.main, ["--backend", "shapes", "--prompts", str(prompts), "--output-dir", str(out)]),
        "evaluate": (evaluate_module.main, ["--backend", "shapes", "--prompts", str(prompts), "--output-dir", str(out)]),
    }[command]
    code, lines = cli(*argv, capsys)
    assert_one_line_error(code, lines, f"{prompts}:2:", "'a red circle'", "exactly one colour")
    assert not out.exists()


@pytest.mark.parametrize(
    ("case", "argv", "needles"),
    [
        ("unknown env", ["--env", "NoiseAR-Nope-v0"], ["unknown environment 'NoiseAR-Nope-v0'", "NoiseAR-Shapes-v1"]),
        ("unknown reward", ["--reward", "shapez"], ["unknown reward 'shapez'", "valid names"]),
        ("malformed composite spec", ["--reward", "shapes:1.0,,"], ["empty term"]),
        ("composite spec weight", ["--reward", "shapes:heavy"], ["'heavy' of 'shapes' is not a number"]),
        ("missing prompt file", ["--eval-prompts", "no-such-prompts.txt"], ["prompt file 'no-such-prompts.txt' does not exist"]),
        ("missing --prior", ["--prior", "no-such-prior"], ["no NoiseAR prior at 'no-such-prior': no such file or folder"]),
        ("malicious .pth", ["--prior", "{evil}"], ["does not record its number of attention heads"]),
    ],
)
def test_unknown_env_reward_spec_missing_prompt_files_or_prior_and_malicious_pth_fail_in_one_line_writing_nothing(
    case, argv, needles, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    payload = malicious_pth(tmp_path / "evil.pth")
    argv = [a.format(evil=tmp_path / "evil.pth") for a in argv]
    code, lines = cli(train_module.main, [*argv, "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, lines, *needles)
    assert not (tmp_path / "out").exists() and not payload.exists()


def malicious_pth(path: Path) -> Path:
    """Writes a .pth whose unpickling would create a file; returns that file's path."""
    payload = path.with_name("payload-ran")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {payload}",))

    torch.save({"w": Payload()}, path)
    return payload


def test_a_malicious_pth_is_refused_in_one_line_before_the_evaluation_writes(tmp_path, capsys):
    """Loaded weights-only: nothing in it runs; the source is checked before any file is written."""
    payload = malicious_pth(tmp_path / "evil.pth")
    argv = ["--backend", "tiny-sdxl", "--metrics", "jpeg-compressibility", "--num-prompts", "2",
            "--sources", "gaussian", f"noisear:{tmp_path / 'evil.pth'}?n_heads=1", "--output-dir", str(tmp_path / "out")]
    code, lines = cli(evaluate_module.main, argv, capsys)
    assert_one_line_error(code, lines, "evil.pth", "nothing in it was run", "pickled objects")
    assert not (tmp_path / "out").exists() and not payload.exists()


@pytest.mark.parametrize("command", ["train", "collect", "evaluate"])
def test_device_cuda_on_a_cpu_machine_fails_in_one_line(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    main, flag = {"train": (train_module.main, "--output-dir"), "collect": (collect_module.main, "--output-dir"),
                  "evaluate": (evaluate_module.main, "--output-dir")}[command]
    code, lines = cli(main, ["--device", "cuda", flag, str(out)], capsys)
    assert_one_line_error(code, lines, "--device cuda", "no usable CUDA device", "pass --device cpu")
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--dpo.iterations", "-2"], "--dpo.iterations must be >= 1, got -2"),
        (["--dpo.rollouts-per-prompt", "1"], "--dpo.rollouts-per-prompt must be >= 2, got 1"),
        (["--dpo.prompts-per-iteration", "0"], "--dpo.prompts-per-iteration must be >= 1, got 0"),
        (["--dpo.pairs-per-prompt", "3"], "--dpo.pairs-per-prompt (3) must be at most --dpo.rollouts-per-prompt // 2 (2)"),
        (["--num-eval-prompts", "0"], "--num-eval-prompts must be >= 1, got 0"),
        (["--algo", "ppo", "--ppo.minibatch-size", "0"], "--ppo.minibatch-size must be >= 1, got 0"),
        (["--algo", "nll", "--nll.lr", "nan"], "--nll.lr must be a finite number > 0, got nan"),
    ],
)
def test_meaningless_or_crashing_configs_are_refused_before_any_work(argv, needle, tmp_path, capsys):
    code, lines = cli(train_module.main, [*argv, "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, lines, needle)
    assert not (tmp_path / "out").exists()


def test_a_binary_prompt_file_is_an_error_naming_the_file(tmp_path, capsys):
    binary = tmp_path / "prompts.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("a caf\xe9 on the left\n".encode("latin-1"))
    for path, needle in ((binary, "is not a text file"), (latin1, "is not UTF-8 text")):
        code, lines = cli(evaluate_module.main, ["--backend", "tiny-sdxl", "--prompts", str(path),
                                                 "--output-dir", str(tmp_path / "out")], capsys)
        assert_one_line_error(code, lines, f"prompt file {str(path)!r}", needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("best-of-n:abc", "n='abc' must be int"), ("noisear:x?temperature=abc", "temperature='abc' must be float or None")],
)
def test_best_of_n_abc_and_temperature_abc_are_refused_before_any_work(spec, needle, tmp_path, capsys):
    code, lines = cli(evaluate_module.main, ["--sources", "gaussian", spec, "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, lines, needle, f"spec {spec!r}")
    assert not (tmp_path / "out").exists()


def test_a_garbage_run_config_json_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"run": {"seed": 0,,,')
    for resume_flag in ([], ["--resume"]):
        code, lines = cli(train_module.main, ["--output-dir", str(out), *resume_flag], capsys)
        assert_one_line_error(code, lines, "config.json' is corrupt (not readable JSON", "nothing in")
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_a_saved_prior_with_a_flipped_header_is_a_clear_error_naming_its_path(saved_prior):
    weights = saved_prior / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[10] ^= 0x01  # inside the JSON header
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"NoiseAR prior at '{saved_prior}' cannot be loaded.*corrupt") as error:
        NoiseARPrior.from_pretrained(saved_prior)
    assert "meta tensors" not in str(error.value)


@pytest.mark.parametrize("path", ["missing-prior-folder", "./runs/missing", "/nonexistent/prior", "runs/x/y/prior"])
def test_a_missing_prior_folder_never_mentions_the_hub(path):
    for load, shown in ((NoiseARPrior.from_pretrained, path), (resolve_prior, str(Path(path)))):
        with pytest.raises(FileNotFoundError, match=f"no NoiseAR prior at '{re.escape(shown)}'.*no such") as error:
            load(path)
        assert "hub" not in str(error.value).lower()
    from noisear_rl.pipelines.factory import load_backend

    with pytest.raises(OSError, match="does not exist") as error:
        load_backend("sdxl", model=path)
    assert "hub" not in str(error.value).lower()
    # A string written as a Hub id may name the Hub: it is one.
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub repo id"):
        NoiseARPrior.from_pretrained("noisear-rl-tests/absent-prior")


def test_nan_weights_are_refused_when_the_prior_loads_not_blamed_on_the_action(saved_prior, tmp_path):
    prior = NoiseARPrior.from_pretrained(saved_prior)
    with torch.no_grad():
        prior.logvar_head[0].weight[0, 0] = float("nan")
    prior.save_pretrained(tmp_path / "nan")
    for load in (NoiseARPrior.from_pretrained, resolve_prior):
        with pytest.raises(ValueError, match=f"prior at '{tmp_path / 'nan'}' has non-finite weights in 'logvar_head.0.weight'"):
            load(tmp_path / "nan")


def test_errors_show_the_traceback_with_debug_or_noisear_debug(tmp_path, capsys, monkeypatch):
    argv = ["--dpo.iterations", "0", "--output-dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="--dpo.iterations must be >= 1"):
        train_module.main([*argv, "--debug"])
    monkeypatch.setenv("NOISEAR_DEBUG", "1")
    with pytest.raises(ValueError, match="--dpo.iterations must be >= 1"):
        train_module.main(argv)
    monkeypatch.setenv("NOISEAR_DEBUG", "0")
    assert train_module.main(argv) == 2
    with pytest.raises(SystemExit):
        train_module.parse_args(["--help"])
    assert "NOISEAR_DEBUG=1" in capsys.readouterr().out
    # As a process: exit status 2, one line on stderr.
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NOISEAR_DEBUG": ""}
    result = subprocess.run([sys.executable, "-m", "noisear_rl.evaluate", "--seeds", "1", "1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == "error: seeds must be distinct, got (1, 1)"
    assert "Traceback" not in result.stderr


# ======================================================================= environments left broken
@pytest.mark.parametrize(
    "options",
    [{"prompt": "a purple circle on the left"}, {"prompts": [GOOD_PROMPT]}, {"prompt": 7}, "a red circle on the left"],
    ids=["unknown word", "bad option", "non-string prompt", "options not a dict"],
)
def test_after_a_failed_first_reset_step_says_call_reset_and_reset_works(backend, options):
    env = shapes_env(backend)  # as gym.make builds it, wrappers included
    with pytest.raises((ValueError, TypeError)):
        env.reset(seed=0, options=options)
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"call reset\(\)"):
            env.step(np.zeros(env.action_space.shape, np.float32))
    assert 0.0 <= run_episode(env) <= 1.0
    venv = shapes_vector_env(backend)
    with pytest.raises((ValueError, TypeError)):
        venv.reset(seed=0, options=options)
    with pytest.raises(RuntimeError, match=r"call reset\(\)"):
        venv.step(np.zeros(venv.action_space.shape, np.float32))
    assert run_vector_episode(venv).shape == (2,)


@pytest.mark.parametrize("prompt", [[GOOD_PROMPT], {"prompt": GOOD_PROMPT}, (GOOD_PROMPT,)], ids=["list", "dict", "tuple"])
def test_list_or_dict_prompts_are_clear_errors(backend, prompt):
    env = shapes_env(backend)
    with pytest.raises(TypeError, match=f"options\\['prompt'\\]: a prompt must be a string, got {type(prompt).__name__}"):
        env.reset(options={"prompt": prompt})
    venv = shapes_vector_env(backend)
    with pytest.raises(TypeError, match=r"options\['prompts'\]\[1\]: a prompt must be a string"):
        venv.reset(options={"prompts": [GOOD_PROMPT, prompt]})
    assert 0.0 <= run_episode(env) <= 1.0


@pytest.mark.parametrize("prompt", ["", "   ", "\n", None])
def test_empty_blank_or_none_prompts_are_errors_unless_random_prompts_were_asked_for(backend, prompt):
    env = shapes_env(backend)
    with pytest.raises(ValueError, match=r"options\['prompt'\] is .*leave it out of the options to draw a random one"):
        env.reset(seed=0, options={"prompt": prompt})
    venv = shapes_vector_env(backend)
    with pytest.raises(ValueError, match=r"options\['prompts'\]\[0\] is "):
        venv.reset(seed=0, options={"prompts": [prompt, GOOD_PROMPT]})
    with pytest.raises(ValueError, match=r"options\['prompts'\] must be a list of 2 prompts"):
        venv.reset(seed=0, options={"prompts": prompt})
    # Asking for random prompts: no "prompt" in the options (or no options at all).
    drawn = [env.reset(seed=s, options=options)[1]["prompt"] for s, options in ((0, None), (1, {}))]
    assert all(p.strip() for p in drawn)
    venv.reset(seed=0)
    assert all(p.strip() for p in venv.unwrapped.prompts)


def test_a_failed_last_step_ends_the_episode_and_step_says_call_reset(backend, monkeypatch):
    env = shapes_env(backend)
    world = env.unwrapped.world
    real_score = world.score

    def failing_score(*args, **kwargs):
        raise RuntimeError("the diffusion model ran out of memory")

    monkeypatch.setattr(world, "score", failing_score)
    env.reset(seed=0, options={"prompt": GOOD_PROMPT})
    for _ in range(15):
        env.step(np.zeros(env.action_space.shape, np.float32))
    with pytest.raises(RuntimeError, match="out of memory"):
        env.step(np.zeros(env.action_space.shape, np.float32))
    with pytest.raises(RuntimeError, match=r"call reset\(\)"):
        env.step(np.zeros(env.action_space.shape, np.float32))
    monkeypatch.setattr(world, "score", real_score)
    assert 0.0 <= run_episode(env) <= 1.0


# ======================================================================= fuzz
def bad_prompts(rng: np.random.Generator) -> list[object]:
    words = ["a", "on", "the", "and", "red", "blue", "circle", "square", "left", "right", "top", "purple", "dog", "!"]
    random_words = " ".join(rng.choice(words, size=int(rng.integers(0, 8))))
    return [
        None, "", "   ", "\t\n", 0, 1.5, float("nan"), b"a red circle on the left", ["a"], {"x": 1}, (GOOD_PROMPT,),
        object(), "a red circle", "red", "on the", f"{GOOD_PROMPT} and", f"{GOOD_PROMPT} and a red square on the right",
        "a red dog on the left", "\x00", "ä" * 5, random_words or "and", "a " * 200,
    ]


def bad_actions(rng: np.random.Generator, shape: tuple[int, ...]) -> list[object]:
    good = rng.standard_normal(shape).astype(np.float32)
    with_nan = good.copy()
    with_nan.flat[int(rng.integers(good.size))] = np.nan
    return [
        None, "noise", 3.0, [1.0, 2.0], good[..., :-1], good[None], good.astype(np.int64), good > 0,
        good.astype(np.complex64), with_nan, np.full(shape, np.inf, np.float32), good * 1e20, -good * 1e5,
        np.full(shape, 1e39), torch.full(shape, float("nan")), [[0.0] * 3] * 2, {"action": good}, good.reshape(-1)[:1],
        np.zeros((), np.float32), np.array(["a"] * good.size).reshape(shape),
    ]


@pytest.mark.parametrize("vector", [False, True], ids=["env", "vector env"])
def test_fuzz_reset_and_step_with_random_bad_inputs_keep_the_env_usable(backend, vector):
    """Random bad prompts, options, seeds and actions between good calls: every failure is an
    exception naming the problem (ValueError, TypeError, RuntimeError; Gymnasium's own error for a
    negative seed); a failed reset leaves no episode (step says to call reset()), a refused action
    leaves the episode as it was, and afterwards a whole episode runs and scores as on a fresh env."""
    rng = np.random.default_rng(21)
    env = shapes_vector_env(backend) if vector else shapes_env(backend)
    expected = run_vector_episode(shapes_vector_env(backend), seed=5) if vector else run_episode(shapes_env(backend), seed=5)
    shape = env.action_space.shape
    errors = (ValueError, TypeError, RuntimeError, gym.error.Error)
    state = "none"  # "episode" (num_done patches chosen), "none" (no episode), or "autoreset" (vector, after the end)
    num_done, failures, finished = 0, 0, 0
    kinds = ["bad reset", "bad step", "good reset", "good step"]
    for _ in range(600):  # in an episode mostly steps, so that episodes reach their last step
        kind = rng.choice(kinds, p=[0.03, 0.37, 0.01, 0.59] if state == "episode" else [0.45, 0.2, 0.25, 0.1])
        action = rng.standard_normal(shape).astype(np.float32)
        if kind == "bad reset":
            choices = bad_prompts(rng)
            prompt = choices[int(rng.integers(len(choices)))]
            key = "prompts" if vector else "prompt"
            value = [GOOD_PROMPT, prompt] if vector and rng.random() < 0.7 else prompt
            options = [{key: value}, {"promt": GOOD_PROMPT}, [key, value]][int(rng.integers(3))]
            seed = -1 if rng.random() < 0.1 else int(rng.integers(100))
            try:
                env.reset(seed=seed, options=options)
                state, num_done = "episode", 0  # a prompt that happens to be valid
            except errors as error:
                failures += 1
                assert str(error)
                state = "none"
        elif kind == "bad step" and state != "autoreset":
            choices = bad_actions(rng, shape)
            noise_before = env.unwrapped.noise.clone() if state == "episode" and not vector else None
            with pytest.raises((ValueError, RuntimeError)) as error:
                env.step(choices[int(rng.integers(len(choices)))])
            failures += 1
            assert ("action" if state == "episode" else "call reset()") in str(error.value)
            if noise_before is not None:
                assert torch.equal(env.unwrapped.noise, noise_before)
        elif kind == "good reset":
            env.reset(options={"prompts": [GOOD_PROMPT] * env.num_envs} if vector else {"prompt": GOOD_PROMPT})
            state, num_done = "episode", 0
        elif state == "none":
            with pytest.raises(RuntimeError, match=r"call reset\(\)"):
                env.step(action)
        else:  # a good step, or any step after the vector env's last one (it resets, ignoring the action)
            obs, _, terminated, _, _ = env.step(action)
            num_done = 0 if state == "autoreset" else num_done + 1
            assert np.all(obs["num_done"] == num_done)  # refused actions never counted
            finished += int(np.all(terminated))
            state = ("autoreset" if vector else "none") if np.all(terminated) else "episode"
    assert failures > 150 and finished >= 3, (failures, finished)
    if vector:
        np.testing.assert_allclose(run_vector_episode(env, seed=5), expected, atol=1e-6)
    else:
        assert run_episode(env, seed=5) == pytest.approx(expected, abs=1e-6)


def test_a_prompt_list_given_to_the_env_is_checked_when_it_is_made(backend):
    with pytest.raises(ValueError, match="exactly one colour"):
        gym.make("NoiseAR-Shapes-v1", backend=backend, prompts=[GOOD_PROMPT, "a red circle"])
    with pytest.raises(ValueError, match="must not be empty"):
        gym.make("NoiseAR-SDXL-v0", backend=ToyBackend(), reward=RedReward(), patch_size=2, prompts=["a cat", " "])
    env = gym.make("NoiseAR-Shapes-v1", backend=backend, prompts=[GOOD_PROMPT])
    assert env.reset(seed=0)[1]["prompt"] == GOOD_PROMPT


def test_kill_9_in_the_middle_of_writing_a_checkpoint_resumes_to_the_uninterrupted_result(backend, tmp_path):
    """A real SIGKILL while a checkpoint's tensors are half written: the half-written folder is
    cleaned away on the next start, which resumes from the previous checkpoint."""
    import signal
    import subprocess
    import textwrap

    out = tmp_path / "killed"
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        torch.set_num_threads({torch.get_num_threads()})
        from test_train_cli import configs, tiny_prior
        import noisear_rl.run_folder as run_folder
        from noisear_rl.train import train
        from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline

        save = run_folder.save_safetensors
        def save_and_die(path, tensors, metadata=None):
            save(path, tensors, metadata)
            if ".step-000002." in str(path):
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        run_folder.save_safetensors = save_and_die
        backend = ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=2)
        run, algo = configs("reinforce", {str(out)!r}, iterations=3, tensorboard=False, checkpoint_every=1)
        train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert [p.name for p in checkpoint_dirs(out)] == ["step-000001"] and list(out.rglob(".step-000002.*.tmp"))

    run, algo = configs("reinforce", out, iterations=3, tensorboard=False, checkpoint_every=1, resume=True)
    resumed = tiny_prior(backend.cond_dim)
    summary = train(run, algo, backend=backend, prior=resumed)
    straight_run, _ = configs("reinforce", tmp_path / "straight", iterations=3, tensorboard=False, checkpoint_every=1)
    straight = tiny_prior(backend.cond_dim)
    expected = train(straight_run, algo, backend=backend, prior=straight)
    assert not list(out.rglob(".*.tmp"))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert summary["heldout_after"] == pytest.approx(expected["heldout_after"], abs=1e-6)


def test_runs_that_are_not_finished_still_resume_and_a_killed_first_start_restarts(backend, tmp_path):
    """The refusals above do not refuse a run's own folder: a run killed before its first
    checkpoint (its folder holds config.json and little else) starts over with --resume."""
    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill(done: int) -> None:
        raise Killed

    run, algo = configs("reinforce", out, iterations=2, tensorboard=False, checkpoint_every=2)
    with pytest.raises(Killed):
        train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim), callback=kill)
    assert not checkpoint_dirs(out) and (out / "config.json").is_file()
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    summary = train(dataclasses.replace(run, resume=True), algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    straight, _ = configs("reinforce", tmp_path / "straight", iterations=2, tensorboard=False, checkpoint_every=2)
    assert summary["heldout_after"] == train(straight, algo, backend=backend, prior=tiny_prior(backend.cond_dim))["heldout_after"]
