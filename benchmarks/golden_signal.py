"""How much a Shapes golden-noise collection says about each requested (attribute, position).

For every (colour, position) and (shape, position) of a requested object, the mean of the golden
noises whose prompt asks for it is what a prompt-conditional prior fitted to the collection could
learn for that key. Printed, measured in one run, at full resolution and averaged over square
blocks: the RMS of those means per element, the RMS that pure noise would give with the same
counts (the noise floor), and the cosine between the means of two halves of the collection
(0: nothing reproducible; 1: a clean signal).

    python benchmarks/golden_signal.py data/shapes_selected [--pool 1 4 8]
"""

from __future__ import annotations

import argparse
import torch
import torch.nn.functional as F

from noisear_rl.data import GoldenNoiseDataset
from noisear_rl.worlds.shapes.world import attribute_means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a Shapes golden-noise collection (python -m noisear_rl.collect --output-dir DIR)")
    parser.add_argument("--pool", type=int, nargs="*", default=[1, 4, 8], help="block sides to average over")
    args = parser.parse_args()

    dataset = GoldenNoiseDataset(args.data, in_memory=True)
    golden = dataset.golden.float()
    prompts = [dataset.prompts[i] for i in dataset.prompt_index.tolist()]
    halves = torch.arange(len(golden)) % 2
    print(f"{args.data}: {len(golden)} golden noises of {len(set(prompts))} prompts")
    print(f"{'block':>5} | key-mean RMS | noise floor | split-half cosine | keys")
    for pool in args.pool:
        noise = F.avg_pool2d(golden, pool) if pool > 1 else golden
        means, counts = attribute_means(noise, prompts)
        first, _ = attribute_means(noise[halves == 0], [p for p, h in zip(prompts, halves) if h == 0])
        second, _ = attribute_means(noise[halves == 1], [p for p, h in zip(prompts, halves) if h == 1])
        shared = sorted(set(first) & set(second))
        rms = torch.tensor([float(means[key].pow(2).mean().sqrt()) for key in means]).mean()
        # a mean of n independent unit normals averaged over pool x pool blocks has RMS 1 / (pool sqrt(n))
        floor = torch.tensor([1.0 / (pool * counts[key] ** 0.5) for key in means]).mean()
        cosine = torch.tensor([float(F.cosine_similarity(first[k].flatten(), second[k].flatten(), dim=0)) for k in shared])
        print(f"{pool:>5} | {float(rms):12.4f} | {float(floor):11.4f} | {float(cosine.mean()):17.3f} | {len(means)}")


if __name__ == "__main__":
    main()
