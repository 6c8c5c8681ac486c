"""A new algorithm in one file: elite distillation (the cross-entropy method, applied to the prior).

Each round the prior makes K rollouts of each training prompt; the `elites` best of each prompt
are kept, and the prior is fitted to them by maximum likelihood, moving its mass toward the
noises that scored best. The algorithm owns its data: `round_data` turns the shared rollout
round into an `EliteBatch`, and `update` trains on that batch with `fit_minibatches` (epochs x
shuffled minibatches, in lockstep across processes).

    python -m noisear_rl.train --algo elite --elite.elites 2 --reward brightness

works once this module is imported: put it in `noisear_rl/algorithms/` (the registry finds every
module there), or ship it in a package that names it in the entry-point group
`noisear_rl.algorithms` (`elite = "my_package.my_algorithm:Elite"`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from noisear_rl.algorithms import Algorithm, RolloutConfig, register_algorithm
from noisear_rl.algorithms.context import Round, TrainingContext
from noisear_rl.checks import check_at_least, option_name
from noisear_rl.pipelines.base import Condition


@dataclass
class EliteConfig(RolloutConfig):
    """Fits the prior to the best rollouts of each prompt."""

    elites: int = 2
    """Best rollouts kept of each prompt's `rollouts_per_prompt`."""
    epochs: int = 2
    """Passes over each round's elites."""
    minibatch_size: int = 16
    """Elites per optimizer step."""

    def check(self, prefix: str = "") -> None:
        """The rollout ranges, and at least one elite, fewer than the rollouts per prompt."""
        super().check(prefix)
        check_at_least(self, 1, ("elites", "epochs", "minibatch_size"), prefix)
        if self.elites >= self.rollouts_per_prompt:
            raise ValueError(f"{option_name('elites', prefix)} ({self.elites}) must be below "
                             f"{option_name('rollouts_per_prompt', prefix)} ({self.rollouts_per_prompt})")


@dataclass
class EliteBatch:
    """The kept noises [E, C, H, W], their prompts' condition and their rewards [E]."""

    noise: Tensor
    cond: Condition
    rewards: Tensor

    def __len__(self) -> int:
        return self.noise.shape[0]


@register_algorithm("elite")
class Elite(Algorithm):
    """Maximum likelihood of each prompt's best rollouts."""

    config_class = EliteConfig
    config: EliteConfig

    def round_data(self, context: TrainingContext) -> Round:
        """The shared rollout round (`Algorithm.round_data`), cut down to each prompt's elites."""
        rollouts = super().round_data(context)
        k = self.config.rollouts_per_prompt

        def elites(iteration: int) -> tuple[EliteBatch, dict[str, float]]:
            batch, metrics = rollouts(iteration)  # k contiguous rollouts per prompt
            best = batch.rewards.view(-1, k).topk(self.config.elites, dim=1).indices
            index = (best + torch.arange(0, len(batch), k, device=best.device)[:, None]).flatten()
            return EliteBatch(batch.noise[index], batch.cond[index], batch.rewards[index]), metrics

        return elites

    def loss(self, batch: EliteBatch, index: Tensor) -> Tensor:
        """Negative log-likelihood per noise element of the elites at `index`."""
        logp, _ = self.log_prob_and_params(self.prior, batch.noise[index], batch.cond[index])
        return -logp.mean() / batch.noise[0].numel()

    def update(self, batch: EliteBatch) -> dict[str, float]:
        self.prior.eval()  # no dropout: the likelihood of the policy that acts
        metrics = self.fit_minibatches(len(batch), lambda index: self.loss(batch, index),
                                       self.config.minibatch_size, self.config.epochs)
        self.step_schedule()
        return {**metrics, "elite_reward": float(batch.rewards.mean())}
