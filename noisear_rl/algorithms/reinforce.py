"""REINFORCE: the score-function policy gradient with a baseline.

Each iteration: K rollouts per prompt; the advantage of a rollout is its reward minus a baseline
(the mean reward of the prompt's other rollouts, RLOO, or the batch mean); then a pass over the
batch in minibatches, one gradient step on -mean(advantage x log-prob of the whole noise) each.
By default each rollout is used once (no importance ratios, no clipping: that is PPO). An
optional closed-form KL(prior || reference) term gives the update a trust region and a fixed
point; with it, several epochs over a batch fit the advantage-weighted objective on it (the
way `benchmarks/rl_headroom.py` fits its shifts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from noisear_rl.algorithms.base import Algorithm, RolloutConfig, check_rollouts, register_algorithm
from noisear_rl.algorithms.losses import leave_one_out_advantages, reinforce_loss
from noisear_rl.checks import check_at_least, check_finite
from noisear_rl.envs.rollout import RolloutBatch


@dataclass
class ReinforceConfig(RolloutConfig):
    """Policy gradient with a baseline."""

    baseline: Literal["leave-one-out", "batch-mean"] = "leave-one-out"
    """"leave-one-out": mean reward of the prompt's other rollouts; "batch-mean": mean of the batch."""
    normalize: bool = True
    """Divide advantages by their batch std (a per-batch step size that ignores the reward's scale)."""
    lr: float = 5e-2
    """Adam learning rate: one pass of 4 steps a round moves each knob by at most about 0.2 a
    round (with the default knobs on the shipped Shapes weights, seed 0: 0.05 took them to gain
    1.67, temperature 0.34, +6.2 points on the run's check; 0.02 to 1.30 and 0.43, +3.1)."""
    minibatch_size: int = 64
    """Rollouts per optimizer step."""
    epochs: int = 1
    """Passes over each batch. 1 (the default) is the on-policy estimator; more reuse the rollouts
    without importance ratios, which is sound only while the prior stays near the one that sampled
    them (then use `kl_coef`). With the default knobs, 12 passes with KL 0.03 (the defaults for
    the gain alone) held them near the start, +4.2 points, and with KL 0.005 fit one round's noise
    (the temperature rose to 0.75, -1.0 points): the fit's fixed point is the last round's estimate
    over the KL weight, not an accumulation over rounds."""
    kl_coef: float = 0.0
    """Weight of the closed-form KL(prior || frozen reference) of each rollout's patch Gaussians
    (with the default knobs, of the search distributions), summed over the noise like the
    log-probs (0, the default: none, no reference kept). It bounds how far several passes over a
    batch move the prior (`benchmarks/rl_headroom.py` fits its mean shifts this way; 0.3 is the
    setting for training the shift's maps, `trainable.SHIFT_MAP_KL`)."""

    def check(self, prefix: str = "") -> None:
        """The rollout ranges and REINFORCE's own (passes, minibatches, KL weight)."""
        super().check(prefix)
        check_at_least(self, 1, ("epochs", "minibatch_size"), prefix)
        check_finite(self, ("kl_coef",), prefix, minimum=0.0)


@register_algorithm("reinforce")
class Reinforce(Algorithm):
    """Raises the log-prob of rollouts that beat their baseline, lowers the others."""

    config_class = ReinforceConfig
    config: ReinforceConfig

    @staticmethod
    def uses_reference(config: ReinforceConfig) -> bool:
        return config.kl_coef > 0

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        config = self.config
        check_rollouts(batch, config.rollouts_per_prompt)
        self.prior.eval()  # no dropout: the gradient is that of the policy that acted

        # 1. Advantages: reward minus baseline, optionally scaled to unit std.
        if config.baseline == "leave-one-out":
            advantages = leave_one_out_advantages(batch.rewards, config.rollouts_per_prompt)
        else:
            advantages = batch.rewards.float() - batch.rewards.float().mean()
        if config.normalize:
            advantages = advantages / (advantages.std(unbiased=False) + 1e-6)

        # 2. The reference's patch Gaussians (for the KL term) are fixed for the batch.
        ref_params = self.reference_params(batch)

        # 3. Passes over the batch: a gradient step per minibatch of whole-noise log-probs
        #    (+ the KL to the reference).
        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            logp, params = self.episode_log_probs(batch, idx)
            terms = reinforce_loss(logp, advantages[idx])
            metrics = {"policy_loss": terms.loss, "logp": logp.mean()}
            if self.has_reference:
                kl = self.kl_to_reference(params, ref_params, idx).mean()
                return terms.loss + config.kl_coef * kl, {**metrics, "kl_to_reference": kl}
            return terms.loss, metrics

        metrics = self.fit_minibatches(len(batch), loss_fn, config.minibatch_size, config.epochs)
        self.step_schedule()
        return {**metrics, "advantage_std": float(advantages.std())}
