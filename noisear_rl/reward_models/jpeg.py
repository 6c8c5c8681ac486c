"""JPEG (in)compressibility, as in DDPO (Black et al. 2023): offline rewards that run anywhere.

Each image is quantised to uint8, saved as JPEG at quality 95 with PIL, and scored by its size
in kilobytes (1 kB = 1000 bytes): `jpeg-incompressibility` = +size, `jpeg-compressibility` = -size.
Not differentiable (the encoder is not).
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch import Tensor

from noisear_rl.reward_models.registry import register_reward

JPEG_QUALITY = 95


def jpeg_size_kb(images: Tensor, quality: int = JPEG_QUALITY) -> Tensor:
    """Sizes in kB [B] (float32, on the images' device) of each image [B, 3, H, W] in [0, 1] as JPEG."""
    pixels_BHWC = (images.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for pixels in pixels_BHWC:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32, device=images.device)


@register_reward("jpeg-incompressibility")
def jpeg_incompressibility(images: Tensor, prompts: list[str]) -> Tensor:
    """+JPEG size in kB: rewards detail and high-frequency content."""
    return jpeg_size_kb(images)


@register_reward("jpeg-compressibility")
def jpeg_compressibility(images: Tensor, prompts: list[str]) -> Tensor:
    """-JPEG size in kB: rewards flat, simple images."""
    return -jpeg_size_kb(images)
