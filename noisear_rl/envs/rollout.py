"""Rollouts: episodes of the noise MDP collected through the vector env with a prior policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition


@dataclass
class RolloutBatch:
    """N finished episodes (one per row).

    Attributes:
        prompts: The N prompts.
        cond: The N encoded prompts (`cond.embeds` is what the prior reads).
        noise: [N, C, H, W] the initial noises the episodes chose.
        log_probs: [N, T] per-patch log-probs under the policy that sampled them (old policy).
        rewards: [N] the final (composite) rewards.
        details: Per-episode reward details and components, each [N] (e.g. "success").
        images: [N, 3, H, W] images in [0, 1], when the env was asked to return them.
    """

    prompts: list[str]
    cond: Condition
    noise: Tensor
    log_probs: Tensor
    rewards: Tensor
    details: dict[str, Tensor] = field(default_factory=dict)
    images: Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def cat(batches: list[RolloutBatch]) -> RolloutBatch:
        """Concatenates batches along the episode dimension."""
        keys = batches[0].details.keys()
        images = [b.images for b in batches]
        return RolloutBatch(
            prompts=[p for b in batches for p in b.prompts],
            cond=Condition.cat([b.cond for b in batches]),
            noise=torch.cat([b.noise for b in batches]),
            log_probs=torch.cat([b.log_probs for b in batches]),
            rewards=torch.cat([b.rewards for b in batches]),
            details={k: torch.cat([b.details[k] for b in batches]) for k in keys},
            images=None if any(i is None for i in images) else torch.cat(images),  # type: ignore[arg-type]
        )
