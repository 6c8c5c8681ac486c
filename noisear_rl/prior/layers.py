"""Decoder layers of the NoiseAR prior, with key/value caching for incremental decoding.

`Attention` keeps `torch.nn.MultiheadAttention`'s parameter names and layout (`in_proj_weight`,
`in_proj_bias`, `out_proj`) so released checkpoints load unchanged, but exposes its keys and
values so decoding can cache them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ResidualStyle = Literal["release", "pre_norm"]


class Attention(nn.Module):
    """Multi-head attention whose projections can be applied separately (for KV caching)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x_BLD: Tensor) -> Tensor:
        b, length, d = x_BLD.shape
        return x_BLD.reshape(b, length, self.n_heads, d // self.n_heads).transpose(1, 2)

    def project_query(self, x_BLD: Tensor) -> Tensor:
        w_q, _, _ = self.in_proj_weight.chunk(3)
        b_q, _, _ = self.in_proj_bias.chunk(3)
        return self._split_heads(F.linear(x_BLD, w_q, b_q))

    def project_key_value(self, x_BLD: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [B, heads, L, d_head] for the sequence `x_BLD`."""
        _, w_k, w_v = self.in_proj_weight.chunk(3)
        _, b_k, b_v = self.in_proj_bias.chunk(3)
        return self._split_heads(F.linear(x_BLD, w_k, b_k)), self._split_heads(F.linear(x_BLD, w_v, b_v))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """Attention of queries [B, h, Lq, dh] over keys/values [B, h, Lk, dh]; returns [B, Lq, D]."""
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )
        b, h, length, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, length, h * dh))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the condition, and a feed-forward network.

    `residual_style="release"` computes what the public NoiseAR release computes, where each
    sub-layer normalises x and adds its output to the normalised x (`x = norm(x); x = f(x) + x`);
    `"pre_norm"` is the usual pre-LayerNorm residual (`x = x + f(norm(x))`).
    """

    def __init__(self, d_model: int, d_ff: int, n_heads: int, dropout: float, residual_style: ResidualStyle) -> None:
        super().__init__()
        self.residual_style = residual_style
        self.self_attn = Attention(d_model, n_heads, dropout)
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, n_heads, dropout)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model), nn.Dropout(dropout)
        )
        self.ffn_norm = nn.LayerNorm(d_model)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, fn) -> Tensor:
        if self.residual_style == "release":
            x = norm(x)
            return fn(x) + x
        return x + fn(norm(x))

    def forward(
        self,
        x_BLD: Tensor,
        cross_kv: tuple[Tensor, Tensor],
        cross_mask: Tensor | None,
        self_kv_cache: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Runs the layer on new tokens `x_BLD`.

        Args:
            x_BLD: The new tokens. Without a cache they are the whole (causal) sequence.
            cross_kv: Keys/values of the condition, computed once per sequence.
            cross_mask: [B, 1, 1, L_cond] bool, True where the condition is valid, or None.
            self_kv_cache: Keys/values of the earlier tokens, or None.

        Returns:
            The layer output for the new tokens, and the self-attention keys/values of all tokens.
        """
        new_kv: tuple[Tensor, Tensor] = (x_BLD, x_BLD)  # replaced below

        def self_attention(h: Tensor) -> Tensor:
            nonlocal new_kv
            k, v = self.self_attn.project_key_value(h)
            if self_kv_cache is not None:
                k = torch.cat([self_kv_cache[0], k], dim=2)
                v = torch.cat([self_kv_cache[1], v], dim=2)
            new_kv = (k, v)
            # With a cache, the new tokens see every cached token; without one, the mask is causal.
            causal = self_kv_cache is None and h.shape[1] > 1
            if self_kv_cache is not None and h.shape[1] > 1:
                raise ValueError("cached decoding takes one new token at a time")
            return self.self_attn.attend(self.self_attn.project_query(h), k, v, causal=causal)

        def cross_attention(h: Tensor) -> Tensor:
            return self.cross_attn.attend(self.cross_attn.project_query(h), *cross_kv, mask=cross_mask)

        x = self._residual(x_BLD, self.self_attn_norm, self_attention)
        x = self._residual(x, self.cross_attn_norm, cross_attention)
        x = self._residual(x, self.ffn_norm, self.ffn)
        return x, new_kv


class PromptShift(nn.Module):
    """A per-patch shift of the predicted mean that depends on the prompt alone.

    A learned query per patch cross-attends to the condition tokens, and one output map per patch
    turns what it read into that patch's shift. Unlike the decoder's own cross-attention, whose
    queries come from the earlier patches, its output does not depend on the noise decoded so far,
    so an update from rollouts can only learn what the prompt asks for, not fit each rollout's
    own noise. The output maps start at zero: adding the pathway leaves the prior's distribution
    unchanged.

    A scalar `gain` multiplies the whole shift. NLL on selected noise finds a well-aimed but short
    shift (it fits the mean of the noises that passed, not the point that passes most often); an
    update of the gain alone learns from few rollouts how far to go along it, the way a guidance
    scale sets how far a sampler follows its condition.

    With `channels` given, the output is one value per channel of each patch, added to all of
    that channel's p x p elements: the shift then lives in the noise's lowest frequencies (the
    patch means), which is where an initial noise decides an image's layout, and it has p^2 times
    fewer output weights for an update from few rollouts to fit.

    Args:
        num_patches: T, the number of patches.
        cond_dim: Width of the condition tokens it reads (the prior's raw condition).
        width: Width of the queries, keys and values.
        patch_dim: Elements of one patch (the shift's width), flattened as (c, i, j).
        channels: None: a value per element; C: a value per channel, constant over the patch.
    """

    def __init__(self, num_patches: int, cond_dim: int, width: int, patch_dim: int, channels: int | None = None) -> None:
        super().__init__()
        if channels is not None and patch_dim % channels:
            raise ValueError(f"patch_dim {patch_dim} is not divisible by channels {channels}")
        self.repeat = 1 if channels is None else patch_dim // channels
        out_dim = patch_dim // self.repeat
        self.query = nn.Parameter(torch.randn(num_patches, width) * 0.5)
        self.key = nn.Linear(cond_dim, width)
        self.value = nn.Linear(cond_dim, width)
        self.out_weight = nn.Parameter(torch.zeros(num_patches, width, out_dim))
        self.out_bias = nn.Parameter(torch.zeros(num_patches, out_dim))
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, cond_BLC: Tensor, mask: Tensor | None = None, gain: Tensor | None = None) -> Tensor:
        """The mean shift of every patch [B, T, patch_dim] for condition tokens [B, L, cond_dim].

        `mask`: [B, 1, 1, L] bool, True where a condition token is valid, or None. `gain`: [B] a
        gain per row instead of the module's own (an episode's drawn gain, `SamplingKnobs`).
        """
        keys, values = self.key(cond_BLC), self.value(cond_BLC)
        scores = torch.einsum("tw,blw->btl", self.query, keys) / keys.shape[-1] ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask[:, 0], float("-inf"))
        read = torch.einsum("btl,blw->btw", scores.softmax(-1), values)
        gain = self.gain if gain is None else gain.to(read.dtype)[:, None, None]
        shift = (torch.einsum("btw,twd->btd", read, self.out_weight) + self.out_bias) * gain
        return shift.repeat_interleave(self.repeat, dim=-1) if self.repeat > 1 else shift
