"""The training loop and CLI on the tiny Shapes world: run folder, resume, errors, 2 processes."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from noisear_rl import NoiseARPrior
from noisear_rl.algorithms import get_algorithm
from noisear_rl.algorithms.trainable import shift_map_settings
from noisear_rl.data import shard_path, write_manifest, write_prompts, write_shard
from noisear_rl.noise_sources.noisear import NoiseARSource
from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline, sample_prompts
from noisear_rl.run_folder import CheckpointError, checkpoint_dirs, flatten_state, unflatten_state
from noisear_rl.train import RunConfig, parse_args, train

ALGORITHMS = ("dpo", "nll", "ppo", "reinforce")


@pytest.fixture(scope="module")
def backend() -> ShapesBackend:
    return ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=2)


def tiny_prior(cond_dim: int, seed: int = 0, prompt_shift_width: int = 0) -> NoiseARPrior:
    torch.manual_seed(seed)
    return NoiseARPrior(
        latent_channels=3, latent_height=32, latent_width=32, patch_size=8,
        cond_dim=cond_dim, d_model=32, d_ff=64, n_heads=2, n_layers=1, dropout=0.1,
        prompt_shift_width=prompt_shift_width,
    )


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory) -> Path:
    """A small golden-noise collection in the format `python -m noisear_rl.collect` writes."""
    root = tmp_path_factory.mktemp("golden")
    prompts = sample_prompts(8, seed=0)
    g = torch.Generator().manual_seed(0)
    rows = 32
    write_prompts(root / "prompts.jsonl", prompts)
    write_shard(shard_path(root, 0), {
        "noise": torch.randn(rows, 3, 32, 32, generator=g),
        "golden": torch.randn(rows, 3, 32, 32, generator=g) * 0.8 + 0.2,
        "prompt_index": torch.arange(rows) % len(prompts),
        "noise_index": torch.arange(rows) // len(prompts),
    })
    write_manifest(root, {"latent_shape": [3, 32, 32], "complete": True})
    return root


def configs(name: str, out: Path, iterations: int = 2, **run_overrides) -> tuple[RunConfig, object]:
    cls = get_algorithm(name)
    if cls.uses_rollouts:
        # A fresh tiny prior has no fitted shift whose gain (the default) could train: train the shift's maps.
        algo = cls.config_class(iterations=iterations, prompts_per_iteration=2, rollouts_per_prompt=4,
                                **{**shift_map_settings(name), "lr": 1e-3})
    else:
        algo = cls.config_class(iterations=iterations, batch_size=8, warmup_iterations=0)
    if name == "dpo":
        algo.score_gap = -1.0  # pair every prompt: the tiny random world often scores a prompt's rollouts alike
    run = RunConfig(algo=name, output_dir=out, num_envs=8, num_eval_prompts=4, progress=False, **run_overrides)
    return run, algo


def run_training(backend, name, out, golden_dir=None, callback=None, **overrides):
    run, algo = configs(name, out, **overrides)
    if name == "nll":
        run = dataclasses.replace(run, data=str(golden_dir))
    prior = tiny_prior(backend.cond_dim)
    summary = train(run, algo, backend=backend, prior=prior, callback=callback)
    return summary, prior


def test_training_never_sees_a_prompt_of_the_evaluation_pool(backend, tmp_path, monkeypatch):
    """Every prompt of `evaluation_prompts()` (what `noisear_rl.evaluate` scores) is held out of
    training, not only the `num_eval_prompts` scored during the run."""
    from noisear_rl.worlds.shapes import evaluation_prompts

    algorithm = get_algorithm("reinforce")
    trained: list[str] = []
    update = algorithm.update
    monkeypatch.setattr(algorithm, "update", lambda self, batch: trained.extend(batch.prompts) or update(self, batch))
    run_training(backend, "reinforce", tmp_path / "run", iterations=3)
    assert len(trained) == 3 * 2 * 4
    assert not set(trained) & set(evaluation_prompts())


@pytest.mark.parametrize("name", ALGORITHMS)
def test_each_algorithm_trains_and_writes_its_run_folder(backend, golden_dir, tmp_path, name, capsys):
    out = tmp_path / "run"
    summary, prior = run_training(backend, name, out, golden_dir)
    assert set(summary["heldout_before"]) >= {"reward", "success"}
    assert 0.0 <= summary["heldout_after"]["success"] <= 1.0
    # The paired change is after - before on the same prompts and noises, inside its own interval.
    for metric in ("reward", "success"):
        mean, low, high = summary["heldout_change"][metric]
        assert mean == pytest.approx(summary["heldout_after"][metric] - summary["heldout_before"][metric], abs=1e-9)
        assert low <= mean <= high
    printed = capsys.readouterr().out
    assert "held-out (4 prompts x 4 noises) before" in printed
    assert "held-out change, paired over the same prompts and noises: reward" in printed
    assert "policy (what the prior samples with): temperature 1 -> 1" in printed  # these runs' priors keep theirs

    config = json.loads((out / "config.json").read_text())
    assert config["run"]["algo"] == name and config["algorithm"]["iterations"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2, 2]  # eval before, 2 iterations, eval after
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in records[1:3])
    if name != "nll":
        assert "rollout/reward" in records[1] and "rollout/success" in records[1]
    assert [p.name for p in checkpoint_dirs(out)] == ["step-000001", "step-000002"]
    assert list((out / "tensorboard").iterdir())
    assert (out / "images" / "eval-000000.png").is_file() and (out / "images" / "eval-000002.png").is_file()
    assert (out / "reward_curve.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["heldout_after"] == summary["heldout_after"]
    reloaded = NoiseARPrior.from_pretrained(str(out / "prior"))
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), prior.state_dict().values()))


def test_a_runs_temperature_becomes_its_saved_priors_default(backend, golden_dir, tmp_path):
    """A prior trained at --temperature T samples at T wherever it is loaded without one (the
    shipped Shapes prior is saved this way, at the release's 0.5)."""
    out = tmp_path / "run"
    _, prior = run_training(backend, "nll", out, golden_dir, iterations=1, temperature=0.5)
    assert prior.config.temperature == 0.5
    saved = NoiseARPrior.from_pretrained(str(out / "prior"))
    assert saved.sampling_temperature() == 0.5
    cond = backend.encode(["a red circle on the left"] * 2).embeds
    torch.testing.assert_close(saved.sample(cond, generator=torch.Generator().manual_seed(1)),
                               saved.sample(cond, generator=torch.Generator().manual_seed(1), temperature=0.5))


def test_rl_can_train_the_prompt_shift_alone(tmp_path):
    backend = ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=2)
    run, algo = configs("reinforce", tmp_path / "run")
    algo.trainable, algo.lr = "prompt-shift", 1e-2
    prior = tiny_prior(backend.cond_dim, prompt_shift_width=8)
    before = {name: p.detach().clone() for name, p in prior.named_parameters()}
    summary = train(run, algo, backend=backend, prior=prior)
    changed = {name for name, p in prior.named_parameters() if not torch.equal(before[name], p)}
    assert changed and all(name.startswith("prompt_shift.") for name in changed), changed
    assert summary["heldout_prompts"] == 4  # from the Shapes world's evaluation set
    reloaded = NoiseARPrior.from_pretrained(str(tmp_path / "run" / "prior"))
    assert torch.equal(reloaded.prompt_shift.out_weight, prior.prompt_shift.out_weight)


