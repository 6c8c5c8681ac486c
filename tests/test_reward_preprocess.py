"""Torch CLIP preprocessing: agreement with the PIL reference processor, padding, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from noisear_rl.reward_models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipPreprocess

MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)


def pil_processor(size: int, crop: int):
    """transformers' PIL CLIP image processor (the reference the hub models were trained with)."""
    try:
        from transformers import CLIPImageProcessorPil as Processor  # transformers >= 5
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    return Processor(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop})


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 photo-like image (smooth structure and some texture), [H, W, 3]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=generator)
    image = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    image = (image + 0.05 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)
    return (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize(("height", "width"), [(96, 128), (128, 80), (20, 30), (64, 64)])
def test_matches_the_pil_processor(height: int, width: int) -> None:
    pixels = smooth_image(height, width, seed=height + width)
    reference = pil_processor(48, 40)(images=Image.fromarray(pixels), return_tensors="pt")["pixel_values"]
    ours = ClipPreprocess(size=48, crop_size=40)(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    assert ours.shape == reference.shape == (1, 3, 40, 40)
    difference = (ours - reference).abs()
    # PIL resamples in uint8 (half a level = 0.0073 after dividing by std); the kernels match.
    assert difference.mean() < 0.006, difference.mean()
    assert difference.max() < 0.02, difference.max()


def test_from_processor_config_reads_transformers_json() -> None:
    config = {
        "size": {"shortest_edge": 224},
        "crop_size": {"height": 224, "width": 224},
        "image_mean": [0.5] * 3,
        "image_std": [0.25] * 3,
    }
    transform = ClipPreprocess.from_processor_config(config)
    assert transform == ClipPreprocess(size=224, crop_size=224, mean=(0.5,) * 3, std=(0.25,) * 3)
    legacy = ClipPreprocess.from_processor_config({"size": 224, "crop_size": 224})  # old integer form
    assert legacy == ClipPreprocess.square(224)


def test_pad_mode_resizes_the_longer_side_and_pads_with_black() -> None:
    images = torch.rand(2, 3, 20, 40)
    out = ClipPreprocess.square(32, mode="pad")(images)
    assert out.shape == (2, 3, 32, 32)
    black = -MEAN / STD
    torch.testing.assert_close(out[:, :, :8], black.expand(2, 3, 8, 32))
    torch.testing.assert_close(out[:, :, 24:], black.expand(2, 3, 8, 32))
    resized = F.interpolate(images, size=(16, 32), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(out[:, :, 8:24], (resized - MEAN) / STD)


def test_square_input_at_target_size_is_only_normalised() -> None:
    images = torch.rand(3, 3, 32, 32)
    for mode in ("crop", "pad"):
        torch.testing.assert_close(ClipPreprocess.square(32, mode=mode)(images), (images - MEAN) / STD)


def test_gradients_reach_the_pixels() -> None:
    images = torch.rand(2, 3, 50, 70, requires_grad=True)
    ClipPreprocess(size=32, crop_size=32)(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
