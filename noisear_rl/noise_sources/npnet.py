"""A small noise prompt network (NPNet) after Golden Noise (Zhou et al., 2024; papers/002).

NPNet maps a random noise x_T and the prompt to a "golden" noise, trained by MSE on
(noise, golden noise) pairs. It keeps the paper's three parts and their learned blend:

    text_emb = GroupNorm(x_T) * (1 + scale(c)) + shift(c)     # AdaGroupNorm of the prompt
    golden   = svd(x_T) + (2 sigmoid(alpha) - 1) * text_emb + beta * residual(x_T + text_emb, c)

- Singular-value prediction `svd`: each channel of x_T is a matrix U diag(s) V^T; the network
  predicts new singular values from the old ones and keeps U and V (the paper found golden and
  random noises share their singular vectors). The paper reads U and V through attention too;
  here an MLP of the sorted singular values predicts their change.
- Residual prediction `residual`: the paper uses a pretrained Swin Transformer on x_T + text_emb;
  here a small conv net (two resolutions) with FiLM from the pooled prompt and cross-attention to
  the prompt's tokens, so the prompt can act on where things go (the paper's only text path,
  AdaGroupNorm, is a per-channel affine map).
- The prompt condition `c` is the backend's `Condition.embeds` [B, L, D], mean-pooled for the
  AdaGroupNorm and FiLM (the paper flattens all 77 SDXL tokens instead).

Every branch starts at the identity (last layers zero, alpha = 0, beta = 1), so an untrained
network returns its input and training can only move away from x_T where the data asks for it.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a FiLM (scale, shift) from the pooled prompt in between."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, pooled: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(pooled)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(nn.functional.silu(h))


class _CrossAttention(nn.Module):
    """Feature-map positions attend to the prompt's tokens (pre-norm, residual)."""

    def __init__(self, channels: int, cond_dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, kdim=cond_dim, vdim=cond_dim, batch_first=True)

    def forward(self, x_BCHW: Tensor, cond_BLD: Tensor) -> Tensor:
        b, c, h, w = x_BCHW.shape
        tokens_BND = x_BCHW.flatten(2).transpose(1, 2)
        attended, _ = self.attention(self.norm(tokens_BND), cond_BLD, cond_BLD, need_weights=False)
        return x_BCHW + attended.transpose(1, 2).reshape(b, c, h, w)


class _ResidualPredictor(nn.Module):
    """A two-resolution conv net conditioned on the prompt; its output layer starts at zero."""

    def __init__(self, channels: int, cond_dim: int, width: int, heads: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.block_high = _ResBlock(width, width, cond_dim)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block_low = _ResBlock(2 * width, 2 * width, cond_dim)
        self.attention = _CrossAttention(2 * width, cond_dim, heads)
        self.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.block_out = _ResBlock(2 * width, width, cond_dim)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, cond_BLD: Tensor, pooled: Tensor) -> Tensor:
        high = self.block_high(self.conv_in(x), pooled)
        low = self.attention(self.block_low(self.down(high), pooled), cond_BLD)
        out = self.block_out(torch.cat([high, self.up(low)], dim=1), pooled)
        return self.conv_out(nn.functional.silu(out))


class NoisePromptNetwork(ModelMixin, ConfigMixin):
    """(x_T [B, C, H, W], condition [B, L, D]) -> golden noise [B, C, H, W]; see the module docstring.

    Args:
        latent_channels: C of the initial latent.
        latent_height: H (even).
        latent_width: W (even).
        cond_dim: D of the condition (`backend.cond_dim`).
        width: Channels of the residual predictor at full resolution (twice that at half).
        svd_hidden: Hidden width of the singular-value MLP.
        attention_heads: Heads of the residual predictor's cross-attention (divides 2 x width).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        latent_height: int = 128,
        latent_width: int = 128,
        cond_dim: int = 2048,
        width: int = 32,
        svd_hidden: int = 64,
        attention_heads: int = 4,
    ) -> None:
        super().__init__()
        if latent_height % 2 or latent_width % 2:
            raise ValueError(f"the latent's height and width must be even, got {latent_height}x{latent_width}")
        channels, rank = latent_channels, min(latent_height, latent_width)
        self.text_norm = nn.GroupNorm(1, channels, affine=False)
        self.text_film = nn.Linear(cond_dim, 2 * channels)
        self.singular_values = nn.Sequential(
            nn.Linear(channels * rank, svd_hidden), nn.GELU(), nn.Linear(svd_hidden, channels * rank)
        )
        nn.init.zeros_(self.singular_values[-1].weight)
        nn.init.zeros_(self.singular_values[-1].bias)
        self.residual = _ResidualPredictor(channels, cond_dim, width, attention_heads)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.ones(1))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the noises this network maps."""
        c = self.config
        return (c.latent_channels, c.latent_height, c.latent_width)

    def svd_branch(self, noise: Tensor) -> Tensor:
        """U diag(s + MLP(s)) V^T per channel: new singular values, the noise's own singular vectors."""
        with torch.no_grad():
            u, s, vh = torch.linalg.svd(noise.float(), full_matrices=False)
        s_new = s + self.singular_values(s.flatten(1).to(self.dtype)).view_as(s).float()
        return (u * s_new[..., None, :]) @ vh

    def forward(self, noise: Tensor, cond: Tensor) -> Tensor:
        """Golden noises [B, C, H, W] (float32) for noises [B, C, H, W] and conditions [B, L, D]."""
        if noise.ndim != 4 or tuple(noise.shape[1:]) != self.latent_shape:
            raise ValueError(f"noise must be [B, {', '.join(map(str, self.latent_shape))}], got {tuple(noise.shape)}")
        if cond.ndim != 3 or cond.shape[0] != noise.shape[0] or cond.shape[2] != self.config.cond_dim:
            raise ValueError(f"cond must be [{noise.shape[0]}, L, {self.config.cond_dim}], got {tuple(cond.shape)}")
        cond = cond.to(self.dtype)
        pooled = cond.mean(dim=1)
        scale, shift = self.text_film(pooled)[:, :, None, None].chunk(2, dim=1)
        text_emb = self.text_norm(noise.to(self.dtype)) * (1 + scale) + shift
        residual = self.residual(noise.to(self.dtype) + text_emb, cond, pooled)
        blend = 2 * torch.sigmoid(self.alpha) - 1
        return (self.svd_branch(noise) + (blend * text_emb + self.beta * residual).float()).float()
