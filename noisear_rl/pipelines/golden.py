"""Golden noise: the training target of the NoiseAR prior.

Following Golden Noise (Zhou et al., 2024) and the NoiseAR release, a random x_T becomes a
"golden" noise by one DDIM denoising step at high classifier-free guidance (which injects the
prompt's semantics) followed by one DDIM inversion step at guidance 1. The difference between the
two guidance scales is what moves the noise. Two procedures differ in the timesteps they use:

- "reference": what the Golden Noise repository's collection does (`training/dataset_collection.py`
  and `StableDiffusionXLPipeline.forward_ours` of xie-lab-ml/Golden-Noise-for-Diffusion-Models),
  on a `DDIMScheduler` built from the pipeline's scheduler config: with SDXL's 50-step "leading"
  schedule it denoises x_T at t=981 to t=961 (CFG 5.5), predicts the inversion noise on x_961 at
  t=981 again (CFG 1.0), and inverts with `DDIMInverseScheduler.step(noise, 961, x_961)`, which in
  diffusers moves the latent from alpha(941) to alpha(961). The model's output is read at the
  inversion's alphas (for an epsilon model: the same epsilon). The default of the SDXL family and
  Hunyuan-DiT backends (their `golden_procedure`).
- "clean": the first two timesteps t1 > t0 of the backend's own schedule: denoise t1 -> t0,
  predict the inversion noise at t0, invert t0 -> t1, so that with equal guidance and an exact
  model the inversion returns x_T itself. The default of every other backend (the Shapes world).

The schedule has the backend's `golden_num_inference_steps` steps where it sets one (the Shapes
world: 50, as the reference collects, whatever the sampling steps), else its sampling steps.

Both use the settings of SDXL's scheduler config, from which the reference builds its DDIM
schedulers: no clipping of x_0 (`clip_sample: false`) and alpha(0), not 1, for a step past
timestep 0 (`set_alpha_to_one: false`; only schedules of 2 steps reach it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.vp import ddim_step, from_epsilon, to_epsilon

GoldenProcedure = Literal["reference", "clean"]
GOLDEN_PROCEDURES: tuple[str, ...] = get_args(GoldenProcedure)


@dataclass(frozen=True)
class GoldenSchedule:
    """The timesteps of one golden-noise step (indices into `alphas_cumprod`).

    Attributes:
        denoise_from: The timestep of x_T: the guided prediction and the DDIM step start there.
        denoise_to: Where the DDIM denoising step lands (x_prev).
        predict_at: The timestep at which the inversion noise is predicted on x_prev.
        invert_from: The alphas the inversion step reads x_prev at (negative: the DDIM schedulers'
            boundary, alpha(0)).
        invert_to: The alphas the inversion step moves x_prev to (the golden noise's).
    """

    denoise_from: int
    denoise_to: int
    predict_at: int
    invert_from: int
    invert_to: int


def clean_schedule(timesteps: Tensor) -> GoldenSchedule:
    """t1 -> t0 and back, predicting at t0, from the first two of descending `timesteps`."""
    if len(timesteps) < 2:
        raise ValueError(f"golden noise needs at least 2 inference steps, the schedule has {len(timesteps)}")
    t1, t0 = int(timesteps[0]), int(timesteps[1])
    return GoldenSchedule(denoise_from=t1, denoise_to=t0, predict_at=t0, invert_from=t0, invert_to=t1)


def reference_schedule(scheduler_config: Any, num_inference_steps: int) -> GoldenSchedule:
    """The Golden Noise reference's timesteps on a DDIM schedule built from `scheduler_config`.

    `DDIMScheduler.step(noise, t, x)` moves t -> t - N // n; `DDIMInverseScheduler.step(noise, s, x)`
    moves min(s - N // n, N - 1) -> s, with N training and n inference steps; the reference calls
    them with t, s the first two DDIM timesteps and predicts both noises at t. SDXL at n=50:
    981 -> 961, predict at 981, invert 941 -> 961.
    """
    from diffusers import DDIMScheduler

    if num_inference_steps < 2:
        raise ValueError(f"golden noise needs at least 2 inference steps, got {num_inference_steps}")
    ddim = DDIMScheduler.from_config(scheduler_config)
    ddim.set_timesteps(num_inference_steps)
    steps = ddim.config.num_train_timesteps
    ratio = steps // num_inference_steps
    t, s = int(ddim.timesteps[0]), int(ddim.timesteps[1])
    return GoldenSchedule(
        denoise_from=t, denoise_to=t - ratio, predict_at=t, invert_from=min(s - ratio, steps - 1), invert_to=s
    )


def default_golden_procedure(backend: DiffusionBackend) -> GoldenProcedure:
    """The backend's `golden_procedure` class attribute, else "clean"."""
    return getattr(backend, "golden_procedure", "clean")


def default_golden_steps(backend: DiffusionBackend) -> int:
    """The backend's `golden_num_inference_steps` class attribute, else its sampling steps."""
    return getattr(backend, "golden_num_inference_steps", None) or backend.num_inference_steps


def golden_schedule(
    backend: DiffusionBackend, num_inference_steps: int | None = None, procedure: GoldenProcedure | None = None
) -> GoldenSchedule:
    """The timesteps `golden_noise` uses on `backend` (see the module docstring)."""
    procedure = default_golden_procedure(backend) if procedure is None else procedure
    num_inference_steps = num_inference_steps or default_golden_steps(backend)
    if procedure == "clean":
        return clean_schedule(backend.timesteps(num_inference_steps))
    if procedure != "reference":
        raise ValueError(f"procedure must be one of {', '.join(GOLDEN_PROCEDURES)}, got {procedure!r}")
    pipe = getattr(backend, "pipe", None)
    if pipe is None:
        raise ValueError(
            f"the reference golden-noise procedure builds a DDIM schedule from a diffusers scheduler config, and "
            f"{type(backend).__name__} has no `pipe.scheduler`: use procedure='clean'"
        )
    return reference_schedule(pipe.scheduler.config, num_inference_steps)


@torch.no_grad()
def golden_noise(
    backend: DiffusionBackend,
    latents: Tensor,
    cond: Condition,
    guidance_scale: float,
    inversion_guidance_scale: float = 1.0,
    num_inference_steps: int | None = None,
    procedure: GoldenProcedure | None = None,
) -> Tensor:
    """Maps unit-variance noises x_T to golden noises, one per row.

    With the schedule s of `golden_schedule`:
    eps_hi = eps(x_T, s.denoise_from, guidance_scale); x_prev = DDIM(x_T, s.denoise_from -> s.denoise_to);
    eps_lo = eps(x_prev, s.predict_at, inversion_guidance_scale), read at s.invert_from's alphas;
    golden = DDIM(x_prev, s.invert_from -> s.invert_to, eps_lo).

    Args:
        backend: The diffusion model (its `predict_noise`, `alphas_cumprod`, `timesteps`, and for
            the reference procedure its pipeline's scheduler config).
        latents: [B, C, H, W] unit-variance initial noise x_T.
        cond: B encoded prompts (one per row of `latents`).
        guidance_scale: CFG of the denoising step (the references use 5.5).
        inversion_guidance_scale: CFG of the inversion step (the references use 1.0).
        num_inference_steps: Step count of the schedule (default: `default_golden_steps`; the
            reference collects at 50).
        procedure: "reference" or "clean" (default: the backend's `golden_procedure`, else "clean").

    Returns:
        [B, C, H, W] float32 golden noises on `latents`' device.
    """
    backend.check_latents(latents, len(cond))
    schedule = golden_schedule(backend, num_inference_steps, procedure)
    table = backend.alphas_cumprod.float()
    alphas = lambda t: table[max(t, 0)]  # noqa: E731  (past timestep 0: alpha(0), see the module docstring)

    x_T = latents.float()
    eps_hi = backend.predict_noise(x_T, schedule.denoise_from, cond, guidance_scale).float().to(x_T.device)
    x_prev = ddim_step(x_T, eps_hi, alphas(schedule.denoise_from), alphas(schedule.denoise_to))
    eps_lo = backend.predict_noise(x_prev, schedule.predict_at, cond, inversion_guidance_scale).float().to(x_T.device)
    if schedule.predict_at != schedule.invert_from:
        # The reference hands the model's raw output to the inverse scheduler, which reads it at the
        # inversion's own alphas: the identity for an epsilon model, not for v-prediction.
        prediction_type = backend.pipe.scheduler.config.prediction_type  # type: ignore[attr-defined]
        raw = from_epsilon(eps_lo, x_prev, alphas(schedule.predict_at), prediction_type)
        eps_lo = to_epsilon(raw, x_prev, alphas(schedule.invert_from), prediction_type)
    golden = ddim_step(x_prev, eps_lo, alphas(schedule.invert_from), alphas(schedule.invert_to))
    if not torch.isfinite(golden).all():
        raise FloatingPointError("golden noise is not finite; check the backend's dtype (float16 overflow?)")
    return golden
