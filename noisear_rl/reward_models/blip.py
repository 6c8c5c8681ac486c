"""A pure-torch BLIP image-text encoder, as ImageReward uses it (no timm, fairscale or BLIP package).

Module and parameter names mirror the official BLIP code (`vit.py`, `med.py`), so a BLIP-family
state dict loads without renaming: the vision transformer is `visual_encoder.*`
(`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
`norm`) and the text encoder is a BERT with a cross-attention block in every layer
(`text_encoder.embeddings.*`, `text_encoder.encoder.layer.N.{attention,crossattention,intermediate,output}.*`).
Only the image-grounded text encoding ("multimodal" mode) is implemented; it is all a reward needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ViTConfig:
    """The BLIP vision transformer; the defaults are BLIP's `vit='large'` (ViT-L/16 at 224 px)."""

    image_size: int = 224  # input side in pixels (square)
    patch_size: int = 16  # side of a patch in pixels
    width: int = 1024  # embedding dimension
    depth: int = 24  # number of transformer blocks
    num_heads: int = 16  # attention heads per block
    mlp_ratio: float = 4.0  # hidden width of the MLP relative to `width`
    layer_norm_eps: float = 1e-6  # epsilon of every LayerNorm

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class MedConfig:
    """The BLIP text encoder (BERT with cross-attention), as read from a `med_config.json`.

    Keys of the JSON file that do not change the inference computation (dropout rates,
    `architectures`, `model_type`, `type_vocab_size`, ...) are ignored.
    """

    vocab_size: int = 30524  # bert-base-uncased (30522) plus BLIP's [DEC] and [ENC] tokens
    hidden_size: int = 768  # text width
    num_hidden_layers: int = 12  # BERT layers, each with self- and cross-attention
    num_attention_heads: int = 12  # heads in self- and cross-attention
    intermediate_size: int = 3072  # feed-forward width
    max_position_embeddings: int = 512  # learned absolute positions
    layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm
    hidden_act: str = "gelu"  # feed-forward activation (BLIP uses exact, erf-based GELU)
    pad_token_id: int = 0  # id of [PAD]
    add_cross_attention: bool = True  # BLIP's image-grounded encoder needs it
    encoder_width: int = 768  # width of the image embeddings (BLIP overrides it with the ViT width)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> MedConfig:
        """Builds the config from a `med_config.json`-style dict, ignoring keys it does not use."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in config.items() if key in known})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> MedConfig:
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))


_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


def _multi_head_attention(query: Tensor, key: Tensor, value: Tensor, num_heads: int, mask: Tensor | None) -> Tensor:
    """Scaled dot-product attention over [B, L, D] projections; `mask` is additive, [B, 1, 1, S]."""
    batch, length, width = query.shape
    q, k, v = (x.unflatten(-1, (num_heads, width // num_heads)).transpose(1, 2) for x in (query, key, value))
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return context.transpose(1, 2).reshape(batch, length, width)


class _ViTAttention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x_BLD: Tensor) -> Tensor:
        q, k, v = self.qkv(x_BLD).chunk(3, dim=-1)
        return self.proj(_multi_head_attention(q, k, v, self.num_heads, mask=None))


class _ViTMlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _ViTBlock(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = _ViTAttention(config.width, config.num_heads)
        self.norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = _ViTMlp(config.width, int(config.width * config.mlp_ratio))

    def forward(self, x_BLD: Tensor) -> Tensor:
        x_BLD = x_BLD + self.attn(self.norm1(x_BLD))
        return x_BLD + self.mlp(self.norm2(x_BLD))


class _PatchEmbed(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.width, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, pixels_BCHW: Tensor) -> Tensor:
        return self.proj(pixels_BCHW).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """BLIP's ViT: normalised pixels [B, 3, S, S] -> token embeddings [B, 1 + patches, width]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = _PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.width))
        self.blocks = nn.ModuleList(_ViTBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)

    def forward(self, pixels_BCHW: Tensor) -> Tensor:
        size = self.config.image_size
        if pixels_BCHW.shape[-2:] != (size, size):
            raise ValueError(f"the ViT expects {size}x{size} pixels, got {tuple(pixels_BCHW.shape[-2:])}")
        patches_BLD = self.patch_embed(pixels_BCHW)
        cls_B1D = self.cls_token.expand(patches_BLD.shape[0], -1, -1)
        x_BLD = torch.cat([cls_B1D, patches_BLD], dim=1) + self.pos_embed
        for block in self.blocks:
            x_BLD = block(x_BLD)
        return self.norm(x_BLD)


