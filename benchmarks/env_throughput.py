"""Vector-env throughput against the raw batched pipeline on the Shapes world.

Prints, measured in one run: images/s of `NoiseVectorEnv` (reset, T patch steps with Gaussian
actions, one batched denoise, one reward call) against the raw batched pipeline call on the
same latents and prompts (plus the same reward call), and their ratio. Target: >= 0.9x.

    python benchmarks/env_throughput.py [--num-envs 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import noisear_rl  # noqa: F401  registers the environments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.num_envs
    venv = gym.make_vec("NoiseAR-Shapes-v1", num_envs=n, vectorization_mode="vector_entry_point")
    env = venv.unwrapped
    world = env.world
    rng = np.random.default_rng(0)
    prompts = world.sample_prompts(n, rng)
    actions = rng.standard_normal((world.num_patches, n, world.patch_dim)).astype(np.float32)
    noise = world.patches_to_noise(actions.transpose(1, 0, 2))

    def env_round() -> None:
        env.reset(seed=0, options={"prompts": prompts})
        for t in range(world.num_patches):
            env.step(actions[t])

    cond = world.backend.encode(prompts)  # encoded once, as the env's prompt cache does

    def raw_round() -> None:
        images = world.backend.generate(noise, cond, generator=torch.Generator().manual_seed(0))
        world.reward(images, prompts)

    env_round(), raw_round()  # warm-up
    timings = {"vector env": [], "raw pipeline + reward": []}
    for _ in range(args.rounds):  # interleaved so both see the same machine load
        for name, fn in (("vector env", env_round), ("raw pipeline + reward", raw_round)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    rates = {name: n / min(ts) for name, ts in timings.items()}
    print(f"Shapes world, {n} envs, {world.num_patches} patches, {world.backend.num_inference_steps} steps, "
          f"guidance {world.backend.guidance_scale}, {torch.get_num_threads()} threads")
    for name, rate in rates.items():
        print(f"{name:>24}: {rate:7.1f} images/s (best of {args.rounds})")
    print(f"{'ratio env / raw':>24}: {rates['vector env'] / rates['raw pipeline + reward']:.2f}x (target >= 0.9x)")


if __name__ == "__main__":
    main()
