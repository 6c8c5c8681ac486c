"""Every registered algorithm: registry behaviour, one update on a tiny prior, and learning."""

from __future__ import annotations

import copy
import warnings

from dataclasses import dataclass

import pytest
import torch

from noisear_rl import NoiseARPrior
from noisear_rl.algorithms import Algorithm, OptimConfig, get_algorithm, list_algorithms, register_algorithm
from noisear_rl.algorithms.nll import GoldenBatch
from noisear_rl.algorithms.losses import kl_per_noise
from noisear_rl.algorithms.trainable import shift_map_settings
from noisear_rl.envs.rollout import RolloutBatch
from noisear_rl.pipelines.base import Condition

K, P = 8, 4  # rollouts per prompt, prompts per batch
BUILTINS = ("dpo", "grpo", "nll", "ppo", "reinforce")


def make_prior(seed: int = 0, prompt_shift_width: int = 0, temperature: float = 1.0) -> NoiseARPrior:
    torch.manual_seed(seed)
    return NoiseARPrior(
        latent_channels=3, latent_height=16, latent_width=16, patch_size=8, cond_dim=12, d_model=32, d_ff=64,
        n_heads=2, n_layers=1, dropout=0.0, prompt_shift_width=prompt_shift_width, temperature=temperature,
    )


COND = Condition(torch.randn(P, 5, 12, generator=torch.Generator().manual_seed(1)))


def rollouts(prior: NoiseARPrior, seed: int) -> RolloutBatch:
    """K samples of the prior per prompt; the reward is the noise's mean (a shift the prior can learn)."""
    cond = COND.repeat_interleave(K)
    with torch.no_grad():
        noise = prior.eval().sample(cond.embeds, generator=torch.Generator().manual_seed(seed))
        log_probs = prior.log_prob(noise, cond.embeds, per_patch=True)
    prompts = [f"prompt {i}" for i in range(P) for _ in range(K)]
    return RolloutBatch(prompts, cond, noise, log_probs, noise.mean((1, 2, 3)))


def build(name: str, prior: NoiseARPrior, **overrides) -> Algorithm:
    """The algorithm with K rollouts a prompt; rollout algorithms train the prompt shift's maps
    (`shift_map_settings`: lr and KL weight measured for them) unless `overrides` say otherwise."""
    cls = get_algorithm(name)
    if cls.uses_rollouts:
        overrides = {"rollouts_per_prompt": K, **shift_map_settings(name), **overrides}  # the tiny priors have no fitted shift
    return cls(cls.config_class(**overrides), prior)


def batch_for(algorithm: Algorithm, prior: NoiseARPrior, seed: int = 0) -> RolloutBatch | GoldenBatch:
    if algorithm.uses_rollouts:
        return rollouts(prior, seed)
    golden = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 0.5 + 1.0
    return GoldenBatch(golden, COND.repeat_interleave(4))


def test_registry_lists_builtins_and_explains_unknown_names():
    assert set(BUILTINS) <= set(list_algorithms())
    with pytest.raises(KeyError, match="valid names: .*dpo.*nll.*ppo.*reinforce"):
        get_algorithm("a2c")


def test_third_party_algorithm_registers_and_trains():
    @dataclass
    class ZeroMeanConfig(OptimConfig):
        lr: float = 1e-2

    @register_algorithm("test-zero-mean")
    class ZeroMean(Algorithm):
        """Pulls the predicted means toward 0 (a toy objective)."""

        config_class = ZeroMeanConfig
        uses_rollouts = False

        def update(self, batch: GoldenBatch) -> dict[str, float]:
            mean, _ = self.prior(batch.noise, batch.cond.embeds)
            loss = mean.square().mean()
            self.optimizer_step(loss, len(batch))
            self.step_schedule()
            return {"loss": loss.item()}

    assert "test-zero-mean" in list_algorithms()
    assert get_algorithm("test-zero-mean") is ZeroMean and ZeroMean.name == "test-zero-mean"
    algorithm = ZeroMean(ZeroMeanConfig(), make_prior())
    assert algorithm.update(batch_for(algorithm, make_prior()))["loss"] >= 0
    with pytest.raises(TypeError, match="ZeroMeanConfig"):
        ZeroMean(OptimConfig(), make_prior())


