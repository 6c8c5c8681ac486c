"""PPO on the noise MDP, with DDPO's per-prompt reward normalisation.

Each iteration: K rollouts per prompt; advantages are the rewards z-scored within each prompt's
group (the reward arrives only at the end, so every patch of an episode shares its advantage);
then several epochs of minibatch steps on the clipped surrogate of the per-patch (or per-episode)
probability ratios, optionally with the closed-form KL to the frozen reference prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noisear_rl.algorithms.base import Algorithm, RolloutConfig, check_rollouts, register_algorithm
from noisear_rl.algorithms.losses import per_prompt_normalize, ppo_clip_loss
from noisear_rl.checks import check_at_least, check_finite, check_positive
from noisear_rl.envs.rollout import RolloutBatch


@dataclass
class PPOConfig(RolloutConfig):
    """Clipped-surrogate policy optimisation with per-prompt advantages."""

    epochs: int = 12
    """Optimisation passes over each batch of rollouts."""
    minibatch_size: int = 64
    """Rollouts per optimizer step."""
    clip_range: float = 1.0
    """Ratios are clipped to [1 - clip_range, 1 + clip_range] (wide: a patch is C x p x p Gaussian
    dimensions, so a small mean change already moves a patch's ratio far; with 0.2 most ratios were
    clipped after each round, docs/results_v0.md)."""
    per_patch: bool = True
    """Ratios per patch (each patch an action, as in the MDP); False: one ratio per whole noise."""
    advantage_clip: float = 5.0
    """Advantages are clipped to +-this after normalisation."""
    kl_coef: float = 0.0
    """Weight of the closed-form KL(prior || frozen reference) of the rollouts' patch Gaussians,
    per ratio like the surrogate (per patch with `per_patch`, else per noise); 0 (the default):
    none, no reference kept. Unlike a sample estimate it pulls back at any distance (with the
    default knobs, the KL between the search distributions). For the gain the clipped ratios are
    trust region enough, and any KL weight stops it short: 0.05 held it at 2.2 (+14.8 points of
    held-out success), 0.01 at 4.3 (+26.3), none let it reach 4.8 (+27.3; on the first v1
    weights with `trainable="shift-gain"`, docs/results_v1_first_weights.md). The shift's maps
    were measured with 0.05 (`trainable.SHIFT_MAP_KL`)."""

    def check(self, prefix: str = "") -> None:
        """The rollout ranges and PPO's own (passes, minibatches, clipping, KL weight)."""
        super().check(prefix)
        check_at_least(self, 1, ("epochs", "minibatch_size"), prefix)
        check_positive(self, ("clip_range", "advantage_clip"), prefix)
        check_finite(self, ("kl_coef",), prefix, minimum=0.0)


@register_algorithm("ppo")
class PPO(Algorithm):
    """Proximal policy optimisation of the prior on its own rollouts."""

    config_class = PPOConfig
    config: PPOConfig

    @staticmethod
    def uses_reference(config: PPOConfig) -> bool:
        return config.kl_coef > 0

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        config = self.config
        check_rollouts(batch, config.rollouts_per_prompt)
        self.prior.eval()  # no dropout: the ratio is 1 before the first step

        # 1. Advantages: rewards z-scored within each prompt's rollouts (DDPO), clipped.
        advantages = per_prompt_normalize(batch.rewards, batch.prompts).clamp(-config.advantage_clip, config.advantage_clip)
        old_logp = self.sampling_log_probs(batch, config.per_patch)
        ref_params = self.reference_params(batch)
        ratios_per_noise = old_logp.shape[1] if config.per_patch else 1

        # 2. Epochs of minibatch steps on the clipped surrogate (+ KL to the reference).
        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            new_logp, params = self.episode_log_probs(batch, idx, per_patch=config.per_patch)
            terms = ppo_clip_loss(new_logp, old_logp[idx], advantages[idx], config.clip_range)
            metrics = {"policy_loss": terms.loss, "clip_fraction": terms.clip_fraction, "approx_kl": terms.approx_kl,
                       "ratio": terms.ratio_mean}
            if self.has_reference:
                kl = self.kl_to_reference(params, ref_params, idx).mean() / ratios_per_noise
                return terms.loss + config.kl_coef * kl, {**metrics, "kl_to_reference": kl}
            return terms.loss, metrics

        metrics = self.fit_minibatches(len(batch), loss_fn, config.minibatch_size, config.epochs)
        self.step_schedule()
        return metrics


@dataclass
class GRPOConfig(PPOConfig):
    """PPO's update with GRPO's KL to the reference switched on (PPO's default has none)."""

    kl_coef: float = 0.004
    """Weight of the closed-form KL(prior || frozen reference) (with the default knobs, of the
    search distributions). Flow-GRPO's beta is 0.04. With the default knobs on the shipped
    Shapes weights (seed 0, docs/results.md), 0.004 took them from (gain 1, temperature 0.5) to
    (2.6, 0.38), +6.2 points on the run's held-out check, and 0.015 to (2.1, 0.40), +4.7; with
    the shift's gain training alone on the first v1 weights, 0.04 held the gain at 2.5 and 0.015
    let it reach 3.9 (docs/results_v1_first_weights.md)."""


@register_algorithm("grpo")
class GRPO(PPO):
    """GRPO (group-relative policy optimisation, as Flow-GRPO and DanceGRPO apply it to diffusion)
    is this toolkit's PPO: advantages are rewards z-scored within each prompt's group of rollouts
    (no value function), ratios are clipped, and a KL term holds the policy near the frozen
    reference. `grpo` is the same update under its own name, with the KL term on by default."""

    config_class = GRPOConfig
    config: GRPOConfig
