"""How much a prompt-conditional noise prior could gain on the Shapes world, and what one RL update learns.

Prints, measured in one run, on held-out evaluation prompts (never trained on) with paired
noises (every row starts from the same standard normals):

1. Headroom: K rollouts of the shipped NLL prior on N training prompts give, for every
   (colour, position) and (shape, position) of a requested object, the advantage-weighted mean
   noise (rewards z-scored within each prompt). Adding the sum of a held-out prompt's directions,
   scaled to an RMS of `--shift` per element, to its noises measures what a prompt-conditional
   mean shift learned from these rollouts can gain. Control: the same with the advantages
   permuted across rollouts (directions of pure noise, same structure and size).
2. What each algorithm learns from the same rollouts in one update (its default config, the
   batch as one round): the change of the prior's mean on the held-out noises, split into a part
   shared by all prompts, a prompt-specific part and a part that varies between noises of one
   prompt; the change of its standard deviation; and the held-out success after the update.

    python benchmarks/rl_headroom.py [--train-prompts 128] [--rollouts 8] [--heldout-prompts 64]
"""

from __future__ import annotations

import argparse
import copy
import time

import gymnasium as gym
import torch
from torch import Tensor

import noisear_rl  # noqa: F401  registers the environments
from noisear_rl import NoiseARPrior
from noisear_rl.algorithms import get_algorithm
from noisear_rl.algorithms.losses import per_prompt_normalize
from noisear_rl.envs import NoiseARPolicy, collect_rollouts
from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.envs.rollout import RolloutBatch
from noisear_rl.pipelines.shapes import evaluation_prompts, sample_prompts
from noisear_rl.pipelines.shapes.world import attribute_keys, attribute_means
from noisear_rl.prior.shipped import shipped_shapes_prior_path


def attribute_directions(batch: RolloutBatch, advantages: Tensor) -> dict[tuple[str, str], Tensor]:
    """Per attribute key: the mean of advantage x noise over the rollouts whose prompt has it."""
    return attribute_means(advantages.view(-1, 1, 1, 1) * batch.noise, batch.prompts)[0]


def shifted(noise: Tensor, prompts: list[str], directions: dict[tuple[str, str], Tensor], rms: float) -> Tensor:
    """Each noise plus its prompt's summed directions, scaled to `rms` per element."""
    shifts = []
    for prompt in prompts:
        shift = sum((directions.get(key, torch.zeros_like(noise[0])) for key in attribute_keys(prompt)), torch.zeros_like(noise[0]))
        shifts.append(shift * rms / shift.pow(2).mean().sqrt().clamp(min=1e-12))
    return noise + torch.stack(shifts)


def mean_change(before: Tensor, after: Tensor, noises_per_prompt: int) -> dict[str, float]:
    """RMS of a change of patch parameters [N, T, D], split into the part shared by all prompts,
    the prompt-specific part and the part that varies between one prompt's noises."""
    change = (after - before).reshape(-1, noises_per_prompt, *before.shape[1:])
    shared = change.mean((0, 1))
    per_prompt = change.mean(1)
    return {
        "shared": float((shared**2).mean().sqrt()),
        "prompt-specific": float(((per_prompt - shared) ** 2).mean().sqrt()),
        "within-prompt": float(((change - per_prompt[:, None]) ** 2).mean().sqrt()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-prompts", type=int, default=128)
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per prompt (training and held-out)")
    parser.add_argument("--heldout-prompts", type=int, default=64)
    parser.add_argument("--shift", type=float, default=0.2, help="RMS per element of the headroom shift")
    parser.add_argument("--algorithms", nargs="*", default=["dpo", "ppo", "reinforce"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()

    venv = gym.make_vec("NoiseAR-Shapes-v0", num_envs=64, vectorization_mode="vector_entry_point")
    world = venv.unwrapped.world
    prior = NoiseARPrior.from_pretrained(shipped_shapes_prior_path()).eval()
    pool = evaluation_prompts()
    heldout = evenly_spaced(pool, args.heldout_prompts)
    evaluation = set(pool)
    candidates = [p for p in dict.fromkeys(sample_prompts(20 * args.train_prompts, seed=args.seed)) if p not in evaluation]
    train_prompts = candidates[: args.train_prompts]
    k = args.rollouts

    def rollouts(prompts: list[str], model: NoiseARPrior, seed: int) -> RolloutBatch:
        episodes = [p for p in prompts for _ in range(k)]
        return collect_rollouts(venv, NoiseARPolicy(model), episodes, generator=torch.Generator().manual_seed(seed))

    def success(batch_or_noise: RolloutBatch | Tensor) -> float:
        if isinstance(batch_or_noise, RolloutBatch):
            return float(batch_or_noise.details["success"].mean())
        finished = world.score(batch_or_noise, held.cond, held.prompts, seed=args.seed)
        return float(finished.details["success"].mean())

    train = rollouts(train_prompts, prior, seed=1)
    held = rollouts(heldout, prior, seed=2)
    print(f"Shapes world; {len(train_prompts)} training prompts x {k} rollouts (success {success(train):.3f}); "
          f"{len(heldout)} held-out evaluation prompts x {k} noises; the shipped NLL prior")
    rows: list[tuple[str, float, str]] = [("shipped NLL prior", success(held), "")]

    # 1. Headroom: attribute-conditional mean shifts, against the same shifts from permuted advantages.
    advantages = per_prompt_normalize(train.rewards, train.prompts)
    permuted = advantages[torch.randperm(len(advantages), generator=torch.Generator().manual_seed(args.seed))]
    for name, adv in (("attribute shift", advantages), ("control: permuted advantages", permuted)):
        noise = shifted(held.noise, held.prompts, attribute_directions(train, adv), args.shift)
        rows.append((f"{name} (RMS {args.shift})", success(noise), ""))

    # 2. One update of each algorithm on the training rollouts.
    with torch.no_grad():
        mean0, logvar0 = prior.patch_params(held.noise, held.cond.embeds)
    for name in args.algorithms:
        model = copy.deepcopy(prior)
        algorithm_class = get_algorithm(name)
        torch.manual_seed(args.seed)
        algorithm_class(algorithm_class.config_class(), model).update(train)
        model.eval()
        with torch.no_grad():
            mean, logvar = model.patch_params(held.noise, held.cond.embeds)
        parts = mean_change(mean0, mean, k)
        std = (logvar / 2).exp()
        note = (f"mean change RMS: shared {parts['shared']:.4f}, prompt-specific {parts['prompt-specific']:.4f}, "
                f"within-prompt {parts['within-prompt']:.4f}; std {float(std.min()):.2f}..{float(std.max()):.2f}")
        rows.append((f"{name}, one update (defaults)", success(rollouts(heldout, model, seed=2)), note))

    print(f"\n{'noise':>42} | held-out success | what changed")
    base = rows[0][1]
    for name, value, note in rows:
        print(f"{name:>42} | {value:.3f} ({value - base:+.3f}) | {note}")
    print(f"\n{time.perf_counter() - started:.0f} s, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
