"""The paper's offline DPO: `--dpo.preset paper`, offline collection, and a run on the tiny SDXL pipeline."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from noisear_rl import NoiseARPrior
from noisear_rl.algorithms.dpo import DPO, PAPER_PRESET, DPOConfig
from noisear_rl.envs.rollout import RolloutBatch
from noisear_rl.pipelines.base import Condition
from noisear_rl.reward_models import register_reward

K, P = 6, 4  # rollouts per prompt, prompts per round


@register_reward("test-dpo-paper-brightness")
def brightness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Mean pixel value x 1000: the tiny pipeline's images of one prompt differ by a few
    thousandths, so a prompt's best and worst of 20 are 4-5 apart, above the paper's gap of 3.0."""
    return images.mean(dim=(1, 2, 3)) * 1000


def make_prior(seed: int = 0, **overrides) -> NoiseARPrior:
    torch.manual_seed(seed)
    config = dict(latent_channels=3, latent_height=16, latent_width=16, patch_size=8, cond_dim=12, d_model=32,
                  d_ff=64, n_heads=2, n_layers=1, dropout=0.0)
    return NoiseARPrior(**{**config, **overrides})


def rollouts(prior: NoiseARPrior, seed: int) -> RolloutBatch:
    """K samples per prompt; reward = 10 x the noise's mean, so some groups' gaps exceed 3.0."""
    cond = Condition(torch.randn(P, 5, 12, generator=torch.Generator().manual_seed(seed))).repeat_interleave(K)
    with torch.no_grad():
        noise = prior.eval().sample(cond.embeds, generator=torch.Generator().manual_seed(seed))
    prompts = [f"prompt {seed} {i}" for i in range(P) for _ in range(K)]
    rewards = noise.mean((1, 2, 3)) * 10 + torch.arange(P * K) % K * 0.8
    return RolloutBatch(prompts, cond, noise, torch.zeros(P * K, 4), rewards)


def paper(**overrides) -> DPOConfig:
    return DPOConfig(preset="paper", rollouts_per_prompt=K, **overrides)


def test_the_paper_preset_sets_the_papers_recipe():
    config = DPOConfig(preset="paper")
    assert {name: getattr(config, name) for name in PAPER_PRESET} == PAPER_PRESET
    assert config.iterations * config.prompts_per_iteration * config.rollouts_per_prompt == 2000 * 20
    assert (config.objective, config.score_gap, config.epochs, config.offline) == ("simple-nll", 3.0, 1, True)
    # Options given another value than their plain default keep it.
    shortened = DPOConfig(preset="paper", iterations=4, minibatch_size=8)
    assert (shortened.iterations, shortened.minibatch_size, shortened.rollouts_per_prompt) == (4, 8, 20)
    assert DPOConfig().objective == "dpo" and not DPOConfig().offline  # no preset: the plain defaults
    assert dataclasses.asdict(DPOConfig(**dataclasses.asdict(config))) == dataclasses.asdict(config)  # stable
    with pytest.raises(ValueError, match="preset must be one of none, paper"):
        DPOConfig(preset="papers")  # type: ignore[arg-type]


def test_train_cli_takes_the_preset():
    from noisear_rl.train import parse_args

    run, config = parse_args(["--algo", "dpo", "--dpo.preset", "paper", "--dpo.iterations", "4"])
    assert run.algo == "dpo" and config.preset == "paper"
    assert (config.objective, config.offline, config.score_gap, config.rollouts_per_prompt) == ("simple-nll", True, 3.0, 20)
    assert config.iterations == 4


