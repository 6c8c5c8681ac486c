"""What every backend over a diffusers text-to-image pipeline shares.

Subclasses (SDXL/DreamShaper, Hunyuan-DiT) say how to encode a batch of prompts, which pipeline
arguments carry a `Condition`, how to swap in the negative branch, and how to call their denoiser
once; this class does loading, scheduler set-up, batching, classifier-free guidance and the
conversion of the denoiser's output to epsilon.

Latents are unit-variance everywhere in the toolkit. Verified in diffusers 0.42 source:
`StableDiffusionXLPipeline.prepare_latents` and `HunyuanDiTPipeline.prepare_latents` both multiply
given `latents` by `scheduler.init_noise_sigma`, so `generate` passes them unscaled; the
DPMSolver schedulers used here have `init_noise_sigma == 1` and an identity `scale_model_input`,
so unit-variance latents are also the VP-form x_T that `predict_noise` reads.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from noisear_rl.hub import load_pretrained
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.vp import to_epsilon


class DiffusersBackend(DiffusionBackend):
    """A `DiffusionBackend` over a diffusers pipeline whose `__call__` accepts embeddings and latents.

    Args:
        model: Hub id or local folder of the pipeline (default: `default_model`).
        device: Where the pipeline runs.
        dtype: Weights and activations dtype (float16/bfloat16 on GPUs, float32 on CPU).
        num_inference_steps: Denoising steps of `generate` (default: the paper's for this model).
        guidance_scale: Classifier-free guidance of `generate` (default: the paper's).
        batch_size: Largest batch sent through the pipeline at once (encode and generate).
        negative_prompt: Negative prompt for the unconditional branch (None: the pipeline's default).
        height: Image height in pixels (default: the pipeline's native resolution).
        width: Image width in pixels (default: the pipeline's native resolution).
        pipe: An already-built pipeline (tests, custom components); `model` is then ignored.
    """

    pipeline_class_name: ClassVar[str]
    default_model: ClassVar[str]
    default_num_inference_steps: ClassVar[int]
    default_guidance_scale: ClassVar[float]

    def __init__(
        self,
        model: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        batch_size: int = 4,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        pipe: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model or self.default_model
        if pipe is None:
            import diffusers

            pipeline_class = getattr(diffusers, self.pipeline_class_name)
            pipe = load_pretrained(
                lambda source: _from_pretrained(pipeline_class, source, dtype),
                self.model,
                what=f"{self.pipeline_class_name} weights",
                files=("model_index.json", "its component folders"),
                argument="model",
            )
        pipe.scheduler = self.make_scheduler(pipe.scheduler.config)
        pipe = pipe.to(device) if pipe.dtype == dtype else pipe.to(device, dtype)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_inference_steps = num_inference_steps or self.default_num_inference_steps
        self.guidance_scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        self.batch_size = batch_size
        self.negative_prompt = negative_prompt
        native = pipe.default_sample_size * pipe.vae_scale_factor
        self.height = height or native
        self.width = width or native
        if self.height % pipe.vae_scale_factor or self.width % pipe.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {pipe.vae_scale_factor}")
        self.latent_shape = (
            self.denoiser.config.in_channels,
            self.height // pipe.vae_scale_factor,
            self.width // pipe.vae_scale_factor,
        )

    # -- what subclasses provide -------------------------------------------------------------

    @staticmethod
    def make_scheduler(config: Any) -> Any:
        """The scheduler `generate` uses, built from the pipeline's scheduler config."""
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler.from_config(config)

    @property
    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The pipeline's UNet or transformer."""

    @abstractmethod
    def _encode_batch(self, prompts: list[str]) -> Condition:
        """Encodes at most `batch_size` prompts, positive and negative branch."""

    @abstractmethod
    def _negative(self, cond: Condition) -> Condition:
        """The same condition with the negative (unconditional) branch in the positive slots."""

    def _pipeline_kwargs(self, cond: Condition) -> dict[str, Any]:
        """The pipeline `__call__` arguments that carry `cond`: its embeddings as `prompt_embeds`,
        its extras (named as the pipeline's arguments) as they are."""
        return {"prompt_embeds": cond.embeds, **cond.extras}

    @abstractmethod
    def _denoiser_output(self, latents: Tensor, timestep: int, cond: Condition) -> Tensor:
        """The denoiser's raw prediction (positive branch of `cond` only) for VP-form latents."""

    # -- the DiffusionBackend interface --------------------------------------------------------

    @property
    def cond_dim(self) -> int:
        return int(self.denoiser.config.cross_attention_dim)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Condition:
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a non-empty list of strings")
        parts = [
            self._encode_batch(list(prompts[i : i + self.batch_size])) for i in range(0, len(prompts), self.batch_size)
        ]
        return Condition.cat(parts)

    @torch.no_grad()
    def generate(self, latents: Tensor, cond: Condition, generator: torch.Generator | None = None) -> Tensor:
        self.check_latents(latents, len(cond))
        if generator is None:  # stochastic schedulers stay reproducible: same latents, same image
            generator = torch.Generator("cpu").manual_seed(0)
        images = []
        for start in range(0, latents.shape[0], self.batch_size):
            part = slice(start, start + self.batch_size)
            output = self.pipe(
                **self._pipeline_kwargs(cond[part].to(self.device, self.dtype)),
                latents=latents[part].to(self.device, self.dtype),
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                height=self.height,
                width=self.width,
                generator=generator,
                output_type="pt",
                **self._extra_call_kwargs(),
            )
            images.append(output.images.float().clamp(0, 1))
        return torch.cat(images)

    @torch.no_grad()
    def predict_noise(self, latents: Tensor, timestep: int, cond: Condition, guidance_scale: float) -> Tensor:
        self.check_latents(latents, len(cond))
        timestep = int(timestep)
        x = latents.to(self.device, self.dtype)
        cond = cond.to(self.device, self.dtype)
        if guidance_scale == 1.0:
            output = self._denoiser_output(x, timestep, cond)
        else:
            both = self._denoiser_output(torch.cat([x, x]), timestep, Condition.cat([self._negative(cond), cond]))
            uncond, text = both.float().chunk(2)
            output = uncond + guidance_scale * (text - uncond)
        alpha = self.alphas_cumprod[timestep]
        return to_epsilon(output.float(), x.float(), alpha, self.pipe.scheduler.config.prediction_type)

    def _extra_call_kwargs(self) -> dict[str, Any]:
        """Further pipeline `__call__` arguments (none by default)."""
        return {}

    def _negative_prompts(self, count: int) -> list[str] | None:
        return None if self.negative_prompt is None else [self.negative_prompt] * count


def _from_pretrained(pipeline_class: Any, source: str, dtype: torch.dtype) -> Any:
    """`from_pretrained` in `dtype`; `torch_dtype` works on every supported diffusers (newer ones
    call it deprecated in favour of `dtype`, which older ones ignore)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return pipeline_class.from_pretrained(source, torch_dtype=dtype)
