"""Variance-preserving (VP) diffusion math shared by the backends and golden-noise collection.

In VP form a noisy latent at timestep t is x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, with a_t the
scheduler's `alphas_cumprod[t]`; unit-variance initial noise is x_T in this form. Backends convert
their model's output to an epsilon prediction with `to_epsilon`; `ddim_step` moves a latent
between two timesteps deterministically (DDIM with eta = 0), forwards (denoising) or backwards
(inversion) alike.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_epsilon(model_output: Tensor, latents: Tensor, alpha_cumprod: Tensor | float, prediction_type: str) -> Tensor:
    """Converts a diffusion model's output at one timestep into an epsilon prediction.

    Args:
        model_output: The network's output for VP-form `latents`.
        latents: x_t in VP form.
        alpha_cumprod: a_t of the timestep.
        prediction_type: The scheduler's `prediction_type`: "epsilon", "v_prediction" or "sample".
    """
    a = torch.as_tensor(alpha_cumprod, dtype=torch.float32, device=latents.device)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return a.sqrt() * model_output + (1 - a).sqrt() * latents
    if prediction_type == "sample":
        return (latents - a.sqrt() * model_output) / (1 - a).sqrt()
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected epsilon, v_prediction or sample")


def from_epsilon(epsilon: Tensor, latents: Tensor, alpha_cumprod: Tensor | float, prediction_type: str) -> Tensor:
    """The model output of `prediction_type` that `to_epsilon` maps to `epsilon` (its inverse at the
    same latents and a_t): "epsilon" as is, "v_prediction" (eps - sqrt(1 - a) x) / sqrt(a),
    "sample" (x - sqrt(1 - a) eps) / sqrt(a)."""
    a = torch.as_tensor(alpha_cumprod, dtype=torch.float32, device=latents.device)
    if prediction_type == "epsilon":
        return epsilon
    if prediction_type == "v_prediction":
        return (epsilon - (1 - a).sqrt() * latents) / a.sqrt()
    if prediction_type == "sample":
        return (latents - (1 - a).sqrt() * epsilon) / a.sqrt()
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected epsilon, v_prediction or sample")


def ddim_step(latents: Tensor, epsilon: Tensor, alpha_from: Tensor | float, alpha_to: Tensor | float) -> Tensor:
    """One deterministic DDIM move of x from the timestep with a_from to the one with a_to.

    x_0 = (x - sqrt(1 - a_from) eps) / sqrt(a_from);  x' = sqrt(a_to) x_0 + sqrt(1 - a_to) eps.
    With a_to > a_from this denoises; with a_to < a_from it is DDIM inversion.
    """
    a_from = torch.as_tensor(alpha_from, dtype=torch.float32, device=latents.device)
    a_to = torch.as_tensor(alpha_to, dtype=torch.float32, device=latents.device)
    x0 = (latents - (1 - a_from).sqrt() * epsilon) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * epsilon