@pytest.mark.parametrize("name", ["ppo", "nll"])
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(backend, golden_dir, tmp_path, name):
    _, straight = run_training(backend, name, tmp_path / "straight", golden_dir, iterations=3)

    class Killed(Exception):
        pass

    def kill_after_first(done: int) -> None:
        if done == 1:
            raise Killed

    with pytest.raises(Killed):
        run_training(backend, name, tmp_path / "resumed", golden_dir, iterations=3, callback=kill_after_first)
    summary, resumed = run_training(backend, name, tmp_path / "resumed", golden_dir, iterations=3, resume=True)

    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    metrics = [
        [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in open(folder / "metrics.jsonl")]
        for folder in (tmp_path / "straight", tmp_path / "resumed")
    ]
    assert metrics[0] == metrics[1]
    assert summary["heldout_before"] == json.loads((tmp_path / "straight" / "summary.json").read_text())["heldout_before"]


def test_corrupt_or_missing_checkpoints_give_clear_errors(backend, tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume.*run without --resume"):
        run_training(backend, "reinforce", tmp_path / "empty", resume=True)

    out = tmp_path / "run"
    run_training(backend, "reinforce", out, iterations=1)
    (out / "summary.json").unlink()  # as if killed before the end: a finished run is not resumed at all
    newest = checkpoint_dirs(out)[-1]
    tensors = newest / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{newest} is corrupt.*delete .*previous checkpoint"):
        run_training(backend, "reinforce", out, iterations=1, resume=True)
    tensors.unlink()
    with pytest.raises(CheckpointError, match="incomplete.*tensors.safetensors missing"):
        run_training(backend, "reinforce", out, iterations=1, resume=True)


def test_a_run_is_never_overwritten_nor_resumed_with_other_settings(backend, tmp_path):
    out = tmp_path / "run"
    run_training(backend, "reinforce", out, iterations=1)
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(backend, "reinforce", out, iterations=1)
    with pytest.raises(ValueError, match="seed: 0 -> 1"):
        run_training(backend, "reinforce", out, iterations=1, resume=True, seed=1)


def test_shipped_prior_missing_names_the_command(monkeypatch, tmp_path):
    from dataclasses import replace

    import noisear_rl.worlds.shapes as shapes
    from noisear_rl.training.setup import load_prior

    monkeypatch.setattr(shapes, "WORLD", replace(shapes.WORLD, prior=tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="--algo nll --data"):
        load_prior(RunConfig())


def test_shipped_prior_fits_the_shipped_shapes_world():
    from noisear_rl.training.setup import load_prior
    from noisear_rl.worlds.shapes import load_shapes_pipeline

    prior = load_prior(RunConfig())
    assert tuple(prior.latent_shape) == (3, 32, 32) and prior.config.patch_size == 8
    assert prior.config.cond_dim == load_shapes_pipeline().text_encoder.config.hidden_size
    assert sum(p.numel() for p in prior.parameters()) < 2_000_000


def test_checkpoint_state_round_trips_optimizer_state():
    prior = tiny_prior(16)
    optimizer = torch.optim.Adam(prior.parameters(), betas=(0.8, 0.9))
    prior.mean_head[-1].bias.sum().backward()
    optimizer.step()
    tree, tensors = flatten_state({"optimizer": optimizer.state_dict(), "note": ("a", 1)})
    restored = unflatten_state(json.loads(json.dumps(tree)), tensors)
    assert restored["note"] == ("a", 1)
    fresh = torch.optim.Adam(prior.parameters())
    fresh.load_state_dict(restored["optimizer"])
    assert fresh.param_groups[0]["betas"] == (0.8, 0.9)
    assert len(fresh.state) == len(optimizer.state) > 0


def test_cli_flags_come_from_the_configs(capsys):
    run, algo = parse_args(["--algo", "ppo", "--seed", "3", "--ppo.clip-range", "0.1", "--ppo.no-per-patch"])
    assert run.algo == "ppo" and run.seed == 3
    assert algo.clip_range == 0.1 and algo.per_patch is False
    run, algo = parse_args([])
    assert run.algo == "dpo" and type(algo).__name__ == "DPOConfig"
    with pytest.raises(KeyError, match="valid names: dpo, grpo, nll, ppo, reinforce"):
        parse_args(["--algo", "a2c"])
    with pytest.raises(SystemExit):
        parse_args(["--algo", "dpo", "--help"])
    text = capsys.readouterr().out
    assert "--dpo.beta" in text and "--dpo.score-gap" in text and "--resume" in text and "--output-dir" in text


def test_two_processes_with_accelerate(tmp_path):
    """`accelerate launch` with 2 CPU processes: both end with the same parameters."""
    script = tmp_path / "two.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train_cli import configs, tiny_prior
        from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline
        from noisear_rl.train import train
        torch.set_num_threads(1)
        backend = ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=1)
        run, algo = configs("dpo", {str(tmp_path / "run")!r}, iterations=2, tensorboard=False)
        prior = tiny_prior(backend.cond_dim)
        summary = train(run, algo, backend=backend, prior=prior)
        total = sum(float(p.double().sum()) for p in prior.parameters())
        # one file per process: lines printed by two processes to one pipe can interleave
        with open({str(tmp_path)!r} + "/process-" + os.environ["RANK"] + ".txt", "w") as f:
            f.write(f"{{summary['num_processes']}} {{total!r}}")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port, so parallel launches elsewhere cannot collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), str(script)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = [(tmp_path / f"process-{rank}.txt").read_text().split() for rank in (0, 1)]
    assert all(processes == "2" for processes, _ in results)
    assert results[0][1] == results[1][1]  # the gradient averaging keeps both copies identical
    assert (tmp_path / "run" / "summary.json").is_file()


