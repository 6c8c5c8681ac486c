"""Golden noise: the training target of the NoiseAR prior.

Following Golden Noise (Zhou et al., 2024) and the NoiseAR release, a random x_T becomes a
"golden" noise by one DDIM denoising step at high classifier-free guidance (which injects the
prompt's semantics) followed by one DDIM inversion step at guidance 1 back to the starting
timestep. The difference between the two guidance scales is what moves the noise; with equal
scales and an exact model the inversion would return x_T itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.vp import ddim_step


@torch.no_grad()
def golden_noise(
    backend: DiffusionBackend,
    latents: Tensor,
    cond: Condition,
    guidance_scale: float,
    inversion_guidance_scale: float = 1.0,
    num_inference_steps: int | None = None,
) -> Tensor:
    """Maps unit-variance noises x_T to golden noises, one per row.

    Uses the first two timesteps t1 > t0 of `backend.timesteps(num_inference_steps)`:
    eps_hi = eps(x_T, t1, guidance_scale); x_prev = DDIM(x_T, t1 -> t0, eps_hi);
    eps_lo = eps(x_prev, t0, inversion_guidance_scale); golden = DDIM(x_prev, t0 -> t1, eps_lo).

    Args:
        backend: The diffusion model (its `predict_noise`, `alphas_cumprod`, `timesteps`).
        latents: [B, C, H, W] unit-variance initial noise x_T.
        cond: B encoded prompts (one per row of `latents`).
        guidance_scale: CFG of the denoising step (the release used 5.5).
        inversion_guidance_scale: CFG of the inversion step (the release used 1.0).
        num_inference_steps: Step count whose schedule gives t1, t0 (default: the backend's).

    Returns:
        [B, C, H, W] float32 golden noises on `latents`' device.
    """
    backend.check_latents(latents, len(cond))
    timesteps = backend.timesteps(num_inference_steps)
    if len(timesteps) < 2:
        raise ValueError(f"golden noise needs at least 2 inference steps, the schedule has {len(timesteps)}")
    t1, t0 = int(timesteps[0]), int(timesteps[1])
    alphas = backend.alphas_cumprod
    a1, a0 = alphas[t1].float(), alphas[t0].float()

    x_T = latents.float()
    eps_hi = backend.predict_noise(x_T, t1, cond, guidance_scale).float().to(x_T.device)
    x_prev = ddim_step(x_T, eps_hi, a1, a0)
    eps_lo = backend.predict_noise(x_prev, t0, cond, inversion_guidance_scale).float().to(x_T.device)
    golden = ddim_step(x_prev, eps_lo, a0, a1)
    if not torch.isfinite(golden).all():
        raise FloatingPointError("golden noise is not finite; check the backend's dtype (float16 overflow?)")
    return golden