@pytest.mark.parametrize("name", BUILTINS)
def test_update_gives_finite_loss_and_changes_parameters(name):
    prior = make_prior()
    overrides = {"trainable": "all"} if get_algorithm(name).uses_rollouts else {}  # RL's default trains the shift alone
    algorithm = build(name, prior, **overrides, **({"score_gap": 0.0} if name == "dpo" else {}))
    before = [p.detach().clone() for p in prior.parameters()]
    for step in range(2):
        metrics = algorithm.update(batch_for(algorithm, prior, seed=step))
        assert metrics and all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
        assert torch.isfinite(torch.tensor(metrics["loss"]))
    changed = sum(not torch.equal(a, b) for a, b in zip(before, prior.parameters()))
    assert changed > len(before) // 2


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("dpo", {"score_gap": 0.0, "kl_coef": 0.0}),  # the KL term's trust region is tested below
        ("dpo", {"score_gap": 0.0, "objective": "simple-nll"}),
        ("ppo", {}),
        ("ppo", {"per_patch": False}),
        ("ppo", {"kl_coef": 0.01}),
        ("grpo", {}),
        ("reinforce", {}),
        ("reinforce", {"baseline": "batch-mean"}),
        ("reinforce", {"epochs": 3, "kl_coef": 0.01}),
    ],
)
def test_algorithm_raises_the_reward_of_fresh_samples(name, overrides):
    prior = make_prior()
    algorithm = build(name, prior, lr=1e-3, **overrides)
    before = rollouts(prior, seed=999).rewards.mean().item()
    for iteration in range(6):
        algorithm.update(rollouts(prior, seed=iteration))
    after = rollouts(prior, seed=999).rewards.mean().item()
    # Under N(0, I) the mean over 32 noises of 768 elements has std ~0.006.
    assert after - before > 0.02, (before, after)


@pytest.mark.parametrize("name", ["dpo", "ppo", "reinforce"])
def test_prompt_shift_alone_is_trained_and_raises_the_reward(name):
    prior = make_prior(prompt_shift_width=16)
    dpo_overrides = {"score_gap": 0.0, "kl_coef": 0.0}  # with 4 pairs a round, its KL term holds the shift near 0
    algorithm = build(name, prior, lr=1e-2, trainable="prompt-shift", **(dpo_overrides if name == "dpo" else {}))
    before = {n: p.detach().clone() for n, p in prior.named_parameters()}
    reward_before = rollouts(prior, seed=999).rewards.mean().item()
    for iteration in range(4):
        algorithm.update(rollouts(prior, seed=iteration))
    changed = {n for n, p in prior.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(n.startswith("prompt_shift.") for n in changed), changed
    assert "prompt_shift.out_weight" in changed and "prompt_shift.gain" not in changed
    assert rollouts(prior, seed=999).rewards.mean().item() - reward_before > 0.02


def test_training_the_prompt_shift_of_a_prior_without_one_adds_a_zero_one_first(tmp_path):
    """A prior without a shift (the release's) gets a zero patch-resolution one: the reference and the
    prior start equal, only the shift trains, and the saved config keeps it."""
    prior = make_prior()
    noise, cond = torch.randn(2, 3, 16, 16), torch.randn(2, 5, 12)
    logp_before = prior.log_prob(noise, cond)
    algorithm = build("reinforce", prior, lr=1e-2, trainable="prompt-shift", kl_coef=0.1)
    assert prior.prompt_shift is not None and prior.config.prompt_shift_resolution == "patch"
    assert prior.config.prompt_shift_width == 64
    torch.testing.assert_close(prior.log_prob(noise, cond), logp_before, rtol=0, atol=0)
    torch.testing.assert_close(algorithm.reference.log_prob(noise, cond), logp_before, rtol=0, atol=0)
    for iteration in range(2):
        algorithm.update(rollouts(prior, seed=iteration))
    shift = prior.prompt_shift(cond)
    assert shift.abs().max() > 0  # it trained, and at patch resolution: constant over each channel of a patch
    per_channel = shift.view(2, shift.shape[1], 3, -1)
    torch.testing.assert_close(per_channel, per_channel[..., :1].expand_as(per_channel))
    with pytest.raises(ValueError, match="already has a prompt shift"):
        prior.add_prompt_shift()
    prior.save_pretrained(tmp_path)
    reloaded = NoiseARPrior.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.log_prob(noise, cond), prior.log_prob(noise, cond))


