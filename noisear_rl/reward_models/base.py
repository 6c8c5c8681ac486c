"""The reward-model interface: images [B, 3, H, W] in [0, 1] and prompts in, scores [B] out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class RewardOutput:
    """Scores and optional per-sample details.

    Attributes:
        scores: [B] float scores, higher is better.
        details: Per-sample extras, each a tensor with leading dim B (components, flags).
    """

    scores: Tensor
    details: dict[str, Tensor] = field(default_factory=dict)


class RewardModel(torch.nn.Module):
    """Base class for reward models.

    Subclasses implement `compute(images, prompts) -> RewardOutput` on images already validated
    and moved to the reward's device. `forward` (so `reward(images, prompts)`) returns the scores;
    `evaluate` returns scores and details. Both run under `torch.no_grad` unless the instance was
    built with `differentiable=True`.
    """

    def __init__(self, differentiable: bool = False) -> None:
        super().__init__()
        self.differentiable = differentiable

    @property
    def device(self) -> torch.device:
        """The device the reward computes on (that of its first parameter or buffer, else CPU)."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        raise NotImplementedError

    def evaluate(self, images: Tensor, prompts: list[str] | str) -> RewardOutput:
        """Validates the input, then scores it; see the class docstring."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        check_images(images, len(prompts))
        images = images.to(self.device, torch.float32)
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            output = self.compute(images, prompts)
        if output.scores.shape != (len(prompts),):
            raise RuntimeError(
                f"{type(self).__name__}.compute returned scores of shape {tuple(output.scores.shape)}, "
                f"expected ({len(prompts)},)"
            )
        return output

    def forward(self, images: Tensor, prompts: list[str] | str) -> Tensor:
        return self.evaluate(images, prompts).scores


def check_images(images: Tensor, batch_size: int) -> None:
    """Raises a ValueError unless `images` is a finite float [B, 3, H, W] batch in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    if images.shape[0] != batch_size:
        raise ValueError(f"got {images.shape[0]} images but {batch_size} prompts")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    if not images.numel():
        return
    # One pass and one device sync: min/max propagate NaN, and inf lies outside [0, 1] anyway.
    low, high = torch.stack(torch.aminmax(images.detach())).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("images contain NaN or inf")
    tolerance = 1e-3
    if low < -tolerance or high > 1 + tolerance:
        raise ValueError(f"images must lie in [0, 1], got range [{low:.3f}, {high:.3f}]")
