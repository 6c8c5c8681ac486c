"""`golden-step`: the golden-noise transform itself as a noise source, with no network.

Golden Noise's data collection (and the NoiseAR prior's training data) turn a Gaussian noise into
a "golden" one by one DDIM denoising step at the backend's guidance and one DDIM inversion step
at guidance 1 (`noisear_rl.pipelines.golden.golden_noise`). The `golden` source approximates
that map with a trained network in one forward pass; this source applies the map directly, at the
cost of two model evaluations (three with classifier-free guidance) per noise. Comparing the two
says how much of the golden step the network learned.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.golden import golden_noise


@register_noise_source("golden-step")
class GoldenStepSource(NoiseSource):
    """The base Gaussian noise after one golden step (denoise at `guidance_scale`, invert at 1).

    Args:
        backend: The diffusion backend whose model takes the step.
        guidance_scale: CFG of the denoising step (None: the backend's default guidance).
    """

    argument = "guidance_scale"

    def __init__(self, backend: DiffusionBackend, guidance_scale: float | str | None = None) -> None:
        super().__init__(backend)
        self.guidance_scale = float(guidance_scale) if guidance_scale is not None else float(backend.guidance_scale)

    @torch.no_grad()
    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        noise = self.base_noise(len(prompts), generator)
        return golden_noise(self.backend, noise, cond, self.guidance_scale)
