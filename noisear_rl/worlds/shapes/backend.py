"""`ShapesBackend`: the embedded Shapes world seen through the toolkit's `DiffusionBackend`."""

from __future__ import annotations

import os
from typing import ClassVar

import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.worlds.info import WorldInfo
from noisear_rl.worlds.shapes.pipeline import ShapesPipeline, load_shapes_pipeline
from noisear_rl.pipelines.vp import to_epsilon


class ShapesBackend(DiffusionBackend):
    """The Shapes world's pipeline as a backend.

    `Condition.embeds` (what a prior reads) are the prompt's text-encoder hidden states
    [B, 16, D], as SDXL's are its `prompt_embeds`; `extras["negative_embeds"]` holds those of the
    empty prompt (the unconditional branch). Latents are pixel-space [B, 3, 32, 32] and
    unit-variance (the DDIM scheduler's `init_noise_sigma` is 1).

    Args:
        device: Where the pipeline runs.
        dtype: Weights dtype (float32 on CPU).
        num_inference_steps: DDIM steps of `generate` (default: the pipeline's documented default).
        guidance_scale: CFG of `generate` (default: the pipeline's documented default).
        model_path: A saved `ShapesPipeline` folder (default: the weights shipped in the package).
        batch_size: Largest batch sent through the pipeline at once.
        pipe: An already-built pipeline (tests: `build_tiny_shapes_pipeline()`); `model_path`
            is then ignored.
    """

    golden_num_inference_steps: ClassVar[int] = 50
    """Steps of the schedule whose first two timesteps the golden-noise step moves between
    (t = 999 -> 979), whatever `generate` samples with, as the Golden Noise reference collects on
    SDXL's 50-step schedule. At the default guidance 6 it gains +3.3 points of success over six
    noise seeds, against +2.7 for the sampling schedule's first step (20 steps, 999 -> 949); +3.1
    against +2.7 on the five that did not inform the choice (docs/shapes_world.md, "Guidance")."""

    @property
    def world(self) -> WorldInfo:
        from noisear_rl.worlds.shapes import WORLD

        return WORLD

    def __init__(
        self,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        model_path: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        pipe: ShapesPipeline | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pipe = pipe if pipe is not None else load_shapes_pipeline(device, model_path, dtype)
        self.pipe = pipe.to(device) if pipe.dtype == dtype else pipe.to(device, dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_inference_steps = num_inference_steps or pipe.config.default_num_inference_steps
        self.guidance_scale = pipe.config.default_guidance_scale if guidance_scale is None else guidance_scale
        self.batch_size = batch_size
        self.latent_shape = pipe.latent_shape

    @property
    def cond_dim(self) -> int:
        return int(self.pipe.text_encoder.config.hidden_size)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Condition:
        """Hidden states of the prompts and of the empty prompt; unknown words raise a ValueError."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings")
        embeds, negative = self.pipe.encode_prompt(list(prompts), self.device, do_classifier_free_guidance=True)
        return Condition(embeds.float(), {"negative_embeds": negative.float()})

    @torch.no_grad()
    def generate(self, latents: Tensor, cond: Condition, generator: torch.Generator | None = None) -> Tensor:
        self.check_latents(latents, len(cond))
        images = []
        for start in range(0, latents.shape[0], self.batch_size):
            part = cond[start : start + self.batch_size].to(self.device)
            output = self.pipe(
                prompt_embeds=part.embeds,
                negative_prompt_embeds=part.extras["negative_embeds"],
                latents=latents[start : start + self.batch_size],
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                output_type="pt",
            )
            images.append(output.images.float())
        return torch.cat(images)

    @torch.no_grad()
    def predict_noise(self, latents: Tensor, timestep: int, cond: Condition, guidance_scale: float) -> Tensor:
        self.check_latents(latents, len(cond))
        timestep = int(timestep)
        x = latents.to(self.device, torch.float32)
        cond = cond.to(self.device)
        output = self.pipe.model_output(x, timestep, cond.embeds, cond.extras["negative_embeds"], guidance_scale)
        return to_epsilon(output, x, self.alphas_cumprod[timestep], self.pipe.scheduler.config.prediction_type)
