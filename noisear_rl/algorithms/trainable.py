"""Which parameters of the prior an update trains, and the frozen reference it is held near."""

from __future__ import annotations

import copy

import torch

from noisear_rl.prior.model import NoiseARPrior


def select_trainable(prior: NoiseARPrior, trainable: str) -> list[torch.nn.Parameter]:
    """Turns gradients on for the parameters `trainable` names ("all"; "prompt-shift": the shift's
    maps, not its gain; "shift-gain": the gain alone) and off for the others; returns the
    trainable ones. For "prompt-shift", a prior without a prompt shift gets a zero one first.

    Raises:
        ValueError: An unknown name, or "shift-gain" for a prior whose prompt shift is absent or
            zero (a gain of nothing cannot change the distribution).
    """
    if trainable == "all":
        prior.requires_grad_(True)
        return list(prior.parameters())
    if trainable not in ("prompt-shift", "shift-gain"):
        raise ValueError(f"trainable must be 'all', 'prompt-shift' or 'shift-gain', got {trainable!r}")
    if trainable == "shift-gain" and not has_fitted_shift(prior):
        raise ValueError("trainable 'shift-gain' (the default) needs a prior whose prompt shift has been fitted "
                         "(the Shapes world's shipped prior, or one from --algo nll --nll.trainable prompt-shift); "
                         "to train a shift from zero instead pass --ALGO.trainable prompt-shift --ALGO.lr 3e-3 "
                         "(and --dpo.kl-coef 0.01 or --reinforce.kl-coef 0.3)")
    if prior.prompt_shift is None:
        prior.add_prompt_shift()
    prior.requires_grad_(False)
    gain = prior.prompt_shift.gain
    if trainable == "shift-gain":
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
