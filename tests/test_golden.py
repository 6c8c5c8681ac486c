"""Golden noise: one DDIM step at high guidance, one DDIM inversion step at guidance 1.

The "clean" procedure is checked on an exact model by hand-derived identities; the "reference"
procedure (the SDXL family's and Hunyuan-DiT's default) against a transcription of the Golden Noise
repository's collection loop, driven by diffusers' own DDIM schedulers on the tiny pipelines.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from noisear_rl.pipelines import Condition, DiffusionBackend, golden_noise, load_backend
from noisear_rl.pipelines.golden import GoldenSchedule, golden_schedule


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
def test_clean_procedure_on_a_real_tiny_model_guidance_one_nearly_inverts(name: str) -> None:
    backend = load_backend(name, num_inference_steps=10)
    cond = backend.encode(["a red circle", "two blue squares"])
    x_T = backend.random_latents(2, torch.Generator().manual_seed(0))
    calls: list[Tensor] = []
    predict = backend.predict_noise

    def recording(latents: Tensor, timestep: int, c: Condition, guidance_scale: float) -> Tensor:
        calls.append(predict(latents, timestep, c, guidance_scale))
        return calls[-1]

    backend.predict_noise = recording  # type: ignore[method-assign]
    same = golden_noise(backend, x_T, cond, guidance_scale=1.0, procedure="clean")
    eps_hi, eps_lo = calls
    t1, t0 = (int(t) for t in backend.timesteps()[:2])
    a1, a0 = backend.alphas_cumprod[t1], backend.alphas_cumprod[t0]
    k = (1 - a1).sqrt() - (a1 / a0).sqrt() * (1 - a0).sqrt()
    torch.testing.assert_close(same - x_T, k * (eps_lo - eps_hi), rtol=1e-4, atol=1e-5)
    # Up to the DDIM inversion error (the model's epsilon drift over one step), x_T comes back.
    assert (same - x_T).norm() < 0.1 * x_T.norm()
    guided = golden_noise(backend, x_T, cond, guidance_scale=5.5, procedure="clean")
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
    with pytest.raises(ValueError, match="procedure must be one of reference, clean"):
        golden_noise(backend, torch.zeros(2, 2, 4, 4), cond, 5.5, procedure="inversion")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has no `pipe.scheduler`: use procedure='clean'"):
        golden_noise(backend, torch.zeros(2, 2, 4, 4), cond, 5.5, procedure="reference")


def test_reference_schedule_on_sdxl_is_981_961_then_941_961() -> None:
    """SDXL's scheduler config at 50 steps: the reference's DDIM timesteps, not the DPMSolver ones
    the backend generates with (951, 932, ...)."""
    backend = load_backend("tiny-sdxl", num_inference_steps=50)  # SDXL-base's training schedule
    assert backend.golden_procedure == "reference"
    assert golden_schedule(backend) == GoldenSchedule(
        denoise_from=981, denoise_to=961, predict_at=981, invert_from=941, invert_to=961
    )
    assert golden_schedule(backend, procedure="clean") == GoldenSchedule(
        denoise_from=951, denoise_to=932, predict_at=932, invert_from=932, invert_to=951
    )
    # At 2 steps the inversion starts past timestep 0: the schedulers' boundary, alpha(0).
    assert golden_schedule(backend, num_inference_steps=2) == GoldenSchedule(501, 1, 501, -499, 1)


def test_shapes_world_golden_step_moves_on_a_50_step_schedule_whatever_it_samples_with() -> None:
    """The world's golden schedule is its own 50 steps (999 -> 979), not the sampling schedule's
    first step; an explicit step count still overrides it."""
    from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline

    backend = ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=4)
    assert ShapesBackend.golden_num_inference_steps == 50
    assert golden_schedule(backend) == GoldenSchedule(999, 979, 979, 979, 999)
    assert golden_schedule(backend, num_inference_steps=4) == GoldenSchedule(999, 749, 749, 749, 999)
    x_T = backend.random_latents(3, torch.Generator().manual_seed(0))
    cond = backend.encode(["a red circle on the left"] * 3)
    default = golden_noise(backend, x_T, cond, 6.0)
    torch.testing.assert_close(default, golden_noise(backend, x_T, cond, 6.0, num_inference_steps=50))
    assert not torch.allclose(default, golden_noise(backend, x_T, cond, 6.0, num_inference_steps=4))


def reference_collection(backend, x_T: Tensor, cond: Condition, steps: int, guidance: float, inversion_guidance: float) -> Tensor:
    """The Golden Noise repository's `forward_ours` (T_max=1), transcribed: a `DDIMScheduler` and a
    `DDIMInverseScheduler` from the pipeline's scheduler config with SDXL's clip_sample=false and
    set_alpha_to_one=false (the backend's DPMSolver config no longer holds them);
    the denoiser's raw output, guided as `uncond + g * (text - uncond)`; both steps through
    diffusers' own `step`."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    config = backend.pipe.scheduler.config
    scheduler = DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    inverse = DDIMInverseScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    inverse.set_timesteps(steps)
    timesteps = scheduler.timesteps

    def guided(x: Tensor, t: int, scale: float) -> Tensor:
        text = backend._denoiser_output(x, t, cond)
        uncond = backend._denoiser_output(x, t, backend._negative(cond))
        return uncond + scale * (text - uncond)

    t = int(timesteps[0])
    with torch.no_grad():
        next_latents = scheduler.step(guided(x_T, t, guidance), t, x_T).prev_sample
        noise_pred = guided(next_latents, t, inversion_guidance)  # at t, as the reference does
        return inverse.step(noise_pred, int(timesteps[1]), next_latents).prev_sample


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-hunyuan-dit"])
@pytest.mark.parametrize("steps", [50, 10, 2])
def test_reference_procedure_equals_the_golden_noise_collection(name: str, steps: int) -> None:
    backend = load_backend(name, num_inference_steps=steps)
    cond = backend.encode(["a red circle", "two blue squares"])
    x_T = backend.random_latents(2, torch.Generator().manual_seed(0))
    golden = golden_noise(backend, x_T, cond, guidance_scale=5.5)  # the backend's default: reference
    expected = reference_collection(backend, x_T, cond, steps, 5.5, 1.0)
    torch.testing.assert_close(golden, expected, rtol=0, atol=2e-5)
    # The clean variant is another noise (timesteps from the DPMSolver schedule, prediction at t0).
    clean = golden_noise(backend, x_T, cond, guidance_scale=5.5, procedure="clean")
    assert not torch.allclose(clean, golden, rtol=0, atol=5e-5)


def test_reference_arithmetic_on_an_epsilon_model_at_50_steps() -> None:
    """The reference in closed form, with SDXL's alphas at 981, 961 and 941 and both noises predicted at 981."""
    backend = load_backend("tiny-sdxl", num_inference_steps=50)
    cond = backend.encode(["a photo of a cat"])
    x_T = backend.random_latents(1, torch.Generator().manual_seed(1))
    a = backend.alphas_cumprod
    eps_hi = backend.predict_noise(x_T, 981, cond, 5.5)
    x_961 = a[961].sqrt() * (x_T - (1 - a[981]).sqrt() * eps_hi) / a[981].sqrt() + (1 - a[961]).sqrt() * eps_hi
    eps_lo = backend.predict_noise(x_961, 981, cond, 1.0)
    expected = a[961].sqrt() * (x_961 - (1 - a[941]).sqrt() * eps_lo) / a[941].sqrt() + (1 - a[961]).sqrt() * eps_lo
    torch.testing.assert_close(golden_noise(backend, x_T, cond, 5.5), expected, rtol=0, atol=1e-5)


def test_golden_step_source_is_the_golden_step_of_its_base_noise() -> None:
    """`golden-step` applies `golden_noise` to exactly the Gaussian source's noise, at the backend's
    guidance unless told another; on an exact model without a guidance gap it returns the noise."""
    from noisear_rl.noise_sources import load_noise_source

    backend = ExactBackend(guidance_bias=0.3)
    cond = backend.encode(["p"] * 3)
    base = load_noise_source("gaussian", backend=backend)(["p"] * 3, cond, torch.Generator().manual_seed(4))
    stepped = load_noise_source("golden-step", backend=backend)(["p"] * 3, cond, torch.Generator().manual_seed(4))
    torch.testing.assert_close(stepped, golden_noise(backend, base, cond, backend.guidance_scale), rtol=0, atol=0)
    assert not torch.allclose(stepped, base)
    low = load_noise_source("golden-step?guidance_scale=2", backend=backend)(["p"] * 3, cond, torch.Generator().manual_seed(4))
    torch.testing.assert_close(low, golden_noise(backend, base, cond, 2.0), rtol=0, atol=0)
    exact = ExactBackend()
    same = load_noise_source("golden-step", backend=exact)(["p"] * 3, exact.encode(["p"] * 3), torch.Generator().manual_seed(4))
    assert (same - base).norm() < 0.1 * base.norm()
