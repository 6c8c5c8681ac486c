"""HPSv2 / HPSv2.1 (Wu et al. 2023) on `transformers.CLIPModel`, without the `hpsv2` package.

The official checkpoints (hub `xswu/HPSv2`: `HPS_v2_compressed.pt`, `HPS_v2.1_compressed.pt`) are
open_clip ViT-H-14 state dicts. `open_clip_to_transformers` converts such a state dict into a
`CLIPConfig` plus a transformers state dict; tests/test_reward_hpsv2.py proves the converted
model computes the same image and text features as open_clip on random weights. The score is
the upstream `hpsv2.score`: the cosine of the image and prompt embeddings (about 0.25-0.35),
with upstream's preprocessing (longer side to 224, zero padding to a square, CLIP mean/std).

`save_converted_hpsv2` writes the converted model as safetensors + config.json, which then loads
without any pickle: `load_reward("hpsv2", model="/path/to/converted")`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from noisear_rl.reward_models.base import RewardOutput
from noisear_rl.reward_models.clip_rewards import CLIPRewardModel, load_clip_model
from noisear_rl.hub import is_local_path, resolve_file
from noisear_rl.reward_models.preprocess import ClipPreprocess
from noisear_rl.reward_models.registry import register_reward

HPSV2_REPO = "xswu/HPSv2"
HPSV2_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
HPSV2_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
# open_clip's ViT-H-14: 16 heads in both towers (head width 80 in vision, 64 in text).
VIT_H_14_HEADS = (16, 16)

_LAYER_KEYS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def _convert_tower(state_dict: Mapping[str, Tensor], src: str, dst: str, num_layers: int) -> dict[str, Tensor]:
    """Maps open_clip `{src}resblocks.i.*` transformer blocks to transformers `{dst}layers.i.*`."""
    out: dict[str, Tensor] = {}
    for i in range(num_layers):
        block, layer = f"{src}resblocks.{i}.", f"{dst}layers.{i}."
        for name, kind in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            q, k, v = state_dict[block + f"attn.{kind}"].chunk(3, dim=0)
            for proj, tensor in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
                out[f"{layer}self_attn.{proj}.{name}"] = tensor
        for old, new in _LAYER_KEYS.items():
            for name in ("weight", "bias"):
                out[f"{layer}{new}.{name}"] = state_dict[f"{block}{old}.{name}"]
    return out


def _num_layers(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    return len({key[len(prefix) :].split(".")[0] for key in state_dict if key.startswith(prefix)})


def open_clip_to_transformers(
    state_dict: Mapping[str, Tensor], vision_heads: int, text_heads: int
) -> tuple[Any, dict[str, Tensor]]:
    """Converts an open_clip `CLIP` state dict (ViT vision tower, CLIP text tower) for transformers.

    Sizes are read from the tensors' shapes; head counts cannot be, so they are arguments
    (`VIT_H_14_HEADS` for HPSv2). Both towers use exact GELU, as open_clip's ViT-H-14 does.

    Returns:
        A `CLIPConfig` and a state dict that `CLIPModel(config).load_state_dict` accepts strictly.

    Raises:
        ValueError: The state dict has keys this conversion does not understand (another
            architecture: attention pooling, custom text towers, ...).
    """
    from transformers import CLIPConfig

    sd = {key.removeprefix("module."): value for key, value in state_dict.items()}
    vision_layers = _num_layers(sd, "visual.transformer.resblocks.")
    text_layers = _num_layers(sd, "transformer.resblocks.")
    vision_width, _, patch_size, _ = sd["visual.conv1.weight"].shape
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vocab_size, text_width = sd["token_embedding.weight"].shape
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=text_width,
            intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            max_position_embeddings=sd["positional_embedding"].shape[0],
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            # open_clip pools at the end-of-text token, the highest id of its vocabulary.
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads,
            image_size=grid * patch_size,
            patch_size=patch_size,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        ),
        projection_dim=sd["text_projection"].shape[1],
    )
    out = {
        "logit_scale": sd["logit_scale"],
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].T.contiguous(),
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].T.contiguous(),
    }
    out |= _convert_tower(sd, "transformer.", "text_model.encoder.", text_layers)
    out |= _convert_tower(sd, "visual.transformer.", "vision_model.encoder.", vision_layers)
    used = {
        "logit_scale", "token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias",
        "text_projection", "attn_mask", "visual.class_embedding", "visual.conv1.weight",
        "visual.positional_embedding", "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight",
        "visual.ln_post.bias", "visual.proj",
    }  # fmt: skip
    unknown = sorted(
        k for k in sd if k not in used and not k.startswith(("transformer.resblocks.", "visual.transformer.resblocks."))
    )
    if unknown:
        raise ValueError(
            f"cannot convert open_clip keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}: not a plain ViT CLIP"
        )
    return config, out


def clip_model_from_open_clip(
    state_dict: Mapping[str, Tensor], vision_heads: int, text_heads: int, dtype: torch.dtype = torch.float32
) -> Any:
    """Builds a frozen `transformers.CLIPModel` holding an open_clip state dict's weights."""
    from accelerate import init_empty_weights
    from transformers import CLIPModel

    config, converted = open_clip_to_transformers(state_dict, vision_heads, text_heads)
    with init_empty_weights(include_buffers=False):  # no random init of ~1B parameters
        model = CLIPModel(config)
    model.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=True, assign=True)
    return model.to(dtype).eval().requires_grad_(False)


