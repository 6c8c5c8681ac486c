"""What each noise source costs next to the diffusion pipeline, on the Shapes world, on this CPU.

Prints, measured in one run: per source, the seconds per noise and their ratio to the pipeline's
seconds per image (20 DDIM steps with classifier-free guidance on the Shapes world, same batch);
then the NoiseAR prior's seconds per sample at the SDXL configuration (4x128x128 latent, patch
32, the release's d_model 2048, 77x2048 condition). A cost depends on the architecture, not on
the weights, so when a trained network (shipped Shapes model, prior, NPNet) is missing, a
randomly initialised one of the same architecture stands in; the first lines say which.

    python benchmarks/noise_source_cost.py [--batch-size 16] [--repeats 3] [--best-of 8] [--threads 1]

On a CPU shared with other jobs one thread gives steadier times than two (the threads of one op
wait for each other); every row of one run uses the same setting.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from noisear_rl import NoiseARPrior
from noisear_rl.algorithms.nll import NLLConfig, build_prior
from noisear_rl.noise_sources import NoiseSource, load_noise_source
from noisear_rl.worlds.shapes import WORLD
from noisear_rl.noise_sources.npnet import NoisePromptNetwork
from noisear_rl.worlds.shapes import ShapesBackend, build_shapes_pipeline, evaluation_prompts
from noisear_rl.worlds.shapes.pipeline import DEFAULT_WEIGHTS
from noisear_rl.reward_models import load_reward


def seconds_per_call(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def shapes_backend(model: str | None) -> tuple[ShapesBackend, str]:
    if model is not None or (DEFAULT_WEIGHTS / "model_index.json").is_file():
        return ShapesBackend(model_path=model), f"trained weights ({model or DEFAULT_WEIGHTS})"
    pipe = build_shapes_pipeline()  # the shipped architecture with random weights
    pipe.register_to_config(default_num_inference_steps=20, default_guidance_scale=3.0)
    return ShapesBackend(pipe=pipe), "random weights of the shipped architecture (no trained model found)"


def sources(backend: ShapesBackend, best_of: int) -> tuple[list[NoiseSource], list[str]]:
    notes = []
    reward = load_reward("shapes")
    if (WORLD.npnet / "config.json").is_file():
        golden = load_noise_source("golden", backend=backend)
    else:
        c, h, w = backend.latent_shape
        golden = load_noise_source("golden", backend=backend,
                                   network=NoisePromptNetwork(c, h, w, cond_dim=backend.cond_dim))
        notes.append("golden: untrained NPNet of the default size")
    if (WORLD.prior / "config.json").is_file():
        noisear = load_noise_source("noisear", backend=backend)
    else:
        prior = build_prior(NLLConfig(), tuple(backend.latent_shape), backend.cond_dim)
        noisear = load_noise_source("noisear", backend=backend, prior=prior)
        notes.append("noisear: untrained prior of the NLL default architecture")
    built = [
        load_noise_source("gaussian", backend=backend),
        golden,
        load_noise_source("golden-step", backend=backend),
        load_noise_source("erasure-injection", backend=backend),
        noisear,
        load_noise_source(f"best-of-n:{best_of}", backend=backend, reward=reward),
    ]
    return built, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (after one warm-up)")
    parser.add_argument("--best-of", type=int, default=8, help="N of best-of-n")
    parser.add_argument("--model", type=str, default=None, help="a Shapes pipeline folder (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backend, weights = shapes_backend(args.model)
    prompts = evaluation_prompts()[:: max(1, len(evaluation_prompts()) // args.batch_size)][: args.batch_size]
    cond = backend.encode(prompts)
    built, notes = sources(backend, args.best_of)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, float32; Shapes world: {weights}; "
          f"{backend.num_inference_steps} DDIM steps, guidance {backend.guidance_scale}; batch {len(prompts)}")
    for note in notes:
        print(f"note: {note} (cost does not depend on the weights)")

    noise = backend.random_latents(len(prompts), torch.Generator().manual_seed(0))
    pipeline = seconds_per_call(lambda: backend.generate(noise, cond), args.repeats) / len(prompts)
    print("\n| source | noise s/image | pipeline s/image | noise / pipeline | (noise + pipeline) / pipeline |")
    print("|---|---|---|---|---|")
    for source in built:
        seconds = seconds_per_call(
            lambda source=source: source(prompts, cond, torch.Generator().manual_seed(0)), args.repeats
        ) / len(prompts)
        print(f"| {source.name} | {seconds:.5f} | {pipeline:.5f} | {seconds / pipeline:.3f} | {(seconds + pipeline) / pipeline:.2f} |")

    prior = NoiseARPrior(patch_size=32).eval()  # the release's SDXL configuration, 4x128x128
    sdxl_cond = torch.randn(1, 77, 2048)
    per_sample = seconds_per_call(lambda: prior.sample(sdxl_cond, generator=torch.Generator().manual_seed(0)),
                                  max(1, args.repeats))
    params = sum(p.numel() for p in prior.parameters()) / 1e6
    print(f"\nNoiseAR prior at the SDXL configuration (4x128x128, patch 32, {prior.num_patches} patches, "
          f"{params:.0f}M parameters, KV cache, batch 1): {per_sample:.3f} s per sample on this CPU")


if __name__ == "__main__":
    main()
