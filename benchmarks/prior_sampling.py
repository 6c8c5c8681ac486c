"""KV-cached vs recomputed sampling of the NoiseAR prior at the SDXL configuration.

Prints, measured in one run on this machine: time per sample with and without the cache, their
ratio, parameters, and FLOPs per sample, for patch 32 (16 patches) and patch 16 (64 patches) over
SDXL's 4x128x128 latent with a 77x2048 condition. Targets: >= 3x at 16 patches, >= 10x at 64.

    python benchmarks/prior_sampling.py [--batch-sizes 1 16] [--repeats 2]

At batch 1 the cached path is memory-bound (every step streams all weights), so the wall-clock
ratio stays well below the FLOP ratio; at rollout batch sizes (16+) it approaches it.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from noisear_rl import NoiseARPrior


def seconds_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def flops_of(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, float32")
    print("| patch | patches | batch | params (M) | GFLOP/sample cached | GFLOP/sample recompute "
          "| s/sample cached | s/sample recompute | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for patch_size in (32, 16):
        prior = NoiseARPrior(patch_size=patch_size).eval()  # release defaults: d_model 2048, 1 layer
        params = sum(p.numel() for p in prior.parameters()) / 1e6
        for batch in args.batch_sizes:
            cond = torch.randn(batch, 77, 2048)

            def cached() -> None:
                prior.sample(cond, generator=torch.Generator().manual_seed(0), use_cache=True)

            def recompute() -> None:
                prior.sample(cond, generator=torch.Generator().manual_seed(0), use_cache=False)

            gflop_cached = flops_of(cached) / batch / 1e9
            gflop_full = flops_of(recompute) / batch / 1e9
            t_cached = seconds_per_call(cached, args.repeats) / batch
            t_full = seconds_per_call(recompute, max(1, args.repeats // 2)) / batch
            print(f"| {patch_size} | {prior.num_patches} | {batch} | {params:.1f} | {gflop_cached:.2f} | "
                  f"{gflop_full:.2f} | {t_cached:.3f} | {t_full:.3f} | {t_full / t_cached:.1f}x |")


if __name__ == "__main__":
    main()