def test_the_default_knobs_are_learned_saved_and_evaluated_as_learned(backend, tmp_path, capsys):
    """With the defaults (trainable="gain-temperature") a run changes the shift's gain and the
    temperature; the saved prior samples with the learned temperature, and the run printed both moves."""
    prior = tiny_prior(backend.cond_dim, prompt_shift_width=8)
    with torch.no_grad():
        prior.prompt_shift.out_bias.fill_(0.05)  # a "fitted" shift, as the shipped prior has
    out = tmp_path / "run"
    algo = get_algorithm("ppo").config_class(iterations=2, prompts_per_iteration=2, rollouts_per_prompt=4, lr=0.1)
    run = RunConfig(algo="ppo", output_dir=out, num_envs=8, num_eval_prompts=4, progress=False, temperature=0.5)
    summary = train(run, algo, backend=backend, prior=prior)
    before, after = summary["policy_before"], summary["policy_after"]
    assert before == {"temperature": 0.5, "shift_gain": 1.0}
    assert after["temperature"] != 0.5 and after["shift_gain"] != 1.0
    saved = NoiseARPrior.from_pretrained(out / "prior")
    assert saved.config.temperature == pytest.approx(after["temperature"])
    assert float(saved.prompt_shift.gain) == pytest.approx(after["shift_gain"])
    printed = capsys.readouterr().out
    assert f"policy (what the prior samples with): temperature 0.5 -> {after['temperature']:.3g}, shift_gain 1 -> " in printed
    # `noisear:RUN` samples as the run ended, not at the --temperature it started from.
    assert NoiseARSource(backend, path=str(out)).temperature == pytest.approx(after["temperature"])
