"""Where the shipped prior's two sampling knobs pay, and why a policy gradient through the patches misses it.

The Shapes world's shipped prior samples with two numbers: its prompt shift's gain and its
temperature. This prints, measured in one run:

1. The landscape: held-out success on the evaluation prompts (never trained on) at every
   (gain, temperature) of a grid, each cell from the same standard normals (paired cells).
2. The gradient signal: on training prompts, K rollouts each at the shipped knobs, the
   policy-gradient estimate of the reward's slope in each knob (advantages: rewards z-scored
   within a prompt's rollouts, as PPO/GRPO use them) with its t statistic (mean over rollouts /
   standard error), for two ways of exploring:
   - through the patches (what `trainable="shift-gain"` and a temperature learned through the
     noise's density see): the score of each noise's density in the knob, analytic;
   - through the knobs (`trainable="gain-temperature"`, `SamplingKnobs`): each episode draws its
     own knobs, and the score is that of its draw.
   The last column says how many rollouts a t of 2 would take at that signal.

    python benchmarks/sampling_knobs.py [--gains 1 2 3 4] [--temperatures 0.5 0.3] [--seeds 0 1]
        [--train-prompts 64] [--rollouts 8] [--gain-std 1.0] [--log-temperature-std 0.3]
"""

from __future__ import annotations

import argparse
import math
import time

import gymnasium as gym
import torch
from torch import Tensor

import noisear_rl  # noqa: F401  registers the environments
from noisear_rl import NoiseARPrior
from noisear_rl.algorithms.losses import per_prompt_normalize
from noisear_rl.envs import NoiseARPolicy, collect_rollouts
from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.envs.rollout import RolloutBatch
from noisear_rl.prior.gaussian import tempered_logvar
from noisear_rl.prior.knobs import SamplingKnobs
from noisear_rl.worlds.shapes import WORLD, evaluation_prompts, sample_prompts


def patch_scores(prior: NoiseARPrior, batch: RolloutBatch, temperature: float) -> Tensor:
    """[N, 2] d/d(gain) and d/d(log temperature) of each noise's log-density under the prior."""
    with torch.no_grad():
        mean, logvar = prior.patch_params(batch.noise, batch.cond.embeds)
        var = tempered_logvar(logvar.float(), temperature).exp()
        residual = prior.patchify(batch.noise).float() - mean.float()
        unit_shift = prior.prompt_shift(batch.cond.embeds.to(prior.dtype), None, torch.ones(len(batch))).float()
        d_gain = (residual * unit_shift / var).sum((1, 2))
        d_log_temperature = (residual.square() / var - 1.0).sum((1, 2))
    return torch.stack([d_gain, d_log_temperature], 1)


def signal(advantages: Tensor, scores: Tensor) -> list[tuple[float, float, float]]:
    """Per knob: (gradient estimate, its t statistic, rollouts for t = 2)."""
    terms = advantages[:, None] * scores
    rows = []
    for k in range(scores.shape[1]):
        mean, se = float(terms[:, k].mean()), float(terms[:, k].std() / math.sqrt(len(terms)))
        t = mean / se
        rows.append((mean, t, len(terms) * (2.0 / t) ** 2 if t else math.inf))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gains", type=float, nargs="*", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1], help="noise seeds of the landscape (188 prompts each)")
    parser.add_argument("--heldout-prompts", type=int, default=188)
    parser.add_argument("--train-prompts", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per training prompt")
    parser.add_argument("--gain-std", type=float, default=1.0)
    parser.add_argument("--log-temperature-std", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    venv = gym.make_vec("NoiseAR-Shapes-v1", num_envs=64, vectorization_mode="vector_entry_point")
    prior = NoiseARPrior.from_pretrained(str(WORLD.prior)).eval()
    temperature, gain = prior.sampling_temperature(), float(prior.prompt_shift.gain.detach())
    heldout = evenly_spaced(evaluation_prompts(), args.heldout_prompts)

    # 1. The landscape, paired: the same standard normals in every cell.
    print(f"1. Held-out success of the shipped prior ({len(heldout)} evaluation prompts x {len(args.seeds)} noise seeds; "
          f"shipped: gain {gain:g}, temperature {temperature:g})")
    print(f"{'temperature':>12} | " + " | ".join(f"gain {g:g}" for g in args.gains))
    for t in args.temperatures:
        cells = []
        for g in args.gains:
            with torch.no_grad():
                prior.prompt_shift.gain.fill_(g)
            success = [collect_rollouts(venv, NoiseARPolicy(prior, t), heldout, generator=torch.Generator().manual_seed(1000 + s))
                       .details["success"].float().mean() for s in args.seeds]
            cells.append(f"{float(torch.stack(success).mean()):.3f}")
        print(f"{t:>12g} | " + " | ".join(f"{c:>{len(f'gain {g:g}')}}" for c, g in zip(cells, args.gains)), flush=True)
    with torch.no_grad():
        prior.prompt_shift.gain.fill_(gain)

    # 2. The gradient signal at the shipped knobs, through the patches and through the knobs.
    evaluation = set(evaluation_prompts())
    train = [p for p in dict.fromkeys(sample_prompts(20 * args.train_prompts, seed=0)) if p not in evaluation][: args.train_prompts]
    episodes = [p for p in train for _ in range(args.rollouts)]
    print(f"\n2. Policy-gradient signal at the shipped knobs ({len(train)} training prompts x {args.rollouts} rollouts)")
    print(f"{'exploring through':>30} | {'knob':>16} | {'estimate':>9} | {'t':>6} | rollouts for t = 2")
    patches = collect_rollouts(venv, NoiseARPolicy(prior, temperature), episodes, generator=torch.Generator().manual_seed(7))
    knobs = SamplingKnobs(prior, temperature, args.gain_std, args.log_temperature_std)
    drawn = collect_rollouts(venv, NoiseARPolicy(prior, temperature, knobs=knobs), episodes, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        knob_scores = (drawn.knobs - knobs.mean()) / knobs.std.square()
    ways = (("the patches (knobs fixed)", patches, patch_scores(prior, patches, temperature)),
            (f"the knobs (std {args.gain_std:g}, {args.log_temperature_std:g})", drawn, knob_scores))
    for name, batch, scores in ways:
        advantages = per_prompt_normalize(batch.rewards, batch.prompts)
        for knob, (estimate, t, needed) in zip(("gain", "log temperature"), signal(advantages, scores)):
            print(f"{name:>30} | {knob:>16} | {estimate:>9.3g} | {t:>6.2f} | {needed:,.0f}")
        print(f"{'':>30} | {'(success)':>16} | {float(batch.details['success'].float().mean()):>9.3f} |")
    print(f"\n{time.perf_counter() - started:.0f} s, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
