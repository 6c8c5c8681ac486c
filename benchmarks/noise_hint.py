"""Does the Shapes model read its initial noise? Success when the noise carries a hint of the image.

At the first timestep the training distribution is x_T = sqrt(a_T) x_0 + sqrt(1 - a_T) eps: the
noise carries a faint copy of the image (sqrt(a_T) = 0.068 with SD's schedule), and a model that
learned to read it lets the noise's low frequencies decide the layout, which is what golden
noise and NoiseAR priors act on. This script draws, for evaluation prompts, noises that carry
`scale` times that copy of a rendering of the prompt's scene (rescaled to unit variance), and
prints the verifier's success at each scale on the same base noises. Scale 0 is Gaussian noise;
scale 1 is the training distribution's own share. A model that ignores the noise's content stays
flat; the size of the rise says how far a prompt-conditional noise could move success.

    python benchmarks/noise_hint.py [--prompts 94] [--scales 0 0.25 0.5 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.reward_models import load_reward
from noisear_rl.worlds.shapes import ShapesBackend, evaluation_prompts
from noisear_rl.worlds.shapes.world import render_batch


def hinted_noise(eps: torch.Tensor, images: torch.Tensor, alpha_bar: float, scale: float) -> torch.Tensor:
    """eps plus `scale` times the image's share at the first timestep, rescaled to unit variance per noise."""
    noise = scale * alpha_bar**0.5 * (images * 2 - 1) + (1 - alpha_bar) ** 0.5 * eps
    return noise / noise.flatten(1).std(dim=1).view(-1, 1, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=94, help="evaluation prompts, evenly spaced over the split")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prompts = evenly_spaced(evaluation_prompts(), args.prompts)
    backend, reward = ShapesBackend(), load_reward("shapes")
    cond = backend.encode(prompts)
    eps = torch.randn((len(prompts), *backend.latent_shape), generator=torch.Generator().manual_seed(args.seed))
    images = render_batch(prompts, seed=args.seed + 1)
    alpha_bar = float(backend.alphas_cumprod[int(backend.timesteps()[0])])
    print(f"{len(prompts)} evaluation prompts, one base noise each; first timestep's sqrt(alpha_bar) = {alpha_bar**0.5:.3f}")
    print("hint scale | success | position | colour | shape")
    start = time.perf_counter()
    for scale in args.scales:
        generated = backend.generate(hinted_noise(eps, images, alpha_bar, scale), cond, generator=torch.Generator().manual_seed(args.seed))
        details = reward.evaluate(generated, prompts).details
        mean = {key: float(details[key].float().mean()) for key in ("success", "position", "colour", "shape")}
        print(f"{scale:10.2f} | {mean['success']:7.3f} | {mean['position']:8.3f} | {mean['colour']:6.3f} | {mean['shape']:5.3f}", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")

    # What the golden step adds to a noise is the guided-minus-unguided x0 prediction at the first
    # timestep (scaled by ~0.016 x (guidance - 1)); how much of it is the prompt's scene?
    t = int(backend.timesteps()[0])
    eps_guided = backend.predict_noise(eps, t, cond, backend.guidance_scale)
    eps_plain = backend.predict_noise(eps, t, cond, 1.0)
    x0_gap = -((1 - alpha_bar) / alpha_bar) ** 0.5 * (eps_guided - eps_plain)  # x0 = (x - sqrt(1-a) eps) / sqrt(a)
    scenes = torch.stack([render_batch(prompts, seed=args.seed + 1 + k) for k in range(8)]).mean(0) * 2 - 1
    deviation = scenes - scenes.mean(0)
    cosine = torch.nn.functional.cosine_similarity(x0_gap.flatten(1), deviation.flatten(1)).mean()
    print(f"cosine of the guided-minus-unguided x0 prediction at t = {t} with the scene's deviation from the "
          f"mean scene (8 renders averaged): {float(cosine):.2f}")


if __name__ == "__main__":
    main()
