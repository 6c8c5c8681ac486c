"""What the golden step adds to a two-object prompt's noise: its binding, or a blend with the swaps?

The Shapes world's failures are binding failures: the model was trained with a share of
two-object captions swapped (`--caption-swap`), so a prompt's conditional is a mixture of its
binding and the three swapped ones (colours, shapes or sides exchanged), and the noise picks the
mode. The golden step adds to the noise a multiple of the guided-minus-unguided x0 prediction at
the first timestep. This script regresses, by least squares with a constant term, the mean over
`--noises` noises of each of these images on renders (nominal size and place) of the prompt's
scene and its three swaps, for evaluation prompts whose two objects differ in colour and in
shape (so that the four renders differ):

- the x0 prediction at the first timestep, unconditional (guidance 0), conditional (1) and
  guided (the world's default guidance);
- the golden step's move itself, golden(x) - x.

It prints the four weights normalised to sum to 1 ("correct" is the requested binding's share)
and their sum (the image's overall contrast). Equal shares mean the image carries no binding.

    python benchmarks/golden_blend.py [--prompts 60] [--noises 16] [--model-path DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.pipelines.golden import golden_noise
from noisear_rl.pipelines.vp import from_epsilon
from noisear_rl.worlds.shapes import ShapesBackend, evaluation_prompts
from noisear_rl.worlds.shapes.world import SWAPS, parse_prompt, render, swap_binding

BINDINGS = ("correct", *(f"{swap} swapped" for swap in SWAPS))


def binding_renders(prompt: str) -> torch.Tensor:
    """[4, 3, H, W] renders in the model's [-1, 1] range: the prompt's scene, then each of `SWAPS`."""
    scene = parse_prompt(prompt)
    scenes = (scene, *(swap_binding(scene, swap) for swap in SWAPS))
    return torch.stack([render(s, jitter=False) for s in scenes]) * 2 - 1


def blend_weights(image: torch.Tensor, renders: torch.Tensor) -> torch.Tensor:
    """Least-squares weights w of `image` ~ sum_k w_k renders[k] + c (a constant c absorbs the background)."""
    design = torch.cat([renders.reshape(len(renders), -1), torch.ones(1, image.numel())]).T.double()
    solution = torch.linalg.lstsq(design, image.reshape(-1, 1).double()).solution
    return solution[: len(renders), 0].float()


def distinct_pair_prompts(prompts: list[str]) -> list[str]:
    """The two-object prompts whose objects differ in colour and in shape (their four binding renders differ)."""
    keep = []
    for prompt in prompts:
        scene = parse_prompt(prompt)
        if len(scene) == 2 and scene[0].colour != scene[1].colour and scene[0].shape != scene[1].shape:
            keep.append(prompt)
    return keep


@torch.no_grad()
def first_step_images(backend: ShapesBackend, prompt: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean over the noises `x` of the first-timestep x0 prediction at guidance 0, 1 and the default, and of the golden move."""
    cond = backend.encode([prompt]).repeat_interleave(len(x))
    t = int(backend.timesteps()[0])
    alpha = backend.alphas_cumprod[t]
    images = {}
    for scale in (0.0, 1.0, backend.guidance_scale):
        epsilon = backend.predict_noise(x, t, cond, scale)
        images[f"x0 prediction, guidance {scale:g}"] = from_epsilon(epsilon, x, alpha, "sample").mean(0)
    images["golden move"] = (golden_noise(backend, x, cond, backend.guidance_scale) - x).mean(0)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=60, help="evaluation prompts (two objects, distinct colours and shapes)")
    parser.add_argument("--noises", type=int, default=16, help="noises averaged per prompt")
    parser.add_argument("--model-path", default=None, help="a saved Shapes pipeline (default: the shipped weights)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.prompts < 1 or args.noises < 1:
        parser.error("--prompts and --noises must be >= 1")
    torch.set_num_threads(args.threads)

    prompts = evenly_spaced(distinct_pair_prompts(evaluation_prompts()), args.prompts)
    backend = ShapesBackend(model_path=args.model_path)
    x = torch.randn((args.noises, *backend.latent_shape), generator=torch.Generator().manual_seed(0))
    weights: dict[str, list[torch.Tensor]] = {}
    start = time.perf_counter()
    for prompt in prompts:
        renders = binding_renders(prompt)
        for name, image in first_step_images(backend, prompt, x).items():
            weights.setdefault(name, []).append(blend_weights(image, renders))

    print(f"{len(prompts)} evaluation prompts x {args.noises} noises, first timestep t = {int(backend.timesteps()[0])}, guidance {backend.guidance_scale:g}")
    print(f"| image | {' | '.join(BINDINGS)} | sum of weights |")
    print("|---|" + "---|" * (len(BINDINGS) + 1))
    for name, rows in weights.items():
        w = torch.stack(rows)
        shares = (w / w.sum(1, keepdim=True)).mean(0)
        print(f"| {name} | {' | '.join(f'{float(s):.3f}' for s in shares)} | {float(w.sum(1).mean()):.3f} |")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
