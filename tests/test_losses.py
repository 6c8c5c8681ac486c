"""The algorithms' pure loss functions against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from noisear_rl.algorithms.losses import (
    best_worst_pairs,
    dpo_loss,
    leave_one_out_advantages,
    per_prompt_normalize,
    ppo_clip_loss,
    reinforce_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_dpo_loss_by_hand():
    # beta (pi - ref): chosen [0.5, 0], rejected [-0.5, 0.5]; margins [1, -0.5].
    terms = dpo_loss(t(-1, -2), t(-3, -1), t(-2, -2), t(-2, -2), beta=0.5)
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert terms.loss.item() == pytest.approx(expected, abs=1e-6)
    assert terms.chosen_reward.item() == pytest.approx(0.25)
    assert terms.rejected_reward.item() == pytest.approx(0.0)
    assert terms.reward_margin.item() == pytest.approx(0.25)
    assert terms.accuracy.item() == pytest.approx(0.5)


def test_dpo_loss_is_log2_at_the_reference_and_pushes_the_margin_up():
    policy_c = t(-5.0, -7.0).requires_grad_()
    policy_r = t(-6.0, -4.0).requires_grad_()
    terms = dpo_loss(policy_c, policy_r, policy_c.detach(), policy_r.detach(), beta=0.1)
    assert terms.loss.item() == pytest.approx(math.log(2.0))
    terms.loss.backward()
    # d/d pi_c of -log sigmoid(beta m) at m = 0 is -beta / 2, averaged over 2 pairs.
    assert torch.allclose(policy_c.grad, torch.full((2,), -0.1 / 2 / 2))
    assert torch.allclose(policy_r.grad, torch.full((2,), 0.1 / 2 / 2))


def test_ppo_clip_loss_by_hand():
    new = torch.log(t(1.5, 0.5, 1.1)).requires_grad_()
    terms = ppo_clip_loss(new, torch.zeros(3), t(1.0, 1.0, -1.0), clip_range=0.2)
    # per element max(-A r, -A clip(r)): max(-1.5, -1.2) = -1.2; max(-0.5, -0.8) = -0.5; 1.1.
    assert terms.loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3, abs=1e-6)
    assert terms.clip_fraction.item() == pytest.approx(2 / 3)
    kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))) / 3
    assert terms.approx_kl.item() == pytest.approx(kl, abs=1e-6)
    assert terms.ratio_mean.item() == pytest.approx(3.1 / 3, abs=1e-6)
    terms.loss.backward()
    # Clipped (ratio 1.5, A > 0) gives no gradient; the others d(-A r)/d log r = -A r / 3.
    assert torch.allclose(new.grad, t(0.0, -0.5 / 3, 1.1 / 3), atol=1e-6)


def test_ppo_clip_loss_broadcasts_episode_advantages_over_patches():
    new = torch.zeros(2, 3)
    terms = ppo_clip_loss(new, torch.zeros(2, 3), t(2.0, -1.0), clip_range=0.2)
    assert terms.loss.item() == pytest.approx(-(2.0 - 1.0) / 2)
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip_loss(new, new, t(1.0, 2.0, 3.0), clip_range=0.2)


def test_reinforce_loss_by_hand():
    logp = t(-1.0, -2.0).requires_grad_()
    terms = reinforce_loss(logp, t(1.0, 3.0))
    assert terms.loss.item() == pytest.approx(-(1 * -1 + 3 * -2) / 2)
    assert terms.advantage_mean.item() == pytest.approx(2.0)
    terms.loss.backward()
    assert torch.allclose(logp.grad, t(-0.5, -1.5))


def test_per_prompt_normalize_by_hand():
    advantages = per_prompt_normalize(t(1.0, 2.0, 3.0, 2.0, 5.0), ["a", "b", "a", "b", "c"])
    # a: mean 2, population std 1 -> -1, +1; b: equal rewards -> 0; c: alone -> 0.
    assert torch.allclose(advantages, t(-1.0, 0.0, 1.0, 0.0, 0.0), atol=1e-5)
    with pytest.raises(ValueError, match="prompts"):
        per_prompt_normalize(t(1.0, 2.0), ["a"])


def test_leave_one_out_advantages_by_hand():
    advantages = leave_one_out_advantages(t(1.0, 2.0, 3.0, 0.0, 0.0, 6.0), group_size=3)
    # baselines: [2.5, 2, 1.5] and [3, 3, 0]
    assert torch.allclose(advantages, t(-1.5, 0.0, 1.5, -3.0, -3.0, 6.0))
    with pytest.raises(ValueError, match="groups of 4"):
        leave_one_out_advantages(t(1.0, 2.0, 3.0), group_size=4)


def test_best_worst_pairs_by_hand():
    rewards = t(0.1, 0.9, 0.5, 0.2, 0.3, 0.25, 1.0, 1.0, 0.0)
    chosen, rejected = best_worst_pairs(rewards, group_size=3, min_gap=0.5)
    # group 0: gap 0.8 kept (1 vs 0); group 1: gap 0.1 dropped; group 2: tie -> first best (6) vs 8.
    assert chosen.tolist() == [1, 6] and rejected.tolist() == [0, 8]
    assert chosen.dtype == torch.int64
    chosen, _ = best_worst_pairs(rewards, group_size=3, min_gap=0.8)  # strictly greater
    assert chosen.tolist() == [6]
    empty, _ = best_worst_pairs(rewards, group_size=3, min_gap=5.0)
    assert empty.numel() == 0


def test_ranked_pairs_pair_the_ith_best_with_the_ith_worst_by_hand():
    rewards = t(0.1, 0.9, 0.5, 0.2, 1.0, 1.0, 0.0, 0.0)
    chosen, rejected = best_worst_pairs(rewards, group_size=4, min_gap=0.25, pairs_per_group=2)
    # group 0 by rank: 1 (0.9), 2 (0.5), 3 (0.2), 0 (0.1): pairs (1, 0) gap 0.8 and (2, 3) gap 0.3;
    # group 1: ties go to the earlier rollout: (4, 6) and (5, 7). Rank 0 of every group first.
    assert chosen.tolist() == [1, 4, 2, 5] and rejected.tolist() == [0, 6, 3, 7]
    chosen, rejected = best_worst_pairs(rewards, group_size=4, min_gap=0.5, pairs_per_group=2)
    assert chosen.tolist() == [1, 4, 5] and rejected.tolist() == [0, 6, 7]
    one = best_worst_pairs(rewards, group_size=4, min_gap=0.25)
    assert [x.tolist() for x in one] == [[1, 4], [0, 6]]  # pairs_per_group=1: best vs worst
    used = torch.cat(best_worst_pairs(torch.rand(64), group_size=8, min_gap=-1.0, pairs_per_group=4))
    assert sorted(used.tolist()) == list(range(64))  # K // 2 pairs use every rollout once
    with pytest.raises(ValueError, match="pairs_per_group must be in 1..2"):
        best_worst_pairs(rewards, group_size=4, min_gap=0.0, pairs_per_group=3)


def test_kl_per_noise_sums_the_closed_form_kl_of_every_patch_element():
    from noisear_rl.algorithms.losses import kl_per_noise

    g = torch.Generator().manual_seed(0)
    mean, logvar, ref_mean = (torch.randn(3, 4, 5, generator=g) for _ in range(3))
    ref_logvar = torch.zeros(3, 4, 5)
    expected = 0.5 * (logvar.exp() - 1 - logvar + (mean - ref_mean) ** 2).sum((1, 2))
    torch.testing.assert_close(kl_per_noise((mean, logvar), (ref_mean, ref_logvar)), expected)
    assert torch.equal(kl_per_noise((mean, logvar), (mean, logvar)), torch.zeros(3))
