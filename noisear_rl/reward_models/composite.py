"""A weighted sum of rewards from a spec such as "imagereward:1.0,pickscore:0.5".

The spec is what a user types on the command line or writes in a config: comma-separated terms,
each `name:weight` or a bare `name` (weight 1.0). Each component's raw score is reported in the
details under its name, and its own details under `name/key`. Optionally the total is z-scored
within groups of equal prompts in the batch (DDPO's per-prompt normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from noisear_rl.registry import unknown_name
from noisear_rl.reward_models.base import RewardModel, RewardOutput
from noisear_rl.reward_models.normalize import per_prompt_zscore

Normalize = Literal["per_prompt"] | None
NORMALIZE_CHOICES = (None, "per_prompt")


@dataclass(frozen=True)
class RewardTerm:
    """One term of a composite spec: a registered reward name and its weight."""

    name: str
    weight: float


def parse_reward_spec(spec: str) -> list[RewardTerm]:
    """Parses "name:weight,name,..." into terms (a bare name has weight 1.0).

    Raises:
        ValueError: Empty spec or term, missing or non-numeric or non-finite weight, a duplicate name.
    """
    if not spec.strip():
        raise ValueError("empty reward spec; expected e.g. 'imagereward:1.0,pickscore:0.5'")
    terms: list[RewardTerm] = []
    for position, raw in enumerate(spec.split(","), start=1):
        text = raw.strip()
        if not text:
            raise ValueError(f"reward spec {spec!r} has an empty term at position {position}")
        name, sep, weight_text = (part.strip() for part in text.partition(":"))
        if not name:
            raise ValueError(f"reward spec {spec!r}: term {text!r} has no reward name")
        if sep and not weight_text:
            raise ValueError(f"reward spec {spec!r}: {name!r} has ':' but no weight; write '{name}:1.0' or '{name}'")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(f"reward spec {spec!r}: weight {weight_text!r} of {name!r} is not a number") from None
        if not math.isfinite(weight):
            raise ValueError(f"reward spec {spec!r}: weight of {name!r} must be finite, got {weight_text!r}")
        if any(term.name == name for term in terms):
            raise ValueError(f"reward spec {spec!r} names {name!r} twice; give each reward once with its total weight")
        terms.append(RewardTerm(name, weight))
    return terms


class CompositeReward(RewardModel):
    """The weighted sum of several rewards; see the module docstring.

    Args:
        terms: (name, weight, reward) triples; names label the details.
        normalize: None, or "per_prompt" to z-score the total within groups of equal prompts;
            the unnormalised total is then in the details as "unnormalized".
        differentiable: Keep gradients through components that are themselves differentiable.
    """

    def __init__(
        self,
        terms: Sequence[tuple[str, float, RewardModel]],
        normalize: Normalize = None,
        differentiable: bool = False,
    ) -> None:
        super().__init__(differentiable=differentiable)
        if not terms:
            raise ValueError("a CompositeReward needs at least one term")
        if normalize not in NORMALIZE_CHOICES:
            raise ValueError(f"unknown normalize {normalize!r}; valid: None, 'per_prompt'")
        self.names = [name for name, _, _ in terms]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate reward names in {self.names}")
        self.weights = [float(weight) for _, weight, _ in terms]
        # A ModuleList (not a ModuleDict): names such as "hpsv2.1" are not valid module keys.
        self.rewards = torch.nn.ModuleList([reward for _, _, reward in terms])
        self.normalize = normalize

    @classmethod
    def from_spec(
        cls,
        spec: str,
        normalize: Normalize = None,
        component_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> CompositeReward:
        """Builds the composite of a spec such as "imagereward:1.0,pickscore:0.5".

        Args:
            spec: Comma-separated `name:weight` or `name` terms.
            normalize: See the class.
            component_kwargs: Per-name constructor arguments, e.g. {"pickscore": {"model": "/w/ps"}}.
            **kwargs: Constructor arguments for every component (device=, differentiable=).

        Raises:
            ValueError: A malformed spec, or component_kwargs for a name not in the spec.
            KeyError: An unknown reward name (the message lists the valid names).
        """
        from noisear_rl.reward_models.registry import list_rewards, load_reward

        terms = parse_reward_spec(spec)
        names = [term.name for term in terms]
        valid = list_rewards()
        unknown = [name for name in names if name not in valid]
        if unknown:
            raise unknown_name("reward", unknown[0], valid, f" in spec {spec!r}")
        extra = sorted(set(component_kwargs or {}) - set(names))
        if extra:
            raise ValueError(f"component_kwargs given for {extra}, which are not in the spec {spec!r}")
        built = []
        for term in terms:
            options = {**kwargs, **(component_kwargs or {}).get(term.name, {})}
            try:
                reward = load_reward(term.name, **options)
            except TypeError as err:
                raise TypeError(
                    f"building {term.name!r} of reward spec {spec!r} with {sorted(options)} failed: {err}; "
                    f"pass options only one reward takes through component_kwargs={{{term.name!r}: {{...}}}}"
                ) from err
            built.append((term.name, term.weight, reward))
        return cls(built, normalize=normalize, differentiable=bool(kwargs.get("differentiable", False)))

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        total = torch.zeros(len(prompts), device=images.device)
        details: dict[str, Tensor] = {}
        for name, weight, reward in zip(self.names, self.weights, self.rewards):
            output = reward.evaluate(images, prompts)
            scores = output.scores.to(images.device, torch.float32)
            details[name] = scores
            details.update({f"{name}/{key}": value for key, value in output.details.items()})
            total = total + weight * scores
        if self.normalize == "per_prompt":
            details["unnormalized"] = total
            total = per_prompt_zscore(total, prompts)
        return RewardOutput(scores=total, details=details)

    def extra_repr(self) -> str:
        spec = ",".join(f"{name}:{weight:g}" for name, weight in zip(self.names, self.weights))
        return f"spec={spec!r}, normalize={self.normalize!r}"
