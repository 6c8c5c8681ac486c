"""CLIP image preprocessing in torch: differentiable, batched, on the images' device.

The reference processors (transformers' `CLIPImageProcessor`, open_clip's transforms) go through
PIL; here the same steps run on float tensors [B, 3, H, W] in [0, 1], so no PIL round trip, no
uint8 quantisation and gradients flow to the pixels. Results agree with the PIL pipeline up to
that quantisation and the resampling kernel's rounding (tested in tests/test_reward_preprocess.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize(images_BCHW: Tensor, height: int, width: int, clamp: bool = True) -> Tensor:
    """Bicubic resize with antialiasing (PIL's kernel).

    Args:
        clamp: Clip the bicubic overshoot to [0, 1], as PIL's uint8 output does (the reference
            of CLIP's processor); torchvision's resize of float tensors (HPSv2's) does not.
    """
    if images_BCHW.shape[-2:] == (height, width):
        return images_BCHW
    resized = F.interpolate(images_BCHW, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp(0.0, 1.0) if clamp else resized


def resize_shorter_side(images_BCHW: Tensor, size: int) -> Tensor:
    """Resizes so the shorter side is `size`, keeping the aspect ratio (long side truncated, as CLIP's)."""
    height, width = images_BCHW.shape[-2:]
    short, long = min(height, width), max(height, width)
    new_short, new_long = size, int(size * long / short)
    new_height, new_width = (new_short, new_long) if height <= width else (new_long, new_short)
    return resize(images_BCHW, new_height, new_width)


def center_crop(images_BCHW: Tensor, size: int) -> Tensor:
    """Crops the centre `size` x `size` window, zero-padding first if the image is smaller."""
    height, width = images_BCHW.shape[-2:]
    pad_h, pad_w = max(size - height, 0), max(size - width, 0)
    if pad_h or pad_w:
        images_BCHW = F.pad(images_BCHW, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        height, width = images_BCHW.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images_BCHW[..., top : top + size, left : left + size]


def resize_longer_side_and_pad(images_BCHW: Tensor, size: int) -> Tensor:
    """Resizes so the longer side is `size`, then zero-pads to a square (open_clip's ResizeMaxSize).

    As upstream applies it to float tensors, the bicubic overshoot is not clamped.
    """
    height, width = images_BCHW.shape[-2:]
    scale = size / max(height, width)
    new_height, new_width = round(height * scale), round(width * scale)
    images_BCHW = resize(images_BCHW, new_height, new_width, clamp=False)
    pad_h, pad_w = size - new_height, size - new_width
    return F.pad(images_BCHW, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


@dataclass(frozen=True)
class ClipPreprocess:
    """A CLIP image transform: resize, square crop or pad, normalise.

    Attributes:
        size: Target of the resize: the shorter side ("crop" mode) or the longer side ("pad" mode).
        crop_size: Side of the square centre crop ("crop" mode); the output is `crop_size` square.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel std divided by.
        mode: "crop" (CLIP, PickScore: shorter side to `size`, centre crop) or "pad" (HPSv2's
            open_clip transform: longer side to `size`, zero padding to a square).
    """

    size: int
    crop_size: int
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    mode: Literal["crop", "pad"] = "crop"

    @classmethod
    def square(cls, size: int, mode: Literal["crop", "pad"] = "crop") -> ClipPreprocess:
        """The transform to a `size` square with OpenAI's CLIP mean and std."""
        return cls(size=size, crop_size=size, mode=mode)

    @classmethod
    def from_processor_config(cls, config: Mapping[str, Any]) -> ClipPreprocess:
        """Reads a `preprocessor_config.json` of a transformers `CLIPImageProcessor`."""
        size = config.get("size", 224)
        if isinstance(size, Mapping):
            size = size.get("shortest_edge", size.get("height"))
        crop = config.get("crop_size", size)
        if isinstance(crop, Mapping):
            crop = crop.get("height", crop.get("shortest_edge"))
        mean = tuple(config.get("image_mean", OPENAI_CLIP_MEAN))
        std = tuple(config.get("image_std", OPENAI_CLIP_STD))
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"image_mean/image_std must have 3 entries, got {mean} and {std}")
        return cls(size=int(size), crop_size=int(crop), mean=mean, std=std)  # type: ignore[arg-type]

    @property
    def output_size(self) -> int:
        """Side of the square images this transform returns."""
        return self.crop_size if self.mode == "crop" else self.size

    def __call__(self, images_BCHW: Tensor) -> Tensor:
        """Maps float images [B, 3, H, W] in [0, 1] to normalised pixel values [B, 3, S, S]."""
        if self.mode == "crop":
            pixels = center_crop(resize_shorter_side(images_BCHW, self.size), self.crop_size)
        elif self.mode == "pad":
            pixels = resize_longer_side_and_pad(images_BCHW, self.size)
        else:
            raise ValueError(f"unknown preprocessing mode {self.mode!r}; use 'crop' or 'pad'")
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - mean) / std
