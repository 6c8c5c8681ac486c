"""Sampling knobs explored per episode (`trainable="gain-temperature"`): the policy's draws, their
densities, and what each rollout algorithm learns from them."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from noisear_rl import NoiseARPrior
from noisear_rl.algorithms import get_algorithm
from noisear_rl.envs import NoiseARPolicy
from noisear_rl.envs.rollout import RolloutBatch
from noisear_rl.pipelines.base import Condition
from noisear_rl.prior.knobs import SamplingKnobs
from test_algorithms import fitted_shift_prior as algorithms_fitted_shift_prior
from test_algorithms import make_prior

K, P = 8, 4  # rollouts per prompt, prompts per batch
COND = Condition(torch.randn(P, 5, 12, generator=torch.Generator().manual_seed(1)))
RL = ("dpo", "ppo", "reinforce", "grpo")


def fitted_shift_prior() -> NoiseARPrior:
    """test_algorithms' tiny prior with a fitted shift, at these tests' bias and temperature."""
    return algorithms_fitted_shift_prior(bias=0.1, temperature=0.5).eval()


def policy_rollouts(prior: NoiseARPrior, knobs: SamplingKnobs | None, seed: int, reward=lambda noise: noise.mean((1, 2, 3))) -> RolloutBatch:
    """K episodes per prompt by `NoiseARPolicy`, fed patch by patch as the env feeds it."""
    cond = COND.repeat_interleave(K)
    n = cond.embeds.shape[0]
    policy = NoiseARPolicy(prior, prior.sampling_temperature(), knobs=knobs)
    generator = torch.Generator().manual_seed(seed)
    patches = torch.zeros(n, prior.num_patches, prior.patch_dim)
    log_probs = []
    with torch.no_grad():
        for t in range(prior.num_patches):
            action, log_prob = policy.act({"cond": cond.embeds, "patches": patches, "num_done": np.full(n, t)}, generator)
            patches[:, t] = action
            log_probs.append(log_prob)
    noise = prior.unpatchify(patches)
    prompts = [f"prompt {i}" for i in range(P) for _ in range(K)]
    return RolloutBatch(prompts, cond, noise, torch.stack(log_probs, 1), reward(noise), knobs=policy.episode_knobs)


def build(name: str, prior: NoiseARPrior, **overrides):
    """The algorithm with its defaults as shipped, but for the batch shape and DPO's score gap
    (on the verifier's [0, 1] scale; these toy rewards move by ~0.01)."""
    cls = get_algorithm(name)
    overrides = {"rollouts_per_prompt": K, **({"score_gap": 0.0} if name == "dpo" else {}), **overrides}
    return cls(cls.config_class(**overrides), prior, temperature=prior.sampling_temperature())


def test_each_episode_is_sampled_with_its_own_drawn_gain_and_temperature():
    prior = fitted_shift_prior()
    knobs = SamplingKnobs(prior, 0.5, gain_std=1.0, log_temperature_std=0.3)
    batch = policy_rollouts(prior, knobs, seed=0)
    assert batch.knobs.shape == (P * K, 2) and batch.knobs.std(0).min() > 0.1  # episodes differ
    for i in (0, 5, 17):
        gain, temperature = float(batch.knobs[i, 0]), math.exp(float(batch.knobs[i, 1]))
        episode = copy.deepcopy(prior)
        with torch.no_grad():
            episode.prompt_shift.gain.fill_(gain)
            expected = episode.log_prob(batch.noise[i : i + 1], batch.cond.embeds[i : i + 1], temperature=temperature, per_patch=True)
        torch.testing.assert_close(batch.log_probs[i : i + 1], expected, rtol=1e-4, atol=1e-3)


def test_knob_density_kl_and_state():
    prior = fitted_shift_prior()
    knobs = SamplingKnobs(prior, 0.5, gain_std=1.0, log_temperature_std=0.3)
    draws = knobs.draw(1000, torch.Generator().manual_seed(0))
    normal = torch.distributions.Normal(torch.tensor([1.0, math.log(0.5)]), torch.tensor([1.0, 0.3]))
    torch.testing.assert_close(knobs.log_prob(draws), normal.log_prob(draws).sum(-1))
    torch.testing.assert_close(draws.mean(0), torch.tensor([1.0, math.log(0.5)]), atol=0.08, rtol=0)
    reference = knobs.mean().detach().clone()
    assert knobs.kl_to(reference).item() == 0.0
    with torch.no_grad():
        knobs.log_temperature.add_(0.3)
    assert knobs.kl_to(reference).item() == pytest.approx(0.5)  # one std away in one knob
    assert knobs.temperature == pytest.approx(0.5 * math.exp(0.3))


@pytest.mark.parametrize("name", RL)
def test_each_algorithms_defaults_follow_the_reward_in_each_knob(name):
    """Learning curves with the defaults (trainable="gain-temperature"), through the draws alone:
    a reward that grows with the noise's mean (which the fitted shift raises) lengthens the gain;
    one that prefers small noise cools the temperature. Under N(0, I) the mean over 32 noises of
    768 elements has std ~0.006, so the curves are far from noise."""
    assert get_algorithm(name).config_class().trainable == "gain-temperature"
    for reward, knob in ((lambda noise: noise.mean((1, 2, 3)), 0), (lambda noise: -noise.square().mean((1, 2, 3)), 1)):
        prior = fitted_shift_prior()
        algorithm = build(name, prior)
        start = algorithm.knobs.mean().detach().clone()
        curve = [policy_rollouts(prior, None, seed=999, reward=reward).rewards.mean().item()]
        for iteration in range(6):  # REINFORCE's default (one pass, here one Adam step a round) moves each knob <= 0.05 a round
            torch.manual_seed(iteration)
            algorithm.update(policy_rollouts(prior, algorithm.knobs, seed=iteration, reward=reward))
            prior.register_to_config(temperature=algorithm.temperature)
            curve.append(policy_rollouts(prior, None, seed=999, reward=reward).rewards.mean().item())
        moved = algorithm.knobs.mean().detach() - start
        assert (moved[0] > 0.2) if knob == 0 else (moved[1] < -0.2), (name, knob, moved)  # of at most 0.3 for REINFORCE
        assert curve[-1] > curve[0] + 0.01 and min(curve[2:]) > curve[0], (name, knob, curve)
        # Only the gain (in the prior) and the log temperature (in the knobs) train.
        assert [p for p in prior.parameters() if p.requires_grad] == [prior.prompt_shift.gain]


@pytest.mark.parametrize("name", RL)
def test_knob_state_round_trip_continues_identically(name):
    priors = [fitted_shift_prior(), fitted_shift_prior()]
    a = build(name, priors[0])
    torch.manual_seed(0)
    a.update(policy_rollouts(priors[0], a.knobs, seed=0))
    b = build(name, priors[1])
    priors[1].load_state_dict(priors[0].state_dict())
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.temperature == a.temperature
    batch = policy_rollouts(priors[0], a.knobs, seed=1)
    for algorithm in (a, b):
        torch.manual_seed(1)
        algorithm.update(batch)
    torch.testing.assert_close(a.knobs.mean(), b.knobs.mean())


def test_knob_training_refuses_rollouts_without_draws():
    prior = fitted_shift_prior()
    batch = policy_rollouts(prior, None, seed=0)  # sampled at fixed knobs
    with pytest.raises(ValueError, match="carry no knob draws.*NoiseARPolicy\\(prior, knobs=algorithm.knobs\\)"):
        build("ppo", prior).update(batch)


def test_knobs_need_a_shift_and_dpo_simple_nll_cannot_train_them():
    plain = make_prior()
    with pytest.raises(ValueError, match="'gain-temperature' needs a prior whose prompt shift has been fitted"):
        build("ppo", plain)
    with pytest.raises(ValueError, match="--dpo.objective simple-nll .* pass --dpo.trainable shift-gain or all"):
        get_algorithm("dpo").config_class(objective="simple-nll", trainable="gain-temperature").check(prefix="--dpo.")
    with pytest.raises(ValueError, match="--ppo.temperature-exploration"):
        get_algorithm("ppo").config_class(temperature_exploration=0.0).check(prefix="--ppo.")


def test_knob_training_keeps_its_reference_as_two_numbers_not_a_prior_copy():
    grpo = build("grpo", fitted_shift_prior())  # GRPO's default has a KL term to the reference
    assert grpo.has_reference and grpo.reference is None and "reference" not in grpo.state_dict()
    torch.testing.assert_close(grpo.reference_knobs, torch.tensor([1.0, math.log(0.5)]))