def test_offline_training_equals_one_update_on_every_rounds_pairs():
    """Rounds before the last only collect; the last trains once on the pairs of all rounds, exactly
    as one online update on the rounds' rollouts together."""
    start = make_prior()
    batches = [rollouts(start, seed) for seed in (1, 2, 3)]
    offline_prior = copy.deepcopy(start)
    offline = DPO(paper(iterations=3, minibatch_size=4), offline_prior)
    for i, batch in enumerate(batches[:2]):
        metrics = offline.update(batch)
        assert all(torch.equal(a, b) for a, b in zip(offline_prior.parameters(), start.parameters()))
        assert "loss" not in metrics and metrics["pending_pairs"] >= metrics["pairs"]
    torch.manual_seed(7)
    metrics = offline.update(batches[2])
    together = RolloutBatch.cat(batches)
    online_prior = copy.deepcopy(start)
    online = DPO(paper(iterations=1, offline=False, minibatch_size=4), online_prior)
    torch.manual_seed(7)
    expected = online.update(together)
    assert metrics["trained_pairs"] == expected["pairs"] > 0
    assert all(torch.equal(a, b) for a, b in zip(offline_prior.parameters(), online_prior.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(offline_prior.parameters(), start.parameters()))
    assert offline.pending == [] and offline.rounds_collected == 0


def test_offline_pairs_survive_a_checkpoint():
    from noisear_rl.run_folder import flatten_state, unflatten_state

    start = make_prior()
    batches = [rollouts(start, seed) for seed in (1, 2)]
    straight = DPO(paper(iterations=2), copy.deepcopy(start))
    straight.update(batches[0])
    tree, tensors = flatten_state(straight.state_dict())  # what a checkpoint stores
    resumed = DPO(paper(iterations=2), copy.deepcopy(start))
    resumed.load_state_dict(unflatten_state(tree, tensors))
    assert resumed.rounds_collected == 1
    torch.manual_seed(3)
    straight.update(batches[1])
    torch.manual_seed(3)
    resumed.update(batches[1])
    assert all(torch.equal(a, b) for a, b in zip(straight.prior.parameters(), resumed.prior.parameters()))
    with pytest.raises(KeyError, match="offline=True"):
        DPO(paper(iterations=2), make_prior()).load_state_dict(DPO(DPOConfig(trainable="all"), make_prior()).state_dict())


def test_paper_preset_runs_on_the_tiny_sdxl_pipeline(tmp_path):
    """The documented command's path (train loop, SDXL env, a composite reward), scaled down:
    3 rounds of 2 prompts x 20 rollouts; the prior only changes after the last round."""
    from noisear_rl.pipelines.tiny import tiny_sdxl_backend
    from noisear_rl.train import RunConfig, train

    backend = tiny_sdxl_backend(num_inference_steps=2, batch_size=20)
    prior = NoiseARPrior(latent_channels=4, latent_height=8, latent_width=8, patch_size=4, cond_dim=backend.cond_dim,
                         d_model=32, d_ff=64, n_heads=2, n_layers=1, dropout=0.15, temperature=0.5)
    config = DPOConfig(preset="paper", iterations=3, prompts_per_iteration=2)
    run = RunConfig(algo="dpo", env="NoiseAR-SDXL-v0", reward="test-dpo-paper-brightness:1.0", output_dir=tmp_path / "run",
                    num_envs=20, num_eval_prompts=2, temperature=0.5, progress=False, tensorboard=False)
    start = copy.deepcopy(prior.state_dict())
    unchanged: list[bool] = []

    def snapshot(done: int) -> None:
        unchanged.append(all(torch.equal(v, start[k]) for k, v in prior.state_dict().items()))

    summary = train(run, config, backend=backend, prior=prior, callback=snapshot)
    assert unchanged[:2] == [True, True]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if "train/pairs" in r]
    assert len(rounds) == 3 and "train/loss" not in rounds[0] and "train/loss" not in rounds[1]
    assert rounds[2]["train/trained_pairs"] == sum(r["train/pairs"] for r in rounds) == 6  # 3 rounds x 2 prompts
    assert all(r["train/pair_gap"] > 3.0 for r in rounds)
    assert unchanged[2] is False  # one pass of simple NLL on the 6 preferred noises moved the prior
    assert summary["iterations"] == 3 and (tmp_path / "run" / "prior" / "config.json").is_file()
