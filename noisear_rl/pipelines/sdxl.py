"""SDXL and DreamShaper-xl-v2-turbo backends over `StableDiffusionXLPipeline`.

The prior's condition is SDXL's `prompt_embeds` ([B, 77, 2048]: both CLIP text encoders'
penultimate hidden states, concatenated); the pooled and negative embeddings ride along in
`Condition.extras`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition
from noisear_rl.pipelines.diffusers_backend import DiffusersBackend
from noisear_rl.pipelines.golden import GoldenProcedure


class SDXLBackend(DiffusersBackend):
    """Stable Diffusion XL (`stabilityai/stable-diffusion-xl-base-1.0` by default).

    Defaults follow the NoiseAR release (`try.py` and `eval.py` of HKUST-SAIL/NoiseAR):
    `DPMSolverMultistepScheduler.from_config` of the pipeline's scheduler config (DPMSolver++),
    50 steps, CFG 5.5, 1024x1024. Golden noise is collected with the Golden Noise reference's
    procedure (`noisear_rl.pipelines.golden`). Constructor arguments: see `DiffusersBackend`.
    Prompts longer than CLIP's 77 tokens are truncated by the pipeline (with its warning).
    """

    pipeline_class_name = "StableDiffusionXLPipeline"
    default_model = "stabilityai/stable-diffusion-xl-base-1.0"
    default_num_inference_steps = 50
    default_guidance_scale = 5.5
    golden_procedure: ClassVar[GoldenProcedure] = "reference"
    """How `golden_noise` collects on this backend by default: the Golden Noise reference's DDIM
    steps (981 -> 961, inversion 941 -> 961 at 50 steps), which collected on SDXL."""

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if self.pipe.unet.config.time_cond_proj_dim is not None:
            raise ValueError("UNets with a guidance embedding (time_cond_proj_dim, e.g. LCM) are not supported")
        # SDXL's micro-conditioning: original size, crop top-left, target size (as the pipeline).
        self._time_ids = torch.tensor(
            [[self.height, self.width, 0, 0, self.height, self.width]], device=self.device, dtype=self.dtype
        )

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    def _encode_batch(self, prompts: list[str]) -> Condition:
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=self._negative_prompts(len(prompts)),
        )
        return Condition(
            embeds.to(self.dtype),
            {
                "pooled_prompt_embeds": pooled.to(self.dtype),
                "negative_prompt_embeds": negative.to(self.dtype),
                "negative_pooled_prompt_embeds": negative_pooled.to(self.dtype),
            },
        )

    def _negative(self, cond: Condition) -> Condition:
        extras = dict(cond.extras)
        extras["pooled_prompt_embeds"] = cond.extras["negative_pooled_prompt_embeds"]
        return Condition(cond.extras["negative_prompt_embeds"], extras)

    def _denoiser_output(self, latents: Tensor, timestep: int, cond: Condition) -> Tensor:
        count = latents.shape[0]
        added_cond_kwargs = {
            "text_embeds": cond.extras["pooled_prompt_embeds"],
            "time_ids": self._time_ids.repeat(count, 1),
        }
        timesteps = torch.full((count,), timestep, device=self.device, dtype=torch.long)
        return self.pipe.unet(
            latents,
            timesteps,
            encoder_hidden_states=cond.embeds,
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )[0]


class DreamShaperBackend(SDXLBackend):
    """DreamShaper-xl-v2-turbo (`Lykon/dreamshaper-xl-v2-turbo`), an SDXL-Turbo fine-tune.

    Defaults follow the NoiseAR release's evaluation of DreamShaper (its README's eval commands,
    `eval.py`): the same scheduler as SDXL (`DPMSolverMultistepScheduler.from_config` of the
    pipeline's config), 50 steps, CFG 3.5 (its DrawBench runs and Golden Noise's NPNet demo;
    the release's GenEval and Pick-a-Pic runs use 5.0: pass `guidance_scale=5.0`). The model
    card's turbo settings (4-8 steps, CFG 2, DPM++ SDE Karras) are not what the paper measured.
    """

    default_model = "Lykon/dreamshaper-xl-v2-turbo"
    default_num_inference_steps = 50
    default_guidance_scale = 3.5
