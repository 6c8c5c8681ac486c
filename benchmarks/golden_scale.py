"""Is the golden step's direction a good one here? Success when its move is scaled up or repeated.

The golden step (one DDIM step at the default guidance, one inversion step at guidance 1,
`noisear_rl.pipelines.golden.golden_noise`) moves a noise x by d = golden(x) - x. If d pointed
where good noises lie and were merely too short, moving further along it would raise success.
This script scores, on the same evaluation prompts and base noises, Gaussian noise, the golden
step, x + s * d for each `--scales` s (the one step's move, lengthened), and the golden step
applied k times for each `--iterations` k (the direction recomputed at every step). It prints each
variant's success and per-criterion rates, and its outcomes fixed / broken against Gaussian noise
on the same (prompt, noise) pairs with an exact sign test.

    python benchmarks/golden_scale.py [--prompts 188] [--noises 2] [--scales 3 8] [--iterations 3 8] [--model-path DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.pipelines.base import Condition
from noisear_rl.pipelines.golden import golden_noise
from noisear_rl.reward_models import load_reward
from noisear_rl.worlds.shapes import ShapesBackend, evaluation_prompts
from noisear_rl.worlds.shapes.measure import paired_flips, sign_test

CRITERIA = ("success", "colour", "shape", "position")


def golden_variants(
    backend: ShapesBackend, x: torch.Tensor, cond: Condition, scales: list[float], iterations: list[int]
) -> dict[str, torch.Tensor]:
    """Gaussian noise `x`, its golden step, the step's move scaled by each s, and the step repeated k times."""
    guidance = backend.guidance_scale
    golden = golden_noise(backend, x, cond, guidance)
    variants = {"gaussian": x, "golden step": golden}
    variants.update({f"x + {s:g} d": x + s * (golden - x) for s in scales})
    repeated = golden
    for k in range(2, max(iterations, default=1) + 1):
        repeated = golden_noise(backend, repeated, cond, guidance)
        if k in iterations:
            variants[f"golden step x{k}"] = repeated
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=188, help="evaluation prompts, evenly spaced over the split")
    parser.add_argument("--noises", type=int, default=2, help="base noises per prompt (seeds 0..N-1)")
    parser.add_argument("--scales", type=float, nargs="*", default=[3.0, 8.0])
    parser.add_argument("--iterations", type=int, nargs="*", default=[3, 8])
    parser.add_argument("--model-path", default=None, help="a saved Shapes pipeline (default: the shipped weights)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.prompts < 1 or args.noises < 1 or any(k < 2 for k in args.iterations):
        parser.error("--prompts and --noises must be >= 1 and every --iterations value >= 2")
    torch.set_num_threads(args.threads)

    prompts = evenly_spaced(evaluation_prompts(), args.prompts)
    backend, reward = ShapesBackend(model_path=args.model_path), load_reward("shapes")
    cond = backend.encode(prompts)
    outcomes: dict[str, dict[str, list[torch.Tensor]]] = {}
    moves: dict[str, list[float]] = {}
    start = time.perf_counter()
    for seed in range(args.noises):
        x = torch.randn((len(prompts), *backend.latent_shape), generator=torch.Generator().manual_seed(seed))
        for name, noise in golden_variants(backend, x, cond, args.scales, args.iterations).items():
            details = reward.evaluate(backend.generate(noise, cond), prompts).details
            for key in CRITERIA:
                outcomes.setdefault(name, {}).setdefault(key, []).append(details[key].float())
            moves.setdefault(name, []).append(float((noise - x).abs().mean()))
        print(f"noise seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)

    pairs = len(prompts) * args.noises
    print(f"\n{len(prompts)} evaluation prompts x {args.noises} noises = {pairs} pairs, guidance {backend.guidance_scale:g}")
    print("| noise | mean abs move | success | colour | shape | position | fixed / broken vs Gaussian | sign test p |")
    print("|---|---|---|---|---|---|---|---|")
    base = torch.cat(outcomes["gaussian"]["success"])
    for name, per_key in outcomes.items():
        rates = {key: float(torch.cat(values).mean()) for key, values in per_key.items()}
        success = torch.cat(per_key["success"])
        fixed, broken = paired_flips(base, success)
        print(
            f"| {name} | {sum(moves[name]) / len(moves[name]):.4f} | {rates['success']:.1%} | {rates['colour']:.1%} | "
            f"{rates['shape']:.1%} | {rates['position']:.1%} | {fixed} / {broken} | {sign_test(fixed, broken):.2g} |"
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
