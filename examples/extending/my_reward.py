"""A new reward in one file: brightness, the mean pixel value of an image (0 black, 1 white).

A function of images [B, 3, H, W] in [0, 1] and their prompts returning scores [B] is enough (a
`RewardModel` subclass may hold weights). Registered, it is a name like any built-in reward:
`load_reward("brightness")`, `--reward brightness`, `--reward shapes:1.0,brightness:0.5`.
"""

from __future__ import annotations

from torch import Tensor

from noisear_rl.reward_models import register_reward


@register_reward("brightness")
def brightness(images: Tensor, prompts: list[str]) -> Tensor:
    """Mean of each image's pixels, in [0, 1]; the prompt plays no part."""
    return images.mean(dim=(1, 2, 3))
