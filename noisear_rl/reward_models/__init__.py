"""Reward models: the `RewardModel` base, the registry, built-ins and the composite.

Register a reward with `@register_reward("name")` on a `RewardModel` subclass or on a plain
function `fn(images, prompts) -> Tensor[B]`; load one with `load_reward("name", **kwargs)`
(`load_reward_in(spec, dtype)`: its networks in a dtype, as the commands' `--dtype`).
"""

from noisear_rl.reward_models.base import RewardModel, RewardOutput, check_images
from noisear_rl.reward_models.registry import (
    check_reward_spec,
    list_rewards,
    load_reward,
    load_reward_in,
    register_reward,
)

__all__ = [
    "RewardModel",
    "RewardOutput",
    "check_images",
    "check_reward_spec",
    "list_rewards",
    "load_reward",
    "load_reward_in",
    "register_reward",
]
