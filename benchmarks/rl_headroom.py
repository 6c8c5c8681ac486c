"""How much a prompt-conditional noise prior could gain on the Shapes world, and what one RL update learns.

Prints, measured in one run, on held-out evaluation prompts (never trained on) with paired
noises (every row starts from the same standard normals):

1. Headroom: K rollouts of the shipped NLL prior on N training prompts give, for every
   (colour, position) and (shape, position) of a requested object, the advantage-weighted mean
   noise (rewards z-scored within each prompt). Adding the sum of a held-out prompt's directions,
   scaled to an RMS of `--shift` per element, to its noises measures what a prompt-conditional
   mean shift learned from these rollouts can gain. Control: the same with the advantages
   permuted across rollouts (directions of pure noise, same structure and size).
   Changes that need no binding of attributes to positions, for comparison: one shift for every
   prompt (rewards z-scored over the whole batch), the prior's own prompt-specific mean
   (conditional minus unconditional, averaged over a prompt's noises) amplified or reversed to
   the same RMS, and other sampling temperatures.
   Then the learning rule alone: a prompt-conditional shift of the prior's patch means (its
   variances kept, zero at the start), fitted to the same rollouts by the policy gradient with a
   closed-form KL penalty to the prior, in two forms: linear in the prompt's (attribute,
   position) indicators (an input that states the bindings), or read from the text encoder's
   states by cross-attention with a learned query per patch (what the prior itself reads).
   Held-out noises get their prompt's shift added (for a prior whose means hardly depend on
   earlier patches, as here, close to sampling from the shifted prior).
2. What each algorithm learns from the same rollouts in one update (its default config, except
   that the prompt shift's maps train, at lr 3e-3, as in the defaults before the shift's gain;
   the batch as one round): the change of the prior's mean on the held-out noises, split into a part
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
from torch import Tensor, nn

import noisear_rl  # noqa: F401  registers the environments
from noisear_rl import NoiseARPrior
from noisear_rl.algorithms import get_algorithm
from noisear_rl.algorithms.trainable import shift_map_settings
from noisear_rl.algorithms.losses import kl_per_noise, per_prompt_normalize, reinforce_loss
from noisear_rl.envs import NoiseARPolicy, collect_rollouts
from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.envs.rollout import RolloutBatch
from noisear_rl.pipelines.base import Condition
from noisear_rl.worlds.shapes import evaluation_prompts, sample_prompts
from noisear_rl.worlds.shapes.world import ATTRIBUTE_KEYS, attribute_keys, attribute_means, scene_tokens
from noisear_rl.worlds.shapes import WORLD


def attribute_directions(batch: RolloutBatch, advantages: Tensor) -> dict[tuple[str, str], Tensor]:
    """Per attribute key: the mean of advantage x noise over the rollouts whose prompt has it."""
    return attribute_means(advantages.view(-1, 1, 1, 1) * batch.noise, batch.prompts)[0]


def shifted(noise: Tensor, prompts: list[str], directions: dict[tuple[str, str], Tensor], rms: float) -> Tensor:
    """Each noise plus its prompt's summed directions, scaled to `rms` per element."""
    shifts = []
    for prompt in prompts:
        shift = sum((directions.get(key, torch.zeros_like(noise[0])) for key in attribute_keys(prompt)), torch.zeros_like(noise[0]))
        shifts.append(scaled_to_rms(shift, rms))
    return noise + torch.stack(shifts)


def scaled_to_rms(shift: Tensor, rms: float) -> Tensor:
    """`shift` rescaled to an RMS of `rms` per element."""
    return shift * rms / shift.pow(2).mean().sqrt().clamp(min=1e-12)


def own_prompt_direction(prior: NoiseARPrior, batch: RolloutBatch, unconditional: Condition, noises_per_prompt: int) -> Tensor:
    """Per noise of `batch`: the mean over its prompt's noises of the prior's conditional minus
    unconditional teacher-forced mean, i.e. what the prior itself does with the prompt."""
    with torch.no_grad():
        conditional, _ = prior(batch.noise, batch.cond.embeds)
        unconditioned, _ = prior(batch.noise, unconditional.embeds)
    per_prompt = (conditional - unconditioned).reshape(-1, noises_per_prompt, *batch.noise.shape[1:]).mean(1, keepdim=True)
    return per_prompt.expand(-1, noises_per_prompt, -1, -1, -1).reshape(batch.noise.shape)


class BindingShift(nn.Module):
    """A mean shift per patch that is linear in a prompt's (attribute, position) indicators (its
    scene tokens, `scene_tokens`, merged over objects): a prior input that states the bindings.
    Zero at the start."""

    def __init__(self, num_patches: int, patch_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(len(ATTRIBUTE_KEYS), num_patches, patch_dim))
        self.bias = nn.Parameter(torch.zeros(num_patches, patch_dim))

    def forward(self, prompts: list[str], cond: Condition) -> Tensor:
        indicators = scene_tokens(prompts).amax(1)
        return torch.einsum("bk,ktd->btd", indicators, self.weight) + self.bias


