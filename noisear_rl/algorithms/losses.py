"""Pure loss functions and advantage estimators of the toolkit's algorithms.

Every function takes tensors and returns tensors (or a small dataclass of the terms worth
logging); none touches a model, an optimizer or global state, so each can be checked against
numbers computed by hand. Log-probabilities are of whole noises ([B], summed over patches) or
per patch ([B, T]); advantages broadcast over the trailing patch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from noisear_rl.prior.gaussian import gaussian_kl
from noisear_rl.reward_models.normalize import per_prompt_zscore


@dataclass(frozen=True)
class DPOLoss:
    """Terms of the DPO objective (means over pairs).

    Attributes:
        loss: -log sigmoid(beta * margin), the value to minimise.
        chosen_reward: beta * (log pi - log ref) of the preferred samples (DPO's implicit reward).
        rejected_reward: The same for the rejected samples.
        reward_margin: chosen_reward - rejected_reward.
        accuracy: Fraction of pairs whose implicit reward ranks the preferred sample higher.
    """

    loss: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor
    reward_margin: Tensor
    accuracy: Tensor


def dpo_loss(
    policy_logp_chosen: Tensor,
    policy_logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    beta: float,
) -> DPOLoss:
    """The DPO sigmoid loss (Rafailov et al. 2023) on [P] log-probs of P preference pairs.

    loss = -mean log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))).
    """
    chosen = beta * (policy_logp_chosen - ref_logp_chosen)
    rejected = beta * (policy_logp_rejected - ref_logp_rejected)
    margin = chosen - rejected
    return DPOLoss(
        loss=-F.logsigmoid(margin).mean(),
        chosen_reward=chosen.detach().mean(),
        rejected_reward=rejected.detach().mean(),
        reward_margin=margin.detach().mean(),
        accuracy=(margin.detach() > 0).float().mean(),
    )


@dataclass(frozen=True)
class PPOLoss:
    """Terms of the clipped surrogate (means over all ratio elements).

    Attributes:
        loss: The clipped policy-gradient loss to minimise.
        clip_fraction: Fraction of ratios outside [1 - clip_range, 1 + clip_range].
        approx_kl: Estimate of KL(old || new): mean of (ratio - 1) - log ratio (non-negative).
        ratio_mean: Mean probability ratio new / old.
    """

    loss: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor


def ppo_clip_loss(new_logp: Tensor, old_logp: Tensor, advantages: Tensor, clip_range: float) -> PPOLoss:
    """PPO's clipped surrogate (Schulman et al. 2017).

    Args:
        new_logp: [B] or [B, T] log-probs under the policy being optimised.
        old_logp: Same shape: log-probs under the policy that sampled the actions.
        advantages: [B] (broadcast over T) or the shape of `new_logp`.
        clip_range: epsilon; ratios are clipped to [1 - epsilon, 1 + epsilon].
    """
    advantages = _broadcast_like(advantages, new_logp)
    log_ratio = new_logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
    return PPOLoss(
        loss=torch.maximum(unclipped, clipped).mean(),
        clip_fraction=clip_fraction,
        approx_kl=approx_kl,
        ratio_mean=ratio.detach().mean(),
    )


def kl_per_noise(params: tuple[Tensor, Tensor], ref_params: tuple[Tensor, Tensor], temperature: float = 1.0) -> Tensor:
    """Closed-form KL(policy || reference) of each noise's patch Gaussians, summed over patches and
    elements: [B]. `params` and `ref_params` are (mean, logvar) [B, T, D] at the same noises."""
    return gaussian_kl(*params, *ref_params, temperature=temperature).sum((1, 2))


@dataclass(frozen=True)
class ReinforceLoss:
    """Terms of the REINFORCE objective.

    Attributes:
        loss: -mean(advantage * log-prob).
        advantage_mean: Mean advantage (near 0 with a good baseline).
    """

    loss: Tensor
    advantage_mean: Tensor


def reinforce_loss(logp: Tensor, advantages: Tensor) -> ReinforceLoss:
    """The score-function policy gradient: -mean(A * log pi(a)) with `advantages` held constant.

    Args:
        logp: [B] log-probs of whole episodes (or [B, T] per patch, advantages broadcast).
        advantages: [B] reward minus baseline.
    """
    advantages = _broadcast_like(advantages, logp).detach()
    return ReinforceLoss(loss=-(advantages * logp).mean(), advantage_mean=advantages.mean())


per_prompt_normalize = per_prompt_zscore
"""DDPO's per-prompt advantages: the rewards z-scored within each prompt's group (the one
implementation, `noisear_rl.reward_models.normalize.per_prompt_zscore`; its docstring says how
`eps` is used)."""


def leave_one_out_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """Reward minus the mean reward of the other rollouts of the same prompt (RLOO's baseline).

    Args:
        rewards: [N] rewards, the K = `group_size` rollouts of each prompt contiguous.
        group_size: K >= 2.
    """
    groups = _groups(rewards, group_size)
    if group_size < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 rollouts per prompt")
    baseline = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).reshape(-1)


def best_worst_pairs(
    rewards: Tensor, group_size: int, min_gap: float, pairs_per_group: int = 1
) -> tuple[Tensor, Tensor]:
    """Preference pairs by rank: per prompt, its i-th best rollout against its i-th worst for
    i < `pairs_per_group`, each kept when the pair's reward gap exceeds `min_gap` (strictly).
    With one pair per group this is the paper's best-vs-worst pair; more pairs use more of a
    group's rollouts (with K rollouts, K // 2 pairs use every one, none twice).

    Args:
        rewards: [N] rewards, the K = `group_size` rollouts of each prompt contiguous.
        group_size: K.
        min_gap: Keep a pair only if chosen - rejected > min_gap.
        pairs_per_group: Pairs per prompt, 1 to K // 2.

    Returns:
        (chosen, rejected): int64 [P] row indices into the N rollouts (P <= N / K x pairs), the
        pairs of rank 0 of every group first; ties go to the earlier rollout in the group.
    """
    groups = _groups(rewards, group_size)
    if not 1 <= pairs_per_group <= group_size // 2:
        raise ValueError(f"pairs_per_group must be in 1..{group_size // 2} (rollouts per prompt // 2), "
                         f"got {pairs_per_group}")
    best = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :pairs_per_group]
    worst = torch.sort(groups, dim=1, stable=True).indices[:, :pairs_per_group]
    gap = groups.gather(1, best) - groups.gather(1, worst)
    offsets = torch.arange(groups.shape[0], device=groups.device)[:, None] * group_size
    keep = (gap > min_gap).T.flatten()  # rank-major: every group's first pair, then the second ...
    return (offsets + best).T.flatten()[keep], (offsets + worst).T.flatten()[keep]


def _groups(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [N], got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size} rollouts per prompt")
    return rewards.float().reshape(-1, group_size)


def _broadcast_like(advantages: Tensor, logp: Tensor) -> Tensor:
    if advantages.shape == logp.shape:
        return advantages
    if advantages.ndim == 1 and logp.ndim == 2 and advantages.shape[0] == logp.shape[0]:
        return advantages[:, None]
    raise ValueError(f"advantages {tuple(advantages.shape)} do not match log-probs {tuple(logp.shape)}")
