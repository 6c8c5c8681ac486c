"""Pure functions that cut a latent into patches and put it back, and positional encodings."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def num_patches(height: int, width: int, patch_size: int) -> int:
    """Number of non-overlapping patch_size x patch_size patches (raster order) in an H x W grid."""
    return (height // patch_size) * (width // patch_size)


def patchify(x_BCHW: Tensor, patch_size: int) -> Tensor:
    """[B, C, H, W] -> [B, T, C * p * p], patches in raster order, each flattened as (c, i, j)."""
    b, c, h, w = x_BCHW.shape
    p = patch_size
    x = x_BCHW.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(x_BTD: Tensor, patch_size: int, channels: int, height: int, width: int) -> Tensor:
    """Inverse of `patchify`: [B, T, C * p * p] -> [B, C, H, W]."""
    b = x_BTD.shape[0]
    p = patch_size
    x = x_BTD.reshape(b, height // p, width // p, channels, p, p)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, height, width)


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """[length, dim] fixed sinusoidal encodings: sin on even features, cos on odd ones."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies[: dim // 2])
    return table