def read_open_clip_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Reads an open_clip training checkpoint (`{"state_dict": ...}` or a bare state dict), pickle-free."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return dict(checkpoint.get("state_dict", checkpoint))


@functools.lru_cache(maxsize=2)
def load_hpsv2_model(model: str, version: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Any:
    """Loads HPSv2 as a frozen `CLIPModel`, once per process.

    `model` is a converted folder (config.json + safetensors), a local `.pt` checkpoint, a local
    folder holding the version's `.pt`, or a hub repo holding it.
    """
    if is_local_path(model) and (Path(os.path.expanduser(model)) / "config.json").exists():
        return load_clip_model(model, dtype, device)
    path = resolve_file(model, HPSV2_FILES[version], what=f"HPS{version} checkpoint", argument="model")
    state_dict = read_open_clip_checkpoint(path)
    return clip_model_from_open_clip(state_dict, *VIT_H_14_HEADS, dtype=dtype).to(device)


def save_converted_hpsv2(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Converts an official HPSv2 `.pt` into a transformers folder (safetensors + config.json)."""
    clip_model_from_open_clip(read_open_clip_checkpoint(checkpoint), *VIT_H_14_HEADS).save_pretrained(out_dir)


@register_reward("hpsv2")
class HPSv2(CLIPRewardModel):
    """Human Preference Score v2: `cos(image, prompt)` of the HPSv2-finetuned CLIP ViT-H-14.

    Args:
        model: Hub repo (default `xswu/HPSv2`), local `.pt`, local folder holding it, or a folder
            written by `save_converted_hpsv2`.
        version: "v2.0" (upstream's default) or "v2.1".
        processor: Hub id or local folder of the tokenizer (LAION's CLIP-ViT-H-14, the same BPE
            vocabulary as open_clip's).
        **kwargs: `device`, `dtype`, `differentiable`, `clip_model`, `tokenizer`, `preprocess`, as
            for `CLIPRewardModel`. The default transform is upstream's: longer side to the model's
            image size, zero padding to a square.
    """

    default_model = HPSV2_REPO
    default_processor = HPSV2_PROCESSOR
    default_version = "v2.0"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        version: str | None = None,
        processor: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        version = version or self.default_version
        if version not in HPSV2_FILES:
            raise ValueError(f"unknown HPSv2 version {version!r}; valid: {', '.join(HPSV2_FILES)}")
        self.version = version  # a plain string, set first: `load_clip` (called by the base) reads it
        super().__init__(model, processor, **kwargs)

    def load_clip(self, model: str, dtype: torch.dtype, device: str) -> Any:
        return load_hpsv2_model(model, self.version, dtype, device)

    def load_preprocess(self, processor: str, clip_model: Any) -> ClipPreprocess:
        return self.square_preprocess(clip_model)

    def square_preprocess(self, clip_model: Any) -> ClipPreprocess:
        return ClipPreprocess.square(clip_model.config.vision_config.image_size, mode="pad")

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        return RewardOutput(scores=self.cosine(images, prompts))


@register_reward("hpsv2.1")
class HPSv21(HPSv2):
    """HPSv2.1 (`HPS_v2.1_compressed.pt`); same arguments as `HPSv2`."""

    default_version = "v2.1"
