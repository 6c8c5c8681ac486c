"""`ShapesPipeline`: the embedded world's text-to-image diffusion pipeline, used like SDXL.

Pixel space (the initial noise is [3, 32, 32]); a `UNet2DConditionModel` cross-attends to the
text encoder's hidden states at 8x8 and also gets the start token's hidden state as a pooled
("class") embedding added to its time embedding; a DDIM scheduler with SD's `scaled_linear`
betas (non-zero terminal SNR, so the initial noise's low frequencies shape the image),
v-prediction and classifier-free guidance against the empty prompt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from PIL import Image
from torch import Tensor

from noisear_rl.io import require_saved
from noisear_rl.worlds.shapes.text_encoder import ShapesTextEncoder
from noisear_rl.worlds.shapes.world import IMAGE_SIZE

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"


BetaSchedule = Literal["scaled_linear", "squaredcos_cap_v2"]
"""Noise schedules the world can be built with (diffusers' names): SD/SDXL's scaled-linear betas
(terminal signal sqrt(alpha_bar) = 0.068 with their last beta 0.012; the shipped weights use
0.008, terminal signal 0.147), or the cosine schedule (zero terminal signal)."""


def unet_prediction(unet: UNet2DConditionModel, latents: Tensor, timestep: int | Tensor, embeds: Tensor) -> Tensor:
    """The UNet's output for text-encoder hidden states `embeds` [B, L, D]: it cross-attends to all
    of them and, if it has a class embedding, takes the start token's as its pooled embedding, in
    training and sampling alike."""
    pooled = embeds[:, 0] if unet.config.class_embed_type is not None else None
    return unet(latents, timestep, encoder_hidden_states=embeds, class_labels=pooled).sample


class ShapesPipeline(DiffusionPipeline):
    """Text-to-image for the Shapes world; `__call__` mirrors diffusers' SDXL pipeline.

    Args:
        text_encoder: The world's `ShapesTextEncoder` (its config holds the vocabulary).
        unet: A pixel-space `UNet2DConditionModel` with a "projection" class embedding.
        scheduler: A `DDIMScheduler` (any diffusers scheduler with `step` works).
        default_num_inference_steps: Steps used when a call does not give them.
        default_guidance_scale: Classifier-free guidance used when a call does not give it.
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(
        self,
        text_encoder: ShapesTextEncoder,
        unet: UNet2DConditionModel,
        scheduler: DDIMScheduler,
        default_num_inference_steps: int = 20,
        default_guidance_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_modules(text_encoder=text_encoder, unet=unet, scheduler=scheduler)
        self.register_to_config(
            default_num_inference_steps=default_num_inference_steps, default_guidance_scale=default_guidance_scale
        )

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one initial latent (pixel space)."""
        return (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | str | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Text-encoder hidden states [B, L, D] for the prompts and for the negative branch.

        The negative branch defaults to the empty prompt (how the model was trained for CFG).
        Raises a ValueError listing the vocabulary for unknown words.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = torch.device(device) if device is not None else self.unet.device
        embeds = self.text_encoder.encode(prompts).to(device).repeat_interleave(num_images_per_prompt, dim=0)
        if not do_classifier_free_guidance:
            return embeds, None
        negative = negative_prompt if negative_prompt is not None else ""
        if isinstance(negative, str):  # one negative for all: encoded once
            negative_embeds = self.text_encoder.encode([negative]).to(device).repeat(len(embeds), 1, 1)
        else:
            negative_embeds = self.text_encoder.encode(list(negative)).to(device).repeat_interleave(num_images_per_prompt, dim=0)
        return embeds, negative_embeds

    def model_output(
        self, latents: Tensor, timestep: int | Tensor, prompt_embeds: Tensor, negative_prompt_embeds: Tensor | None, guidance_scale: float
    ) -> Tensor:
        """The UNet's (v-)prediction, classifier-free guided when `guidance_scale != 1`."""
        dtype = self.unet.dtype
        if negative_prompt_embeds is None or guidance_scale == 1.0:
            return unet_prediction(self.unet, latents.to(dtype), timestep, prompt_embeds.to(dtype)).float()
        embeds = torch.cat([negative_prompt_embeds, prompt_embeds]).to(dtype)
        out = unet_prediction(self.unet, torch.cat([latents, latents]).to(dtype), timestep, embeds).float()
        uncond, cond = out.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_embeds: Tensor | None = None,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_embeds: Tensor | None = None,
        latents: Tensor | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generates images; give `prompt` or `prompt_embeds`, and optionally unit-variance `latents`.

        Args:
            prompt: One prompt or a list.
            prompt_embeds: Precomputed `encode_prompt` hidden states [B, L, D] instead of `prompt`.
            negative_prompt: Prompt(s) for the negative branch (default: the empty prompt).
            negative_prompt_embeds: Precomputed negative hidden states [B, L, D].
            latents: Initial noise [B, 3, 32, 32]; the scheduler's `init_noise_sigma` is applied here.
            num_inference_steps: DDIM steps (default: the pipeline's `default_num_inference_steps`).
            guidance_scale: CFG scale; 1 disables guidance (default: `default_guidance_scale`).
            num_images_per_prompt: Images per prompt.
            generator: Seeds the initial noise when `latents` is not given.
            output_type: "pt" ([B, 3, H, W] in [0, 1]), "np" ([B, H, W, 3]), "pil" or "latent".
            return_dict: False returns a one-element tuple.
        """
        steps = num_inference_steps or self.config.default_num_inference_steps
        scale = self.config.default_guidance_scale if guidance_scale is None else guidance_scale
        device = self.unet.device
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("give exactly one of `prompt` and `prompt_embeds`")
        use_cfg = scale != 1.0
        if prompt_embeds is None:
            prompt_embeds, encoded_negative = self.encode_prompt(
                prompt, device, num_images_per_prompt, use_cfg, negative_prompt
            )
            negative_prompt_embeds = negative_prompt_embeds if negative_prompt_embeds is not None else encoded_negative
        else:
            prompt_embeds = prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0)
            if negative_prompt_embeds is not None:
                negative_prompt_embeds = negative_prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0)
            elif use_cfg:
                negative_prompt_embeds = self.encode_prompt([""] * len(prompt_embeds), device, 1, False)[0]
        batch = prompt_embeds.shape[0]
        if negative_prompt_embeds is not None and negative_prompt_embeds.shape != prompt_embeds.shape:
            raise ValueError(
                f"negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} must match prompt_embeds {tuple(prompt_embeds.shape)}"
            )
        latents = self.prepare_latents(batch, generator, latents)

        self.scheduler.set_timesteps(steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(latents, t)
            output = self.model_output(model_input, t, prompt_embeds, negative_prompt_embeds, scale)
            latents = self.scheduler.step(output, t, latents).prev_sample

        images = latents if output_type == "latent" else (latents / 2 + 0.5).clamp(0, 1)
        if output_type == "np":
            images = images.permute(0, 2, 3, 1).cpu().numpy()
        elif output_type == "pil":
            arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
            images = [Image.fromarray(a) for a in arrays]
        elif output_type not in ("pt", "latent"):
            raise ValueError(f"output_type must be 'pt', 'np', 'pil' or 'latent', got {output_type!r}")
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def prepare_latents(
        self, batch: int, generator: torch.Generator | list[torch.Generator] | None, latents: Tensor | None
    ) -> Tensor:
        """Checks given latents, or draws standard Gaussian ones [B, 3, 32, 32] (float32)."""
        shape = (batch, *self.latent_shape)
        if latents is None:
            if isinstance(generator, list):
                if len(generator) != batch:
                    raise ValueError(f"got {len(generator)} generators for a batch of {batch}")
                return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device) for g in generator]).to(
                    self.unet.device
                )
            return torch.randn(shape, generator=generator, device=generator.device if generator else "cpu").to(
                self.unet.device
            )
        if tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {list(shape)}, got {list(latents.shape)}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or inf")
        return latents.to(self.unet.device, torch.float32)


def build_shapes_pipeline(
    seed: int = 0,
    block_out_channels: tuple[int, ...] = (32, 64, 64),
    layers_per_block: int = 1,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    attention_heads: int = 4,
    norm_num_groups: int = 16,
    cross_attention_levels: int = 1,
    pooled_embedding: bool = True,
    beta_schedule: BetaSchedule = "scaled_linear",
    beta_end: float = 0.008,
) -> ShapesPipeline:
    """A freshly initialised (random-weight) pipeline; the training script starts from it.

    Cross-attention sits at the `cross_attention_levels` lowest resolutions (and the mid block):
    each level higher costs several times more CPU time per step. `pooled_embedding` adds the
    start token's state to the time embedding (SDXL's pooled text embedding). `beta_schedule`: see
    `BetaSchedule`; `beta_end` is the scaled-linear schedule's last beta (the shipped weights'
    0.008; SD/SDXL's 0.012).
    """
    torch.manual_seed(seed)
    text_encoder = ShapesTextEncoder(hidden_size=text_hidden_size, num_layers=text_layers, num_heads=attention_heads)
    levels = len(block_out_channels)
    plain = levels - cross_attention_levels
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * cross_attention_levels,
        up_block_types=("CrossAttnUpBlock2D",) * cross_attention_levels + ("UpBlock2D",) * plain,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=text_hidden_size,
        attention_head_dim=attention_heads,
        norm_num_groups=norm_num_groups,
        class_embed_type="projection" if pooled_embedding else None,
        projection_class_embeddings_input_dim=text_hidden_size if pooled_embedding else None,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
        prediction_type="v_prediction",
        clip_sample=False,  # as SD/SDXL: clipping the predicted x0 breaks classifier-free guidance
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )
    pipe = ShapesPipeline(text_encoder=text_encoder, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_shapes_pipeline(
    seed: int = 0, beta_schedule: BetaSchedule = "scaled_linear", beta_end: float = 0.012
) -> ShapesPipeline:
    """A tiny random-weight `ShapesPipeline` for fast tests (same interface, ~50K parameters)."""
    pipe = build_shapes_pipeline(
        seed=seed,
        block_out_channels=(8, 16),
        text_hidden_size=16,
        text_layers=1,
        attention_heads=2,
        norm_num_groups=4,
        beta_schedule=beta_schedule,
        beta_end=beta_end,
    )
    pipe.register_to_config(default_num_inference_steps=4)
    return pipe


def load_shapes_pipeline(
    device: torch.device | str = "cpu", path: str | os.PathLike[str] | None = None, dtype: torch.dtype = torch.float32
) -> ShapesPipeline:
    """Loads a saved `ShapesPipeline` (default: the weights shipped in the package), offline.

    Raises:
        FileNotFoundError: No pipeline at `path`; the message says how to make one.
    """
    folder = require_saved(
        path if path is not None else DEFAULT_WEIGHTS, "model_index.json", "ShapesPipeline",
        "train one with `python -m noisear_rl.worlds.shapes.train --output-dir DIR` and pass path=DIR",
    )
    pipe = ShapesPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
