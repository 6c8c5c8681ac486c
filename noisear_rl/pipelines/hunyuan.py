"""Hunyuan-DiT backend over `HunyuanDiTPipeline`.

Hunyuan-DiT reads two text encodings: a bilingual CLIP (a BERT, 1024-d, 77 tokens) and mT5
(2048-d, 256 tokens). The prior's condition is the 1024-d CLIP sequence (`cond_dim` 1024; the
released NoiseAR maps it to its width with a Linear inside the prior); the T5 sequence, the
attention masks and the negative branch ride along in `Condition.extras`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition
from noisear_rl.pipelines.diffusers_backend import DiffusersBackend
from noisear_rl.pipelines.golden import GoldenProcedure

# Positive-branch extras and their negative counterparts ("prompt_embeds" is Condition.embeds).
_NEGATIVE_OF = {
    "prompt_attention_mask": "negative_prompt_attention_mask",
    "prompt_embeds_2": "negative_prompt_embeds_2",
    "prompt_attention_mask_2": "negative_prompt_attention_mask_2",
}


class HunyuanDiTBackend(DiffusersBackend):
    """Hunyuan-DiT (`Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers` by default).

    Defaults follow the NoiseAR release's evaluation of Hunyuan-DiT (`eval.py` of
    HKUST-SAIL/NoiseAR): `DPMSolverMultistepScheduler.from_config` of the pipeline's scheduler
    config (DPMSolver++; `predict_noise` converts the model's v-prediction to epsilon), 50 steps,
    CFG 5.5 (its `Cfg.cfg`, used by every Hunyuan-DiT eval command except the DPO model's, which
    passes 5.0), the pipeline's native 1024x1024 (latent 4x128x128). Golden noise is collected
    with the Golden Noise reference's procedure, as on SDXL. Constructor arguments: see
    `DiffusersBackend`; heights/widths outside Hunyuan-DiT's trained shapes are used as given (no
    resolution binning), since latents must keep the shape the prior produces.
    """

    pipeline_class_name = "HunyuanDiTPipeline"
    default_model = "Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers"
    default_num_inference_steps = 50
    default_guidance_scale = 5.5
    golden_procedure: ClassVar[GoldenProcedure] = "reference"
    """How `golden_noise` collects on this backend by default (see `noisear_rl.pipelines.golden`)."""

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        from diffusers.models.embeddings import get_2d_rotary_pos_embed
        from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import get_resize_crop_region_for_grid

        transformer = self.pipe.transformer
        # Rotary embedding and size conditioning exactly as HunyuanDiTPipeline.__call__ builds them.
        patch = transformer.config.patch_size
        grid = (self.height // 8 // patch, self.width // 8 // patch)
        crops = get_resize_crop_region_for_grid(grid, 512 // 8 // patch)
        self._rotary = get_2d_rotary_pos_embed(
            transformer.inner_dim // transformer.num_heads, crops, grid, device=self.device, output_type="pt"
        )
        self._image_meta_size = torch.tensor(
            [[1024, 1024, self.height, self.width, 0, 0]], device=self.device, dtype=self.dtype
        )

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    def _encode_batch(self, prompts: list[str]) -> Condition:
        common = dict(
            prompt=prompts,
            device=self.device,
            dtype=self.dtype,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=self._negative_prompts(len(prompts)),
        )
        embeds, negative, mask, negative_mask = self.pipe.encode_prompt(
            **common, max_sequence_length=77, text_encoder_index=0
        )
        embeds_2, negative_2, mask_2, negative_mask_2 = self.pipe.encode_prompt(
            **common, max_sequence_length=256, text_encoder_index=1
        )
        return Condition(
            embeds,
            {
                "prompt_attention_mask": mask,
                "prompt_embeds_2": embeds_2,
                "prompt_attention_mask_2": mask_2,
                "negative_prompt_embeds": negative,
                "negative_prompt_attention_mask": negative_mask,
                "negative_prompt_embeds_2": negative_2,
                "negative_prompt_attention_mask_2": negative_mask_2,
            },
        )

    def _negative(self, cond: Condition) -> Condition:
        extras = dict(cond.extras)
        for positive, negative in _NEGATIVE_OF.items():
            extras[positive] = cond.extras[negative]
        return Condition(cond.extras["negative_prompt_embeds"], extras)

    def _extra_call_kwargs(self) -> dict[str, Any]:
        return {"use_resolution_binning": False}

    def _denoiser_output(self, latents: Tensor, timestep: int, cond: Condition) -> Tensor:
        count = latents.shape[0]
        output = self.pipe.transformer(
            latents,
            torch.full((count,), timestep, device=self.device, dtype=latents.dtype),
            encoder_hidden_states=cond.embeds,
            text_embedding_mask=cond.extras["prompt_attention_mask"],
            encoder_hidden_states_t5=cond.extras["prompt_embeds_2"],
            text_embedding_mask_t5=cond.extras["prompt_attention_mask_2"],
            image_meta_size=self._image_meta_size.repeat(count, 1),
            style=torch.zeros(count, dtype=torch.long, device=self.device),
            image_rotary_emb=self._rotary,
            return_dict=False,
        )[0]
        # Hunyuan-DiT also predicts the variance (learn_sigma): keep the mean channels.
        return output[:, : latents.shape[1]]