class _BertEmbeddings(nn.Module):
    """Word plus absolute position embeddings (BLIP's text encoder has no token-type embeddings)."""

    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids_BL: Tensor) -> Tensor:
        positions_L = torch.arange(input_ids_BL.shape[1], device=input_ids_BL.device)
        return self.LayerNorm(self.word_embeddings(input_ids_BL) + self.position_embeddings(positions_L))


class _BertSelfAttention(nn.Module):
    def __init__(self, config: MedConfig, key_width: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(key_width, config.hidden_size)
        self.value = nn.Linear(key_width, config.hidden_size)

    def forward(self, hidden_BLD: Tensor, context_BSE: Tensor, mask_B11S: Tensor | None) -> Tensor:
        return _multi_head_attention(
            self.query(hidden_BLD), self.key(context_BSE), self.value(context_BSE), self.num_heads, mask_B11S
        )


class _BertResidualOutput(nn.Module):
    """Dense projection, residual add, LayerNorm (BERT's `*Output` blocks)."""

    def __init__(self, in_width: int, config: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class _BertAttention(nn.Module):
    def __init__(self, config: MedConfig, key_width: int) -> None:
        super().__init__()
        self.self = _BertSelfAttention(config, key_width)
        self.output = _BertResidualOutput(config.hidden_size, config)

    def forward(self, hidden_BLD: Tensor, context_BSE: Tensor, mask_B11S: Tensor | None) -> Tensor:
        return self.output(self.self(hidden_BLD, context_BSE, mask_B11S), hidden_BLD)


class _BertIntermediate(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = _ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: Tensor) -> Tensor:
        return self.activation(self.dense(hidden))


class _BertLayer(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.attention = _BertAttention(config, key_width=config.hidden_size)
        self.crossattention = _BertAttention(config, key_width=config.encoder_width)
        self.intermediate = _BertIntermediate(config)
        self.output = _BertResidualOutput(config.intermediate_size, config)

    def forward(self, hidden_BLD: Tensor, text_mask_B11L: Tensor, image_BSE: Tensor) -> Tensor:
        hidden_BLD = self.attention(hidden_BLD, hidden_BLD, text_mask_B11L)
        hidden_BLD = self.crossattention(hidden_BLD, image_BSE, None)  # every image token is attended
        return self.output(self.intermediate(hidden_BLD), hidden_BLD)


class _BertEncoder(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(config) for _ in range(config.num_hidden_layers))


class MedTextEncoder(nn.Module):
    """BLIP's image-grounded text encoder: token ids + image embeddings -> text states [B, L, hidden]."""

    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        if not config.add_cross_attention:
            raise ValueError("the med_config must set add_cross_attention=true: the image-grounded encoder needs it")
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {config.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        if config.hidden_size % config.num_attention_heads:
            heads = config.num_attention_heads
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads {heads}")
        self.config = config
        self.embeddings = _BertEmbeddings(config)
        self.encoder = _BertEncoder(config)

    def forward(self, input_ids_BL: Tensor, attention_mask_BL: Tensor, image_BSE: Tensor) -> Tensor:
        hidden_BLD = self.embeddings(input_ids_BL)
        # BLIP masks padding with an additive -10000 (not -inf); kept for identical numerics.
        text_mask_B11L = (1.0 - attention_mask_BL[:, None, None, :].to(hidden_BLD.dtype)) * -10000.0
        for layer in self.encoder.layer:
            hidden_BLD = layer(hidden_BLD, text_mask_B11L, image_BSE)
        return hidden_BLD


class BlipImageTextEncoder(nn.Module):
    """The `visual_encoder` and `text_encoder` of BLIP, named as in the official checkpoints."""

    def __init__(self, vision_config: ViTConfig, med_config: MedConfig) -> None:
        super().__init__()
        self.visual_encoder = VisionTransformer(vision_config)
        # BLIP sets the cross-attention input width to the ViT width, whatever the JSON says.
        self.text_encoder = MedTextEncoder(replace(med_config, encoder_width=vision_config.width))

    def forward(self, pixels_BCHW: Tensor, input_ids_BL: Tensor, attention_mask_BL: Tensor) -> Tensor:
        """Image-grounded text states [B, L, hidden] for normalised pixels and tokenised prompts."""
        return self.text_encoder(input_ids_BL, attention_mask_BL, self.visual_encoder(pixels_BCHW))
