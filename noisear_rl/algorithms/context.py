"""What the training loop and an algorithm hand each other: the run's context, a round's data and
a fresh prior; and the rollout round that rollout algorithms share (`Algorithm.round_data`).

The loop (`noisear_rl.train`) builds a `TrainingContext` once; `algorithm.round_data(context)`
returns a `Round`, which the loop calls at every iteration (after reseeding torch) and passes its
batch to `algorithm.update`. An algorithm that learns from other data overrides `round_data`
(nll: golden-noise pairs), so it needs no change to the loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from noisear_rl.envs.policy import NoiseARPolicy
from noisear_rl.envs.rollout import RolloutBatch, collect_rollouts
from noisear_rl.pipelines.base import Condition
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.seeds import derive_seed

Round = Callable[[int], tuple[Any, dict[str, float]]]
"""iteration -> (this process's batch for `Algorithm.update`, on the prior's device; metrics of
that data to log, already averaged over all processes, e.g. "rollout/reward")."""


@dataclass(frozen=True)
class TrainingContext:
    """What the training loop builds once, for an algorithm's `round_data` to draw its data from."""

    venv: Any
    """The vector env (`gym.make_vec`'s `NoiseVectorEnv`): rollouts run in it, and its
    `.unwrapped.world` (`world` below) encodes prompts with the env's backend."""
    sample_prompts: Callable[[int, int], list[str]]
    """(iteration, count) -> that iteration's `count` training prompts: the same on every process,
    never an evaluation prompt."""
    heldout: frozenset[str]
    """Every prompt evaluation may use: data of these prompts must be left out of training."""
    seed: int
    """The run's --seed (derive an iteration's seeds from it with `noisear_rl.seeds.derive_seed`)."""
    data: str | None = None
    """The run's --data folder, for algorithms that learn from a dataset (nll: golden-noise pairs)."""

    @property
    def world(self) -> Any:
        """The env's `NoiseWorld`: its backend, reward and prompt encoding (`world.encode`)."""
        return self.venv.unwrapped.world


class FreshPrior(NamedTuple):
    """How an algorithm makes a new prior for a run given none (`Algorithm.fresh_prior`)."""

    patch_size: int
    """The new prior's patch size: the env is built with it before the prior exists."""
    build: Callable[[tuple[int, int, int], int], NoiseARPrior]
    """(latent shape, condition width) of the env's backend -> the new prior."""


def rollout_round(algorithm: Any, context: TrainingContext) -> Round:
    """The rounds of a rollout algorithm (the default `Algorithm.round_data`): each iteration,
    `config.prompts_per_iteration` training prompts, this process's share of them, and
    `config.rollouts_per_prompt` contiguous episodes of each by the current prior (with its
    `algorithm.knobs` when it trains them: each episode draws its own gain and temperature), its noises and
    the env's draws seeded by (seed, iteration, rank): a `RolloutBatch`, and the rollouts' mean
    reward and reward details over all processes ("rollout/reward", ...)."""
    config, prior, (rank, processes) = algorithm.config, algorithm.prior, algorithm.process_info()

    def rollouts(iteration: int) -> tuple[RolloutBatch, dict[str, float]]:
        prompts = context.sample_prompts(iteration, config.prompts_per_iteration)[rank::processes]
        episodes = [p for p in prompts for _ in range(config.rollouts_per_prompt)]
        context.venv.unwrapped.np_random = np.random.default_rng(derive_seed(context.seed, iteration, rank, 2))
        generator = torch.Generator(device=prior.device).manual_seed(derive_seed(context.seed, iteration, rank, 1))
        prior.eval()
        policy = NoiseARPolicy(prior, algorithm.temperature, knobs=algorithm.knobs)
        batch = collect_rollouts(context.venv, policy, episodes, generator=generator)
        return to_device(batch, prior.device), rollout_metrics(batch, algorithm.accelerator)

    return rollouts


def rollout_metrics(batch: RolloutBatch, accelerator: Any | None) -> dict[str, float]:
    """Mean reward and reward details of every process's rollouts, as "rollout/NAME"."""
    values = {"reward": batch.rewards.float(), **{k: v.float() for k, v in batch.details.items()}}
    if accelerator is None:
        return {f"rollout/{k}": float(v.mean()) for k, v in values.items()}
    return {f"rollout/{k}": float(accelerator.gather(v.to(accelerator.device)).mean()) for k, v in values.items()}


def to_device(batch: Any, device: torch.device) -> Any:
    """The batch dataclass with its tensors and condition on `device` (other fields stay as they are)."""
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return dataclasses.replace(batch, **{k: v.to(device) for k, v in fields.items() if isinstance(v, (torch.Tensor, Condition))})
