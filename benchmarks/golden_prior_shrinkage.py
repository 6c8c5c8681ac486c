"""Is a prior NLL-trained on golden pairs more than a shrunken Gaussian?

A NoiseAR prior sampled at temperature 0.5 draws noise with about half the spread of N(0, I), and
a smaller initial noise alone can change what a diffusion model draws. This separates the two on
the Shapes world's evaluation prompts, measured in one run: success of Gaussian noise z, of 0.5 z,
of s z (s: the std of the prior's samples at temperature 0.5), of the prior at temperature 0.5
and 1.0, and of NPNet(z), each with its paired change from z (a t interval over per-prompt
means). The scaled noises and NPNet share z; the prior draws its own noise, so its interval is
wider. It also prints the noises' statistics.

    python benchmarks/golden_prior_shrinkage.py runs/shapes-nll/prior [--num-prompts 188] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.evaluate.stats import mean_ci
from noisear_rl.noise_sources import load_noise_source
from noisear_rl.pipelines.factory import load_backend
from noisear_rl.reward_models import load_reward
from noisear_rl.worlds.shapes import evaluation_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", help="the golden-pair prior (a save_pretrained folder or a training run)")
    parser.add_argument("--num-prompts", type=int, default=188, help="evaluation prompts, spread evenly over the split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="noise seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    backend, verifier = load_backend("shapes"), load_reward("shapes")
    prompts = evenly_spaced(evaluation_prompts(), args.num_prompts)
    cond = backend.encode(prompts)
    cold_source = load_noise_source(f"noisear:{args.prior}?temperature=0.5", backend=backend)
    warm_source = load_noise_source("noisear?temperature=1.0", backend=backend, prior=cold_source.prior)  # one load
    npnet = load_noise_source("golden", backend=backend)
    success: dict[str, list[torch.Tensor]] = {}
    stats: dict[str, list[float]] = {}
    for seed in args.seeds:
        z = backend.random_latents(len(prompts), torch.Generator().manual_seed(seed))
        with torch.no_grad():
            cold = cold_source(prompts, cond, torch.Generator().manual_seed(1000 + seed))
            warm = warm_source(prompts, cond, torch.Generator().manual_seed(1000 + seed))
            mean, logvar = warm_source.prior(warm, cond.embeds)
            golden = npnet(prompts, cond, torch.Generator().manual_seed(seed))
        spread = cold.std().item()
        for name, value in (("std of the prior's samples at T 0.5", spread), ("std of the prior's samples at T 1", warm.std().item()),
                            ("the prior's mean |predicted mean|", mean.abs().mean().item()),
                            ("the prior's mean predicted std", (0.5 * logvar).exp().mean().item()),
                            ("NPNet's mean |change| of z", (golden - z).abs().mean().item())):
            stats.setdefault(name, []).append(value)
        noises = {"gaussian z": z, "0.5 z": 0.5 * z, "s z": spread * z, "prior, T 0.5": cold, "prior, T 1.0": warm, "NPNet(z)": golden}
        for name, noise in noises.items():
            success.setdefault(name, []).append(verifier.evaluate(backend.generate(noise, cond), prompts).details["success"].float())

    base = torch.stack(success["gaussian z"])
    print(f"{len(prompts)} evaluation prompts x {len(args.seeds)} noise seeds")
    print(f"{'noise':>14} | success | change from z (95% CI)")
    for name, values in success.items():
        values = torch.stack(values)
        change, low, high = mean_ci(values - base)
        print(f"{name:>14} | {100 * values.mean():6.1f}% | {100 * change:+.1f} ({100 * low:+.1f}, {100 * high:+.1f})")
    for name, values in stats.items():
        print(f"{name}: {sum(values) / len(values):.4f}")
    print(f"\n{time.perf_counter() - started:.0f} s, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
