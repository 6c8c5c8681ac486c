"""`gaussian`: standard Gaussian noise N(0, I), the baseline every diffusion pipeline uses."""

from __future__ import annotations

import torch
from torch import Tensor

from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.pipelines.base import Condition


@register_noise_source("gaussian")
class GaussianSource(NoiseSource):
    """N(0, I): exactly `torch.randn((B, C, H, W), generator=generator)`, ignoring the prompts."""

    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        return self.base_noise(len(prompts), generator)