def fitted_shift_prior(bias: float = 0.02, temperature: float = 1.0) -> NoiseARPrior:
    """A tiny prior whose prompt shift has been "fitted": it raises every element by `bias` (at
    gain 1), the direction in which the toy reward (the noise's mean) grows, but only a little of
    the way."""
    prior = make_prior(prompt_shift_width=16, temperature=temperature)
    with torch.no_grad():
        prior.prompt_shift.out_bias.fill_(bias)
    return prior


@pytest.mark.parametrize("name", ["dpo", "ppo", "reinforce", "grpo"])
def test_shift_gain_alone_is_trained_and_lengthens_a_fitted_shift(name):
    prior = fitted_shift_prior()
    dpo_overrides = {"score_gap": 0.0}
    # REINFORCE with the settings it had for the gain (its defaults now make one pass, for the knobs).
    own = {"dpo": dpo_overrides, "reinforce": {"epochs": 12, "kl_coef": 0.03}}.get(name, {})
    algorithm = build(name, prior, lr=0.1, trainable="shift-gain", **own)
    before = {n: p.detach().clone() for n, p in prior.named_parameters()}
    reward_before = rollouts(prior, seed=999).rewards.mean().item()
    for iteration in range(4):
        algorithm.update(rollouts(prior, seed=iteration))
    changed = {n for n, p in prior.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"prompt_shift.gain"}
    assert prior.prompt_shift.gain.item() > 1.5
    assert rollouts(prior, seed=999).rewards.mean().item() - reward_before > 0.01


def test_shift_gain_needs_a_fitted_shift_and_says_what_to_use_instead():
    for prior in (make_prior(), make_prior(prompt_shift_width=16)):  # no shift; a zero one
        with pytest.raises(ValueError, match="shift-gain.*trainable prompt-shift --ALGO.lr 3e-3 with its KL weight"
                                             r" \(--dpo.kl-coef 0.01, --ppo.kl-coef 0.05, .*--reinforce.kl-coef 0.3\)"):
            build("ppo", prior, trainable="shift-gain")


def test_dpo_warns_when_more_than_the_gain_trains_without_a_kl_term():
    with pytest.warns(UserWarning, match="no trust region.*--dpo.kl-coef 0.01"):
        build("dpo", make_prior(), kl_coef=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("dpo", fitted_shift_prior(), trainable="shift-gain", kl_coef=0.0)
        build("dpo", make_prior(), kl_coef=0.01)


def test_gain_multiplies_the_shift_and_checkpoints_without_one_load_with_gain_one(tmp_path):
    from safetensors.torch import load_file, save_file

    prior = fitted_shift_prior()
    cond = torch.randn(2, 5, 12)
    shift = prior.prompt_shift(cond)
    with torch.no_grad():
        prior.prompt_shift.gain.fill_(3.0)
    torch.testing.assert_close(prior.prompt_shift(cond), 3 * shift)
    with torch.no_grad():
        prior.prompt_shift.gain.fill_(1.0)
    prior.save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if k != "prompt_shift.gain"}, weights)
    reloaded = NoiseARPrior.from_pretrained(tmp_path)
    assert reloaded.prompt_shift.gain.item() == 1.0
    noise = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(reloaded.log_prob(noise, cond), prior.log_prob(noise, cond))


def test_nll_fits_golden_noise():
    prior = make_prior()
    algorithm = build("nll", prior, lr=3e-3, warmup_iterations=0, iterations=30, dropout=0.0)
    batch = batch_for(algorithm, prior)
    losses = [algorithm.update(batch)["loss"] for _ in range(30)]
    assert losses[-1] < losses[0] - 0.2
    assert algorithm.scheduler.get_last_lr()[0] < 1e-4  # the cosine schedule decayed


def test_dpo_without_pairs_keeps_the_prior():
    prior = make_prior()
    algorithm = build("dpo", prior, score_gap=10.0)
    before = [p.detach().clone() for p in prior.parameters()]
    metrics = algorithm.update(rollouts(prior, seed=0))
    assert metrics["pairs"] == 0.0 and "loss" not in metrics
    assert all(torch.equal(a, b) for a, b in zip(before, prior.parameters()))


