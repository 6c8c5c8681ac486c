"""The prior's two sampling knobs, explored in parameter space (what RL trains by default).

A prior with a fitted prompt shift samples with two numbers that decide most of how its noise
does on the Shapes world: the shift's gain (how far every patch mean goes along the shift) and
the sampling temperature (how far the noise strays from the means). Their effects are large
(docs/results.md: gain 1 -> 3 is worth +3.7 points of held-out success, temperature 0.5 -> 0.3
+5.3), but a policy gradient through the patches' own noise cannot see the temperature: a noise
has 3,072 dimensions, so its radius, the only part of its randomness that acts like a
temperature, hardly varies (`benchmarks/sampling_knobs.py`: t = 0.09 from 512 rollouts, against
1.66 through draws). Parameter-exploring policy gradients (Sehnke et al., 2010, "PGPE") draw each
episode's knobs from a Gaussian search distribution around their current values instead and
score the draw, so an episode's reward speaks to the knobs directly; the learned prior is the
search distribution's mean.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from noisear_rl.prior.model import NoiseARPrior


class SamplingKnobs:
    """N(mean, diag(std^2)) over (prompt-shift gain, log temperature).

    The mean's gain is the prior's own `prompt_shift.gain` parameter (saved with the prior); its
    log temperature is `log_temperature`, a parameter kept here (the training loop writes
    `temperature` to the prior's `config.temperature` before saving it). Draws are [N, 2] rows
    (gain, log temperature).

    Args:
        prior: A prior with a prompt shift.
        temperature: The starting temperature (the mean's is log of it).
        gain_std: Std of an episode's gain around the mean gain.
        log_temperature_std: Std of an episode's log temperature around the mean's.
    """

    def __init__(self, prior: NoiseARPrior, temperature: float, gain_std: float, log_temperature_std: float) -> None:
        if prior.prompt_shift is None:
            raise ValueError("sampling knobs need a prior with a prompt shift (its gain is one of them)")
        if not (gain_std > 0 and log_temperature_std > 0 and temperature > 0):
            raise ValueError(f"knob stds and the temperature must be > 0, got {gain_std}, {log_temperature_std}, {temperature}")
        self.prior = prior
        gain = prior.prompt_shift.gain
        self.log_temperature = torch.nn.Parameter(torch.tensor(math.log(temperature), dtype=gain.dtype, device=gain.device))
        self.std = torch.tensor([gain_std, log_temperature_std], dtype=torch.float32, device=gain.device)

    def mean(self) -> Tensor:
        """[2] (gain, log temperature), differentiable in both."""
        return torch.stack([self.prior.prompt_shift.gain, self.log_temperature]).float()

    @property
    def temperature(self) -> float:
        """The mean's temperature: what the learned prior samples with."""
        return float(self.log_temperature.detach().exp())

    def draw(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """[num, 2] knobs for `num` episodes (one standard-normal pair each from `generator`)."""
        eps = torch.randn((num, 2), generator=generator, device=self.std.device, dtype=torch.float32)
        return self.mean().detach() + self.std * eps

    def log_prob(self, draws: Tensor, mean: Tensor | None = None) -> Tensor:
        """[N] log-density of each row of `draws` [N, 2] under the search distribution (or the
        same stds around another `mean` [2], e.g. a reference's)."""
        z = (draws.float() - (self.mean() if mean is None else mean)) / self.std
        return (-0.5 * z.square() - torch.log(self.std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl_to(self, reference_mean: Tensor) -> Tensor:
        """KL(this || the same stds at `reference_mean` [2]), closed form."""
        return (0.5 * ((self.mean() - reference_mean) / self.std).square()).sum()

    def state_dict(self) -> dict[str, Tensor]:
        return {"log_temperature": self.log_temperature.detach().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.log_temperature.copy_(state["log_temperature"])


def episode_knobs(draws: Tensor) -> tuple[Tensor, Tensor]:
    """(gain [N], temperature [N, 1]) of knob draws [N, 2], as `start` and `sample_gaussian` take them."""
    return draws[:, 0], draws[:, 1:].exp()
