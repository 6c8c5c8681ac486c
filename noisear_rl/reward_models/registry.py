"""The reward-model registry: decorators in, `load_reward(name, **kwargs)` out.

A built-in reward is one file in this package that registers itself with `@register_reward`;
an embedded world's reward is a lazy entry (the world lives above this layer).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from noisear_rl.registry import Registry, unknown_name
from noisear_rl.reward_models.base import RewardModel, RewardOutput

REWARDS: Registry[Any] = Registry(
    "reward model",
    "noisear_rl.reward_models",
    package="noisear_rl.reward_models",
    lazy={"shapes": "noisear_rl.worlds.shapes.verifier:ShapesVerifier"},
)


class FunctionReward(RewardModel):
    """Wraps a plain function `fn(images, prompts, **kwargs) -> Tensor[B]` as a `RewardModel`.

    Args:
        fn: The reward function.
        device: Where `fn` receives the images (an empty buffer records it, so `.to()` moves it).
        differentiable: Run `fn` with gradients enabled.
        **kwargs: Extra keyword arguments passed to every call of `fn`.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        device: torch.device | str | None = None,
        differentiable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(differentiable=differentiable)
        try:
            inspect.signature(fn).bind(None, [], **kwargs)
        except TypeError as err:
            name = getattr(fn, "__name__", repr(fn))
            raise TypeError(f"reward function {name} cannot take the arguments {sorted(kwargs)}: {err}") from None
        self.fn = fn
        self.kwargs = kwargs
        self.register_buffer("device_anchor", torch.empty(0, device=device), persistent=False)

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        scores = self.fn(images, prompts, **self.kwargs)
        return RewardOutput(scores=torch.as_tensor(scores, dtype=torch.float32, device=images.device))


def register_reward(name: str) -> Callable[[Any], Any]:
    """Registers a `RewardModel` subclass or a plain function under `name`."""
    return REWARDS.register(name)


def list_rewards() -> list[str]:
    """Names of all registered and entry-point reward models."""
    return REWARDS.names()


def load_reward(name: str, **kwargs: Any) -> RewardModel:
    """Builds the reward model registered as `name`.

    Args:
        name: A registered name, or a composite spec such as "imagereward:1.0,pickscore:0.5".
        **kwargs: Passed to the reward's constructor (device, checkpoint path, ...).

    Raises:
        KeyError: Unknown name; the message lists the valid names.
    """
    if ":" in name or "," in name:
        from noisear_rl.reward_models.composite import CompositeReward

        return CompositeReward.from_spec(name, **kwargs)
    entry = REWARDS.get(name)
    if inspect.isclass(entry) and issubclass(entry, RewardModel):
        return entry(**kwargs)
    if callable(entry):
        return FunctionReward(entry, **kwargs)
    raise TypeError(f"reward {name!r} is registered as {entry!r}, which is neither a RewardModel nor a function")


def check_reward_spec(spec: str) -> None:
    """Checks a reward name or composite spec without building any model (nothing is loaded).

    Raises:
        ValueError: A malformed spec (empty, a term without a name, a weight that is not a finite
            number, a name given twice).
        KeyError: An unknown reward name; the message lists the valid names.
    """
    from noisear_rl.reward_models.composite import parse_reward_spec

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty reward spec {spec!r}; give a reward name or e.g. 'imagereward:1.0,pickscore:0.5'")
    names = [term.name for term in parse_reward_spec(spec)] if (":" in spec or "," in spec) else [spec]
    for name in names:
        if name not in REWARDS:
            raise unknown_name("reward", name, list_rewards(), f" in spec {spec!r}" if spec != name else "")



def takes_dtype(name: str) -> bool:
    """Whether the reward registered as `name` is a `RewardModel` whose constructor takes `dtype=`
    (its own, or a base class's that it passes `**kwargs` on to): ImageReward, the CLIP rewards."""
    entry = REWARDS.get(name)
    if not (inspect.isclass(entry) and issubclass(entry, RewardModel)):
        return False
    for cls in entry.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(vars(cls)["__init__"]).parameters
        if "dtype" in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def load_reward_in(spec: str, dtype: str | torch.dtype, **kwargs: Any) -> RewardModel:
    """`load_reward(spec, **kwargs)` with the networks of the rewards that take a `dtype` built in
    `dtype` (a command's `--dtype`); the others (verifiers, functions) compute as they always do.

    Raises:
        KeyError: An unknown reward name; the message lists the valid names.
    """
    if ":" in spec or "," in spec:
        from noisear_rl.reward_models.composite import CompositeReward, parse_reward_spec

        names = [term.name for term in parse_reward_spec(spec)]
        check_reward_spec(spec)
        typed = {name: {"dtype": dtype} for name in names if takes_dtype(name)}
        return CompositeReward.from_spec(spec, component_kwargs=typed, **kwargs)
    return load_reward(spec, **kwargs, **({"dtype": dtype} if takes_dtype(spec) else {}))