class ConditionShift(nn.Module):
    """A mean shift per patch read from the condition (the text encoder's states) by cross-attention
    with one learned query per patch, as a prior's condition pathway could. Zero at the start."""

    def __init__(self, cond_dim: int, num_patches: int, patch_dim: int, width: int = 64) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_patches, width) * 0.5)
        self.key = nn.Linear(cond_dim, width)
        self.value = nn.Linear(cond_dim, width)
        self.out = nn.Linear(width, patch_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, prompts: list[str], cond: Condition) -> Tensor:
        weights = torch.einsum("tw,blw->btl", self.queries, self.key(cond.embeds)) / self.queries.shape[1] ** 0.5
        return self.out(torch.einsum("btl,blw->btw", weights.softmax(-1), self.value(cond.embeds)))


def fit_shift(shift: nn.Module, prior: NoiseARPrior, batch: RolloutBatch, steps: int, lr: float, kl_coef: float, seed: int) -> nn.Module:
    """Trains `shift`, added to the prior's patch means (variances kept), by the policy gradient on
    `batch` (rewards z-scored within each prompt) plus `kl_coef` x the closed-form KL to the prior."""
    with torch.no_grad():
        mean, logvar = prior.patch_params(batch.noise, batch.cond.embeds)
    advantages = per_prompt_normalize(batch.rewards, batch.prompts)
    optimizer = torch.optim.Adam(shift.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(batch), generator=generator)[:256]
        shifted_mean = mean[idx] + shift([batch.prompts[i] for i in idx], batch.cond[idx])
        logp = prior.patch_log_prob(batch.noise[idx], shifted_mean, logvar[idx]).sum(-1)
        kl = kl_per_noise((shifted_mean, logvar[idx]), (mean[idx], logvar[idx])).mean()
        loss = (reinforce_loss(logp, advantages[idx]).loss + kl_coef * kl) / batch.noise[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return shift


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
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.85, 1.15], help="sampling temperatures to score")
    parser.add_argument("--shift-steps", type=int, default=300, help="Adam steps (of 256 rollouts) of the policy-gradient shifts")
    parser.add_argument("--shift-lr", type=float, default=3e-3)
    parser.add_argument("--shift-kl", type=float, default=0.3, help="KL coefficient of the policy-gradient shifts")
    parser.add_argument("--algorithms", nargs="*", default=["dpo", "ppo", "reinforce"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()

    venv = gym.make_vec("NoiseAR-Shapes-v1", num_envs=64, vectorization_mode="vector_entry_point")
    world = venv.unwrapped.world
    prior = NoiseARPrior.from_pretrained(str(WORLD.prior)).eval()
    pool = evaluation_prompts()
    heldout = evenly_spaced(pool, args.heldout_prompts)
    evaluation = set(pool)
    candidates = [p for p in dict.fromkeys(sample_prompts(20 * args.train_prompts, seed=args.seed)) if p not in evaluation]
    train_prompts = candidates[: args.train_prompts]
    k = args.rollouts

    def rollouts(prompts: list[str], model: NoiseARPrior, seed: int, temperature: float = 1.0) -> RolloutBatch:
        episodes = [p for p in prompts for _ in range(k)]
        return collect_rollouts(venv, NoiseARPolicy(model, temperature), episodes, generator=torch.Generator().manual_seed(seed))

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

    # 1b. What needs no binding: one shift for every prompt (rewards z-scored over the batch), the
    # prior's own prompt-specific mean amplified or reversed, and the sampling temperature.
    rewards = train.rewards.float()
    batch_z = (rewards - rewards.mean()) / rewards.std()
    common = (batch_z.view(-1, 1, 1, 1) * train.noise).mean(0)
    rows.append((f"prompt-independent shift (RMS {args.shift})", success(held.noise + scaled_to_rms(common, args.shift)), ""))
    own = own_prompt_direction(prior, held, world.encode([""]).repeat_interleave(len(held)), k)
    for sign, label in ((1.0, "amplified"), (-1.0, "reversed")):
        rows.append((f"prior's prompt-specific mean {label} (RMS {args.shift})",
                     success(held.noise + sign * scaled_to_rms(own, args.shift)), ""))
    for temperature in args.temperatures:
        rows.append((f"sampling temperature {temperature}", success(rollouts(heldout, prior, seed=2, temperature=temperature)), ""))

    # 1c. The same policy gradient, fitting a prompt-conditional mean shift that reads the bindings,
    # or reads the text condition; the held-out noises get the shift of their prompt.
    torch.manual_seed(args.seed)  # the condition shift's initial weights
    shifts = {
        "bindings": BindingShift(prior.num_patches, prior.patch_dim),
        "the text condition": ConditionShift(prior.config.cond_dim, prior.num_patches, prior.patch_dim),
    }
    for name, shift in shifts.items():
        fit_shift(shift, prior, train, args.shift_steps, args.shift_lr, args.shift_kl, args.seed)
        with torch.no_grad():
            learned = prior.unpatchify(shift(held.prompts, held.cond))
        rows.append((f"policy-gradient shift reading {name}", success(held.noise + learned),
                     f"RMS {float(learned.pow(2).mean().sqrt()):.3f}"))

    # 2. One update of each algorithm on the training rollouts.
    with torch.no_grad():
        mean0, logvar0 = prior.patch_params(held.noise, held.cond.embeds)
    for name in args.algorithms:
        model = copy.deepcopy(prior)
        algorithm_class = get_algorithm(name)
        torch.manual_seed(args.seed)
        # The shift's maps (not the default gain alone): what a prompt-specific change is made of.
        config = algorithm_class.config_class(**shift_map_settings(name))
        algorithm_class(config, model).update(train)
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
