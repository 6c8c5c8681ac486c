"""Per-prompt reward normalisation, the one implementation that `CompositeReward(normalize=
"per_prompt")` and the RL algorithms' advantages (`algorithms.losses.per_prompt_normalize`) share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def per_prompt_zscore(scores: Tensor, prompts: Sequence[str], eps: float = 1e-6) -> Tensor:
    """Z-scores `scores` [N] within each group of equal prompts (DDPO's per-prompt normalisation).

    Each score minus its prompt's mean, divided by its prompt's population std clamped below at
    `eps`. Clamping, not adding `eps`, standardises a group with a real spread exactly (adding it
    would shrink every value by std / (std + eps)) and still sends a group of equal scores to 0
    instead of dividing by zero. A prompt seen once gets 0: there is nothing to compare it to.
    Prompts need not be contiguous; gradients flow through `scores`.

    Raises:
        ValueError: `scores` is not [N] for the N prompts.
    """
    if scores.ndim != 1 or len(prompts) != scores.shape[0]:
        raise ValueError(f"need scores [N] and N prompts, got {tuple(scores.shape)} and {len(prompts)} prompts")
    scores = scores if scores.is_floating_point() else scores.float()
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    normalized = torch.zeros_like(scores)
    for indices in groups.values():
        index = torch.tensor(indices, device=scores.device)
        group = scores[index]
        normalized[index] = (group - group.mean()) / group.std(unbiased=False).clamp_min(eps)
    return normalized
