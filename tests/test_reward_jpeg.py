"""JPEG (in)compressibility rewards, as DDPO defines them."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from noisear_rl.reward_models import load_reward


def pil_jpeg_kb(image: torch.Tensor) -> float:
    """DDPO's reference: uint8 HWC through PIL at quality 95, size in kB."""
    pixels = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.tell() / 1000


def test_sizes_match_pil_and_signs() -> None:
    generator = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 64, 64), 0.5)
    noise = torch.rand(1, 3, 64, 64, generator=generator)
    images = torch.cat([flat, noise, noise * 0.2])
    prompts = ["a", "b", "c"]
    incompressibility = load_reward("jpeg-incompressibility")(images, prompts)
    compressibility = load_reward("jpeg-compressibility")(images, prompts)
    expected = torch.tensor([pil_jpeg_kb(image) for image in images])
    torch.testing.assert_close(incompressibility, expected)
    torch.testing.assert_close(compressibility, -expected)
    assert incompressibility[1] > 5 * incompressibility[0]  # noise is much harder to compress


def test_batch_equals_one_by_one() -> None:
    images = torch.rand(4, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    reward = load_reward("jpeg-incompressibility")
    batched = reward(images, ["p"] * 4)
    singles = torch.cat([reward(images[i : i + 1], ["p"]) for i in range(4)])
    assert torch.equal(batched, singles)
    assert np.all(batched.numpy() > 0)
