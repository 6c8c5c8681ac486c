"""`erasure-injection`: the training-free semantic erasure and injection of "Beyond Randomness"
(Yan et al., 2025; papers/003).

Erasure (noise latent normalisation): a random noise carries "semantics" of its own that may
fight the prompt; the sum of n i.i.d. standard noises scaled by 1/sqrt(n) is again N(0, I) but
holds none of them in particular: s = (1/sqrt(n)) sum_i z_i.

Injection (temporal prediction weighting): the model's own guided noise predictions carry the
prompt's semantics; they are aggregated over chosen timesteps t_k of the sampling schedule,
eps_agg = sum_k w_k eps(x_{t_k}, t_k, prompt) / sqrt(sum_k w_k^2), and blended in,
x_T = (s + delta * eps_agg) / sqrt(1 + delta^2).

Where the paper writes eps(z_T, t_k, y), this implementation evaluates the prediction at t_k on
the latent x_{t_k} that deterministic DDIM steps (`noisear_rl.pipelines.vp.ddim_step`) reach from
s, i.e. where the model sees that timestep during generation; with the default single step (the
first timestep) the two coincide. The cost is max(steps) + 1 guided model evaluations per noise.

The blend's denominator keeps unit variance only if eps_agg is independent of s, but near the
first timestep a model's noise prediction is mostly its input (x_T is almost pure noise), so the
blend's variance grows to about (1 + delta)^2 / (1 + delta^2) (2x at delta = 1). With
`renormalize` (the default) each injected noise is therefore rescaled to unit root-mean-square,
as the paper's erasure re-normalises to a standard Gaussian; `renormalize=false` is the formula
as written.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.vp import ddim_step


@register_noise_source("erasure-injection")
class ErasureInjectionSource(NoiseSource):
    """Semantic erasure by averaging noises, then injection of the model's guided prediction.

    Args:
        backend: The diffusion model whose predictions are injected.
        num_noises: n, noises averaged by the erasure (1: no erasure). The first is the base noise.
        delta: Weight of the injected prediction (0: no injection, no model call).
        steps: Indices into the backend's sampling schedule (`backend.timesteps()`) whose
            predictions are aggregated (0 = the first, noisiest timestep).
        weights: One weight per step (default: equal weights).
        guidance_scale: CFG of the predictions (default: the backend's own).
        renormalize: Rescale each injected noise to unit root-mean-square (see the module docstring).
    """

    def __init__(
        self,
        backend: DiffusionBackend,
        num_noises: int = 4,
        delta: float = 1.0,
        steps: int | tuple[int, ...] = (0,),
        weights: float | tuple[float, ...] | None = None,
        guidance_scale: float | None = None,
        renormalize: bool = True,
    ) -> None:
        super().__init__(backend)
        steps = (steps,) if isinstance(steps, int) else tuple(int(s) for s in steps)
        weights = (1.0,) * len(steps) if weights is None else (weights,) if isinstance(weights, (int, float)) else weights
        if num_noises < 1:
            raise ValueError(f"num_noises must be >= 1, got {num_noises}")
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        if not steps or len(set(steps)) != len(steps) or min(steps) < 0:
            raise ValueError(f"steps must be distinct indices >= 0 into the sampling schedule, got {steps}")
        if len(weights) != len(steps) or not any(w != 0 for w in weights):
            raise ValueError(f"weights {weights} must give one weight per step {steps}, not all zero")
        self.timesteps = backend.timesteps()
        self.alphas_cumprod = backend.alphas_cumprod
        if max(steps) >= len(self.timesteps):
            raise ValueError(f"step index {max(steps)} is outside the backend's {len(self.timesteps)}-step schedule")
        self.num_noises = int(num_noises)
        self.delta = float(delta)
        self.step_weights = dict(zip(steps, (float(w) for w in weights)))
        self.guidance_scale = backend.guidance_scale if guidance_scale is None else float(guidance_scale)
        self.renormalize = renormalize

    def erase(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(1/sqrt(n)) x the sum of the base noise and n - 1 further draws: again N(0, I)."""
        total = self.base_noise(batch_size, generator)
        for _ in range(self.num_noises - 1):
            total = total + self.base_noise(batch_size, generator)
        return total / math.sqrt(self.num_noises)

    @torch.no_grad()
    def aggregated_prediction(self, latents: Tensor, cond: Condition) -> Tensor:
        """eps_agg: the weighted, norm-preserving sum of guided predictions along the DDIM path."""
        timesteps, alphas = self.timesteps, self.alphas_cumprod
        cond = cond.to(self.backend.device)
        x = latents.float()
        total = torch.zeros_like(x)
        last = max(self.step_weights)
        for index in range(last + 1):
            t = int(timesteps[index])
            eps = self.backend.predict_noise(x, t, cond, self.guidance_scale).float().to(x.device)
            total = total + self.step_weights.get(index, 0.0) * eps
            if index < last:
                x = ddim_step(x, eps, alphas[t].float(), alphas[int(timesteps[index + 1])].float())
        return total / math.sqrt(sum(w * w for w in self.step_weights.values()))

    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        erased = self.erase(len(prompts), generator)
        if self.delta == 0:
            return erased
        injected = self.aggregated_prediction(erased, cond)
        blended = (erased + self.delta * injected) / math.sqrt(1 + self.delta**2)
        if not self.renormalize:
            return blended
        return blended / blended.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
