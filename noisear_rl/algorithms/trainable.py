"""Which parameters of the prior an update trains, and the frozen reference it is held near."""

from __future__ import annotations

import copy
from typing import Any

import torch

from noisear_rl.prior.model import NoiseARPrior


SHIFT_MAP_LR = 3e-3
"""Adam learning rate measured for training a prompt shift's maps from zero (the defaults before the gain)."""
SHIFT_MAP_KL: dict[str, float] = {"dpo": 0.01, "ppo": 0.05, "grpo": 0.04, "reinforce": 0.3}
"""KL weights measured with it, for the algorithms whose defaults are set for the gain instead."""


def shift_map_settings(algo: str) -> dict[str, Any]:
    """The config overrides that train a prompt shift's maps from zero with algorithm `algo`
    (what a prior without a fitted shift needs instead of the default gain)."""
    kl = {"kl_coef": SHIFT_MAP_KL[algo]} if algo in SHIFT_MAP_KL else {}
    return {"trainable": "prompt-shift", "lr": SHIFT_MAP_LR, **kl}


def select_trainable(prior: NoiseARPrior, trainable: str) -> list[torch.nn.Parameter]:
    """Turns gradients on for the parameters `trainable` names ("all"; "prompt-shift": the shift's
    maps, not its gain; "shift-gain": the gain alone; "gain-temperature": the gain, the prior's
    part of `SamplingKnobs`) and off for the others; returns the trainable ones. For
    "prompt-shift", a prior without a prompt shift gets a zero one first.

    Raises:
        ValueError: An unknown name, or "shift-gain" for a prior whose prompt shift is absent or
            zero (a gain of nothing cannot change the distribution).
    """
    if trainable == "all":
        prior.requires_grad_(True)
        return list(prior.parameters())
    if trainable not in ("prompt-shift", "shift-gain", "gain-temperature"):
        raise ValueError(f"trainable must be 'all', 'prompt-shift', 'shift-gain' or 'gain-temperature', got {trainable!r}")
    if trainable in ("shift-gain", "gain-temperature") and not has_fitted_shift(prior):
        lr = f"{SHIFT_MAP_LR:.0e}".replace("e-0", "e-")  # 3e-3, as a user types it
        flags = [f"--{algo}.kl-coef {weight}" for algo, weight in SHIFT_MAP_KL.items()]
        kl = f"{', '.join(flags[:-1])} or {flags[-1]}"
        raise ValueError(f"trainable {trainable!r} needs a prior whose prompt shift has been fitted "
                         "(the Shapes world's shipped prior, or one from --algo nll --nll.trainable prompt-shift); "
                         f"to train a shift from zero instead pass --ALGO.trainable prompt-shift --ALGO.lr {lr} with its KL weight ({kl})")
    if prior.prompt_shift is None:
        prior.add_prompt_shift()
    prior.requires_grad_(False)
    gain = prior.prompt_shift.gain
    if trainable in ("shift-gain", "gain-temperature"):
        gain.requires_grad_(True)
        return [gain]
    prior.prompt_shift.requires_grad_(True)
    gain.requires_grad_(False)  # the maps' own scale already sets the length
    return [p for p in prior.prompt_shift.parameters() if p is not gain]


def has_fitted_shift(prior: NoiseARPrior) -> bool:
    """Whether `prior` has a prompt shift whose output maps are not all zero."""
    shift = prior.prompt_shift
    return shift is not None and bool(shift.out_weight.any() or shift.out_bias.any())


def frozen_copy(prior: NoiseARPrior) -> NoiseARPrior:
    """A copy of `prior` in eval mode with gradients off (the reference policy)."""
    reference = copy.deepcopy(prior).eval()
    reference.requires_grad_(False)
    return reference
