"""Pure functions for the diagonal Gaussians the prior predicts."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOGVAR_MIN = -20.0
LOGVAR_MAX = 10.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def tempered_logvar(logvar: Tensor, temperature: float | Tensor) -> Tensor:
    """Log-variance after clamping to [-20, 10] and scaling the std by `temperature` (a number, or
    a tensor of positive values that broadcasts against `logvar`, e.g. [B, 1] for one temperature
    per row: `SamplingKnobs`' exp of a log temperature, checked by construction, not here, where a
    check would synchronise the device at every patch)."""
    if isinstance(temperature, Tensor):
        return logvar.clamp(LOGVAR_MIN, LOGVAR_MAX) + 2.0 * torch.log(temperature.to(logvar.dtype))
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logvar.clamp(LOGVAR_MIN, LOGVAR_MAX) + 2.0 * math.log(temperature)


def gaussian_log_prob(x: Tensor, mean: Tensor, logvar: Tensor, temperature: float = 1.0) -> Tensor:
    """Element-wise log N(x; mean, temperature^2 * exp(clamp(logvar))), computed in float32."""
    logvar = tempered_logvar(logvar.float(), temperature)
    return -0.5 * (x.float() - mean.float()).square() * torch.exp(-logvar) - 0.5 * logvar - _HALF_LOG_2PI


def gaussian_kl(mean: Tensor, logvar: Tensor, ref_mean: Tensor, ref_logvar: Tensor, temperature: float = 1.0) -> Tensor:
    """Element-wise KL(N(mean, var) || N(ref_mean, ref_var)) in closed form, both variances clamped
    and tempered as in sampling, computed in float32. Unlike a sample estimate it pulls back at any
    distance (a drifted mean or a variance far from the reference's)."""
    logvar = tempered_logvar(logvar.float(), temperature)
    ref_logvar = tempered_logvar(ref_logvar.float(), temperature)
    log_ratio = logvar - ref_logvar
    return 0.5 * (torch.expm1(log_ratio) - log_ratio + (mean.float() - ref_mean.float()).square() * torch.exp(-ref_logvar))


def sample_gaussian(
    mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None, temperature: float | Tensor = 1.0
) -> tuple[Tensor, Tensor]:
    """Draws x ~ N(mean, temperature^2 * exp(clamp(logvar))) and returns (x, log-density of x summed
    over the last dim). Standard normals are drawn as one [*mean.shape] float32 tensor from
    `generator`, so the same generator gives the same draw wherever this is called."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    logvar32 = tempered_logvar(logvar.float(), temperature)
    x = mean.float() + torch.exp(0.5 * logvar32) * eps
    log_prob = (-0.5 * eps.square() - 0.5 * logvar32 - _HALF_LOG_2PI).sum(-1)
    return x, log_prob
