"""Rollouts: episodes of the noise MDP collected through the vector env with a prior policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisear_rl.envs.policy import NoiseARPolicy
from noisear_rl.pipelines.base import Condition


@dataclass(frozen=True)
class Episodes:
    """What an update scores episodes by: their noises [N, C, H, W], the conditions the prior read
    and, when the policy drew them, their sampling knobs [N, 2] (a `RolloutBatch` has the same
    three fields; DPO makes these of a pair's two sides)."""

    noise: Tensor
    cond: Condition
    knobs: Tensor | None = None


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
        knobs: [N, 2] each episode's drawn (shift gain, log temperature), when the policy drew
            them (`NoiseARPolicy(knobs=...)`; `log_probs` are then at each episode's temperature).
    """

    prompts: list[str]
    cond: Condition
    noise: Tensor
    log_probs: Tensor
    rewards: Tensor
    details: dict[str, Tensor] = field(default_factory=dict)
    images: Tensor | None = None
    knobs: Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def cat(batches: list[RolloutBatch]) -> RolloutBatch:
        """Concatenates batches along the episode dimension."""
        keys = batches[0].details.keys()
        images, knobs = [b.images for b in batches], [b.knobs for b in batches]
        return RolloutBatch(
            prompts=[p for b in batches for p in b.prompts],
            cond=Condition.cat([b.cond for b in batches]),
            noise=torch.cat([b.noise for b in batches]),
            log_probs=torch.cat([b.log_probs for b in batches]),
            rewards=torch.cat([b.rewards for b in batches]),
            details={k: torch.cat([b.details[k] for b in batches]) for k in keys},
            images=None if any(i is None for i in images) else torch.cat(images),  # type: ignore[arg-type]
            knobs=None if any(k is None for k in knobs) else torch.cat(knobs),  # type: ignore[arg-type]
        )


def collect_rollouts(
    venv: Any,
    policy: NoiseARPolicy,
    prompts: list[str],
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> RolloutBatch:
    """Runs one episode per prompt through a `NoiseVectorEnv`, in lockstep chunks of `num_envs`.

    A last chunk shorter than `num_envs` is padded with repeats of its own prompts, and the padding
    is dropped from the result. The policy reads the env's observations as tensors on its device
    (`NoiseVectorEnv.torch_observation`); the results come from the last step's rewards and infos.

    Args:
        venv: A `NoiseVectorEnv` with `action_bound=None`, possibly wrapped (its `.unwrapped` is used).
        policy: Acts on the observations; its log-probs become `RolloutBatch.log_probs`.
        prompts: One episode per prompt.
        generator: Source of the policy's standard normals.
        progress: Show a progress bar over chunks.
    """
    from tqdm.auto import tqdm

    env = venv.unwrapped
    if env.world.config.action_bound is not None:
        raise ValueError("collect_rollouts needs an env with action_bound=None: a bound clips the policy's actions, so "
                         "their log-probs would not be those of the noises")
    n = env.num_envs
    batches = []
    chunks = [prompts[i : i + n] for i in range(0, len(prompts), n)]
    for chunk in tqdm(chunks, desc="rollouts", disable=not progress):
        padded = [chunk[i % len(chunk)] for i in range(n)]
        env.reset(options={"prompts": padded})
        log_probs = []
        terminated = np.zeros(n, dtype=bool)
        while not terminated.all():
            action, log_prob = policy.act(env.torch_observation(policy.device), generator)
            log_probs.append(log_prob.float().cpu())
            _, rewards, terminated, _, infos = env.step(action)
        keep = len(chunk)
        ended = {key: torch.from_numpy(value[:keep]) for key, value in infos.items() if key != "prompt"}
        noise, images = ended.pop("noise"), ended.pop("image", None)
        batches.append(
            RolloutBatch(
                prompts=chunk,
                cond=env.cond[:keep],
                noise=noise,
                log_probs=torch.stack(log_probs, 1)[:keep],
                rewards=torch.from_numpy(rewards[:keep]).float(),
                details=ended,
                images=images,
                knobs=None if policy.episode_knobs is None else policy.episode_knobs[:keep].cpu(),
            )
        )
    return RolloutBatch.cat(batches)
