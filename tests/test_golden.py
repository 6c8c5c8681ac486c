"""Golden noise: one DDIM step at high guidance, one DDIM inversion step at guidance 1."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from noisear_rl.pipelines import Condition, DiffusionBackend, golden_noise, load_backend


class ExactBackend(DiffusionBackend):
    """A model of a one-point data distribution x_0 = target: its epsilon is exact at every timestep.

    `guidance_bias` adds (guidance - 1) * bias to epsilon, like CFG with a conditional branch that
    differs from the unconditional one by `bias`.
    """

    latent_shape = (2, 4, 4)
    cond_dim = 3
    num_inference_steps = 10
    guidance_scale = 5.5
    device = torch.device("cpu")

    def __init__(self, guidance_bias: float = 0.0) -> None:
        self.target = torch.linspace(-1, 1, 32).reshape(self.latent_shape)
        self.guidance_bias = guidance_bias
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
        self._alphas = torch.cumprod(1 - betas, 0)

    def encode(self, prompts: list[str]) -> Condition:
        return Condition(torch.zeros(len(prompts), 1, self.cond_dim))

    def generate(self, latents: Tensor, cond: Condition, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def predict_noise(self, latents: Tensor, timestep: int, cond: Condition, guidance_scale: float) -> Tensor:
        a = self._alphas[timestep]
        exact = (latents - a.sqrt() * self.target) / (1 - a).sqrt()
        return exact + (guidance_scale - 1) * self.guidance_bias

    @property
    def alphas_cumprod(self) -> Tensor:
        return self._alphas

    def timesteps(self, num_inference_steps: int | None = None) -> Tensor:
        n = num_inference_steps or self.num_inference_steps
        return torch.arange(n - 1, -1, -1) * (1000 // n)


def test_exact_model_inversion_recovers_the_noise() -> None:
    backend = ExactBackend()
    x_T = backend.random_latents(5, torch.Generator().manual_seed(0))
    golden = golden_noise(backend, x_T, backend.encode(["p"] * 5), guidance_scale=5.5)
    assert golden.shape == x_T.shape and golden.dtype == torch.float32
    torch.testing.assert_close(golden, x_T, rtol=0, atol=1e-5)


def test_guidance_moves_the_noise_by_the_ddim_coefficient() -> None:
    """golden - x_T = (sqrt(1-a1) - sqrt(a1/a0) sqrt(1-a0)) (eps_lo - eps_hi) for any model."""
    backend = ExactBackend(guidance_bias=0.3)
    x_T = backend.random_latents(4, torch.Generator().manual_seed(1))
    golden = golden_noise(backend, x_T, backend.encode(["p"] * 4), guidance_scale=5.5, num_inference_steps=20)
    t1, t0 = (int(t) for t in backend.timesteps(20)[:2])
    a1, a0 = backend.alphas_cumprod[t1], backend.alphas_cumprod[t0]
    k = (1 - a1).sqrt() - (a1 / a0).sqrt() * (1 - a0).sqrt()
    # The biased step lands off the data trajectory by -sqrt(a0/a1) sqrt((1-a1)/(1-a0)) bias in
    # epsilon, which the exact inversion step then reads (worked out by hand).
    bias = (5.5 - 1) * 0.3
    drift = -(a0 / a1).sqrt() * ((1 - a1) / (1 - a0)).sqrt() * bias
    torch.testing.assert_close(golden - x_T, (k * drift).expand_as(x_T), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-hunyuan-dit"])
def test_on_a_real_tiny_model_guidance_one_nearly_inverts(name: str) -> None:
    backend = load_backend(name, num_inference_steps=10)
    cond = backend.encode(["a red circle", "two blue squares"])
    x_T = backend.random_latents(2, torch.Generator().manual_seed(0))
    calls: list[Tensor] = []
    predict = backend.predict_noise

    def recording(latents: Tensor, timestep: int, c: Condition, guidance_scale: float) -> Tensor:
        calls.append(predict(latents, timestep, c, guidance_scale))
        return calls[-1]

    backend.predict_noise = recording  # type: ignore[method-assign]
    same = golden_noise(backend, x_T, cond, guidance_scale=1.0)
    eps_hi, eps_lo = calls
    t1, t0 = (int(t) for t in backend.timesteps()[:2])
    a1, a0 = backend.alphas_cumprod[t1], backend.alphas_cumprod[t0]
    k = (1 - a1).sqrt() - (a1 / a0).sqrt() * (1 - a0).sqrt()
    torch.testing.assert_close(same - x_T, k * (eps_lo - eps_hi), rtol=1e-4, atol=1e-5)
    # Up to the DDIM inversion error (the model's epsilon drift over one step), x_T comes back.
    assert (same - x_T).norm() < 0.1 * x_T.norm()
    guided = golden_noise(backend, x_T, cond, guidance_scale=5.5)
    assert guided.shape == x_T.shape and not torch.allclose(guided, same)


def test_bad_input_is_rejected() -> None:
    backend = ExactBackend()
    cond = backend.encode(["p"] * 2)
    x_T = backend.random_latents(2)
    x_T[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        golden_noise(backend, x_T, cond, 5.5)
    with pytest.raises(ValueError, match="shape"):
        golden_noise(backend, torch.zeros(2, 3, 4, 4), cond, 5.5)
    with pytest.raises(ValueError, match="2 conditions"):
        golden_noise(backend, torch.zeros(3, 2, 4, 4), cond, 5.5)
    with pytest.raises(ValueError, match="at least 2"):
        golden_noise(backend, torch.zeros(2, 2, 4, 4), cond, 5.5, num_inference_steps=1)
