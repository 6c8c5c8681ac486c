"""One shard of a golden-noise collection (`python -m noisear_rl.collect`): its prompts' K random
noises each, their golden noises, and the reward filter.

Shard i draws its noises from a generator seeded by (seed, i) alone, so a resumed collection
regenerates a missing shard with the content an uninterrupted run would have written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.golden import golden_noise
from noisear_rl.reward_models.clip_rewards import as_dtype

if TYPE_CHECKING:
    from noisear_rl.collect import CollectConfig


@torch.no_grad()
def collect_shard(
    backend: DiffusionBackend,
    config: CollectConfig,
    prompts: list[str],
    start: int,
    stop: int,
    index: int,
    guidance: float,
    reward: torch.nn.Module | None,
) -> dict[str, Tensor]:
    """The pairs of prompts[start:stop], K noises each, prompt-major; filtered when `reward` is set."""
    k = config.noises_per_prompt
    cond = backend.encode(prompts[start:stop])
    local_prompt = torch.arange(stop - start).repeat_interleave(k)
    generator = torch.Generator("cpu").manual_seed(_shard_seed(config.seed, index))
    noise = torch.randn((len(local_prompt), *backend.latent_shape), generator=generator)
    golden_parts, reward_parts = [], []
    for first in range(0, len(local_prompt), config.batch_size):
        rows = local_prompt[first : first + config.batch_size]
        rows_cond, rows_prompts = cond[rows], [prompts[start + int(r)] for r in rows]
        x_T = noise[first : first + config.batch_size].to(backend.device)
        if config.golden == "selected":
            golden_parts.append(x_T.cpu())
            reward_parts.append(_selection_rewards(backend, reward, x_T, rows_cond, rows_prompts))
            continue
        golden = golden_noise(
            backend, x_T, rows_cond, guidance, config.inversion_guidance_scale, config.golden_steps, config.golden_procedure
        )
        golden_parts.append(golden.cpu())
        if reward is not None:
            reward_parts.append(_rewards(backend, reward, x_T, golden, rows_cond, rows_prompts, generator))
    storage = as_dtype(config.storage_dtype)
    tensors = {
        "noise": noise.to(storage),
        "golden": torch.cat(golden_parts).to(storage),
        "prompt_index": (local_prompt + start).long(),
        "noise_index": torch.arange(k).repeat(stop - start).long(),
    }
    if config.golden == "selected":
        scores = torch.cat(reward_parts)
        keep = scores > config.reward_threshold
        tensors["reward_original"] = scores
        return {key: value[keep] for key, value in tensors.items()}
    if reward_parts:
        original, better = (torch.cat(column) for column in zip(*reward_parts, strict=True))
        tensors.update(reward_original=original, reward_golden=better)
        keep = (better - original) > config.reward_threshold
        tensors = {key: value[keep] for key, value in tensors.items()}
    return tensors


def _rewards(
    backend: DiffusionBackend,
    reward: torch.nn.Module,
    noise: Tensor,
    golden: Tensor,
    cond: Condition,
    prompts: list[str],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Rewards of the images generated from the original and from the golden noises.

    Both generations use the same sampler seed, so only the initial noise differs.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    original = backend.generate(noise, cond, torch.Generator("cpu").manual_seed(seed))
    better = backend.generate(golden.to(backend.device), cond, torch.Generator("cpu").manual_seed(seed))
    return reward(original, prompts).float().cpu(), reward(better, prompts).float().cpu()


def _selection_rewards(
    backend: DiffusionBackend, reward: torch.nn.Module, noise: Tensor, cond: Condition, prompts: list[str]
) -> Tensor:
    """Rewards of the images generated from `noise` (the "selected" golden mode's filter)."""
    return reward(backend.generate(noise, cond), prompts).float().cpu()


def _shard_seed(seed: int, index: int) -> int:
    """A 63-bit seed determined by (seed, shard index) alone."""
    return int(np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