def test_dpo_reference_is_frozen_and_only_kept_when_needed():
    prior = make_prior()
    dpo = build("dpo", prior, score_gap=0.0)
    assert dpo.reference is not None and not any(p.requires_grad for p in dpo.reference.parameters())
    reference = [p.clone() for p in dpo.reference.parameters()]
    dpo.update(rollouts(prior, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(reference, dpo.reference.parameters()))
    assert build("dpo", make_prior(), objective="simple-nll").reference is None
    assert build("ppo", make_prior(), kl_coef=0.0).reference is None
    assert build("ppo", make_prior(), kl_coef=0.1).reference is not None
    assert build("reinforce", make_prior(), kl_coef=0.0).reference is None
    assert build("reinforce", make_prior(), kl_coef=1.0).reference is not None


def test_ppo_ratio_starts_at_one():
    prior = make_prior()
    metrics = build("ppo", prior, epochs=1, minibatch_size=10_000, lr=0.0).update(rollouts(prior, seed=0))
    assert metrics["ratio"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["clip_fraction"] == 0.0


@pytest.mark.parametrize("name", ["dpo", "ppo", "reinforce"])
def test_rollouts_must_come_in_whole_prompt_groups(name):
    prior = make_prior()
    batch = rollouts(prior, seed=0)
    batch.prompts[0], batch.prompts[-1] = batch.prompts[-1], batch.prompts[0]
    with pytest.raises(ValueError, match="not of one prompt"):
        build(name, prior).update(batch)


@pytest.mark.parametrize("name", BUILTINS)
def test_state_dict_round_trip_continues_identically(name):
    """Two algorithms, one restored from the other's state, take the same next step."""
    prior_a, prior_b = make_prior(), make_prior(seed=5)
    overrides = {"score_gap": 0.0} if name == "dpo" else {}
    a = build(name, prior_a, **overrides)
    torch.manual_seed(0)
    a.update(batch_for(a, prior_a, seed=0))
    b = build(name, prior_b, **overrides)
    prior_b.load_state_dict(prior_a.state_dict())
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    batch = batch_for(a, prior_a, seed=1)
    torch.manual_seed(1)
    a.update(batch)
    torch.manual_seed(1)
    b.update(batch)
    for x, y in zip(prior_a.parameters(), prior_b.parameters()):
        assert torch.allclose(x, y, atol=1e-6)


def test_reinforce_kl_term_has_no_gradient_at_the_reference():
    """At the reference the KL term's gradient is zero: the first step equals one without it."""
    batch = rollouts(make_prior(), seed=0)
    priors = {kl_coef: make_prior() for kl_coef in (0.0, 5.0)}
    for kl_coef, prior in priors.items():
        torch.manual_seed(0)
        build("reinforce", prior, kl_coef=kl_coef, minibatch_size=len(batch), epochs=1).update(batch)
    for x, y in zip(priors[0.0].parameters(), priors[5.0].parameters()):
        assert torch.allclose(x, y, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "overrides", "updates"),
    [
        ("dpo", {"score_gap": 0.0, "lr": 3e-3, "epochs": 30}, 1),
        ("reinforce", {"lr": 3e-3, "minibatch_size": 4}, 10),
        ("ppo", {"lr": 3e-3, "minibatch_size": 4, "clip_range": 10.0}, 10),
    ],
)
def test_kl_term_holds_the_prior_near_the_reference(name, overrides, updates):
    batch = rollouts(make_prior(), seed=0)
    drift = {}
    for kl_coef in (0.0, 1.0):
        prior = make_prior()
        algorithm = build(name, prior, kl_coef=kl_coef, **overrides)
        for _ in range(updates):
            torch.manual_seed(0)
            metrics = algorithm.update(batch)
        assert ("kl_to_reference" in metrics) == (kl_coef > 0)
        with torch.no_grad():
            params = prior.patch_params(batch.noise, batch.cond.embeds)
            reference_params = make_prior().patch_params(batch.noise, batch.cond.embeds)
            drift[kl_coef] = float(kl_per_noise(params, reference_params).mean())
    assert 0 < drift[1.0] < 0.5 * drift[0.0]


def test_grpo_is_ppo_with_the_kl_term_on():
    config = get_algorithm("grpo").config_class(rollouts_per_prompt=K)
    assert config.kl_coef > 0
    priors = make_prior(), make_prior()
    assert get_algorithm("ppo").config_class().kl_coef == 0
    grpo = build("grpo", priors[0], kl_coef=config.kl_coef)  # build() would set the shift maps' KL weight
    ppo = build("ppo", priors[1], kl_coef=config.kl_coef)
    torch.manual_seed(3)
    grpo.update(rollouts(priors[0], seed=0))
    torch.manual_seed(3)
    ppo.update(rollouts(priors[1], seed=0))
    assert all(torch.equal(a, b) for a, b in zip(priors[0].parameters(), priors[1].parameters()))
