"""Preference optimisation from rollouts, the NoiseAR paper's recipe (section 3.2), online or offline.

Each iteration (a round): K rollouts per prompt are scored by the reward; each prompt's best
rollout is paired with its worst (with `pairs_per_prompt` > 1, also its second best with its
second worst, and so on), and a pair is kept when its reward gap exceeds a threshold. The prior
is then trained on the pairs with one of two objectives:

- "dpo": the DPO sigmoid loss against a frozen reference prior (the prior at the start of
  training), log-probs summed over patches, optionally plus a closed-form KL to the reference
  (a trust region the sigmoid loss lacks, needed when more than the shift's gain trains);
- "simple-nll": the paper's choice, the prior's own NLL objective on the preferred noise alone.

Online (the default), every round's pairs update the prior before the next round collects.
Offline (`offline=True`), the pairs of every round are kept and the prior is trained on all of
them once, after the last round: every rollout comes from the starting prior, as in the paper,
and a round holds only its own rollouts in memory. `--dpo.preset paper` is the paper's recipe:

    python -m noisear_rl.train --algo dpo --dpo.preset paper --env NoiseAR-SDXL-v0 \
        --prior PRIOR --temperature 0.5 --reward imagereward:1.0,pickscore:1.0 \
        --train-prompts pickapic_train.txt --device cuda

(docs/fidelity.md: what the preset sets, and where it differs from the paper.)
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from noisear_rl.algorithms.base import Algorithm, RolloutConfig, check_rollouts, register_algorithm
from noisear_rl.algorithms.losses import best_worst_pairs, dpo_loss
from noisear_rl.checks import check_at_least, check_finite, check_positive, option_name
from noisear_rl.envs.rollout import Episodes, RolloutBatch
from noisear_rl.pipelines.base import Condition
from noisear_rl.prior.model import NoiseARPrior

PAPER_PRESET: dict[str, Any] = {
    "objective": "simple-nll",  # "For training, we use only simple NLL loss."
    "offline": True,  # pairs from the NLL-pretrained prior's rollouts, then training
    "iterations": 40,  # 40 rounds x 50 prompts = the paper's 2,000 prompts
    "prompts_per_iteration": 50,
    "rollouts_per_prompt": 20,  # "we generated 20 image samples through separate rollouts"
    "score_gap": 3.0,  # "exceeded a threshold of 3.0"
    "epochs": 1,  # one pass over the pairs
    "minibatch_size": 40,  # the paper's NLL training batch (appendix E.1.2)
    "lr": 6.25e-5,  # the paper's NLL training learning rate (appendix E.1.2)
    "trainable": "all",  # the paper fine-tunes the whole prior
}
"""The NoiseAR paper's offline DPO (section 3.2); the last two values are its NLL training's, since
the paper gives none for DPO."""
PRESETS: dict[str, dict[str, Any]] = {"none": {}, "paper": PAPER_PRESET}


@dataclass
class DPOConfig(RolloutConfig):
    """Online or offline DPO (or the paper's simple NLL) on best-vs-worst pairs of rollouts."""

    preset: Literal["none", "paper"] = "none"
    """"paper": the NoiseAR paper's offline recipe: 2,000 prompts (40 rounds of 50) x 20 rollouts,
    best-vs-worst pairs with a reward gap above 3.0, one pass of the simple NLL loss on the
    preferred noises (minibatch 40, lr 6.25e-5). Options left at their plain defaults take the
    preset's values; an option given another value keeps it (so `--dpo.iterations 4` shortens
    the recipe, but `--dpo.objective dpo`, the plain default, cannot undo the preset's objective:
    drop the preset and give the options instead)."""
    prompts_per_iteration: int = 64
    """Prompts a round. DPO learns from one pair of each prompt, so it gets more pairs from more
    prompts with fewer rollouts each: 64 x 4 costs what the other algorithms' 32 x 8 does (256
    images a round) and gave DPO larger, steadier gains on the Shapes world (docs/results_v1_first_chain.md)."""
    rollouts_per_prompt: int = 4
    """Rollouts of each prompt a round: the candidates its best-vs-worst pair is drawn from."""
    lr: float = 5e-2
    """Adam learning rate: the gain moves at most about this much an optimizer step, and DPO takes
    a few dozen steps a round (12 passes over 20-40 pairs); for the prompt shift's maps, 3e-3."""
    objective: Literal["dpo", "simple-nll"] = "dpo"
    """"dpo": sigmoid loss against the frozen reference; "simple-nll": NLL of the preferred noise (the paper)."""
    offline: bool = False
    """Keep every round's pairs and train on all of them once, after the last round (the paper:
    all rollouts come from the starting prior); False: train on each round's pairs (online)."""
    beta: float = 0.01
    """DPO inverse temperature: scales the log-ratio margins (log-probs of whole noises are large,
    hundreds of nats, so beta is small)."""
    score_gap: float = 0.25
    """Keep a pair only when best - worst reward exceeds this. The paper used 3.0 on its composite
    reward's scale; the Shapes verifier scores in [0, 1], where 0.25 means one more check passed
    out of four for a one-object prompt."""
    pairs_per_prompt: int = 1
    """Pairs from each prompt's rollouts: its i-th best against its i-th worst for i below this
    (1: the paper's best-vs-worst pair; at most rollouts_per_prompt // 2, which uses every rollout)."""
    epochs: int = 12
    """Passes over each round's pairs (offline: over all pairs)."""
    minibatch_size: int = 16
    """Pairs per optimizer step."""
    recon_weight: float = 0.2
    """simple-nll only: weight of the prior's reconstruction term (as in pretraining)."""
    kl_coef: float = 0.0
    """dpo only: weight of the closed-form KL(prior || reference) of the pairs' patch Gaussians
    (summed over the noise, like the log-probs); 0 (the default) turns the term off. With the
    default `trainable="shift-gain"` none is needed: both noises of a pair share their prompt's
    shift, so the margin is linear in the gain and the sigmoid loss has a finite optimum (a
    logistic regression on one number; with "gain-temperature" likewise on the two knobs, whose
    stds are fixed); a KL term there only holds the gain back (0.01 kept it
    near 1.3, 0.001 near 2.2 on the first v1 weights, docs/results_v1_first_weights.md). Training
    more than the gain needs one: the sigmoid loss can raise a pair's margin by blowing variances
    up (an unregularised run with every parameter training reached std 1e29 in four rounds): use
    0.01."""

    def check(self, prefix: str = "") -> None:
        """The rollout ranges and DPO's own (passes, minibatches, beta, term weights)."""
        super().check(prefix)
        check_at_least(self, 1, ("epochs", "minibatch_size", "pairs_per_prompt"), prefix)
        if self.pairs_per_prompt > self.rollouts_per_prompt // 2:
            raise ValueError(f"{option_name('pairs_per_prompt', prefix)} ({self.pairs_per_prompt}) must be at most "
                             f"{option_name('rollouts_per_prompt', prefix)} // 2 ({self.rollouts_per_prompt // 2})")
        check_positive(self, ("beta",), prefix)
        check_finite(self, ("kl_coef", "recon_weight"), prefix, minimum=0.0)
        check_finite(self, ("score_gap",), prefix)
        if self.objective == "simple-nll" and self.trainable == "gain-temperature":
            raise ValueError(f"{option_name('objective', prefix)} simple-nll fits the preferred noises' density, which the "
                             f"sampling knobs do not change: pass {option_name('trainable', prefix)} shift-gain or all")

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) == defaults[name]:
                setattr(self, name, value)


@dataclass(frozen=True)
class PreferencePairs:
    """Preferred and rejected noises [P, C, H, W] of P pairs, the condition the prior read for
    each (`Condition.embeds` only: all the prior needs), and with sampling knobs the two
    episodes' draws [P, 2]."""

    chosen: Tensor
    rejected: Tensor
    cond: Condition
    chosen_knobs: Tensor | None = None
    rejected_knobs: Tensor | None = None

    def __len__(self) -> int:
        return self.chosen.shape[0]

    def _map(self, fn: Any) -> PreferencePairs:
        knobs = [None if k is None else fn(k) for k in (self.chosen_knobs, self.rejected_knobs)]
        return PreferencePairs(fn(self.chosen), fn(self.rejected), fn(self.cond), *knobs)

    def __getitem__(self, index: Tensor | slice) -> PreferencePairs:
        return self._map(lambda x: x[index])

    def to(self, device: torch.device | str) -> PreferencePairs:
        return self._map(lambda x: x.to(device))

    @staticmethod
    def cat(parts: list[PreferencePairs]) -> PreferencePairs:
        knobs = parts[0].chosen_knobs is not None
        return PreferencePairs(
            torch.cat([p.chosen for p in parts]),
            torch.cat([p.rejected for p in parts]),
            Condition.cat([p.cond for p in parts]),
            torch.cat([p.chosen_knobs for p in parts]) if knobs else None,  # type: ignore[misc]
            torch.cat([p.rejected_knobs for p in parts]) if knobs else None,  # type: ignore[misc]
        )


@register_algorithm("dpo")
class DPO(Algorithm):
    """Pairs each prompt's best rollout with its worst and raises the preferred noise's likelihood.

    Attributes:
        pending: Offline: the pairs collected so far, every process's (each process trains on its
            share at the end); checkpointed with the algorithm's state.
        rounds_collected: Offline: rounds whose pairs are in `pending`.
    """

    config_class = DPOConfig
    config: DPOConfig

    def __init__(
        self, config: DPOConfig, prior: NoiseARPrior, temperature: float = 1.0, accelerator: Any | None = None
    ) -> None:
        super().__init__(config, prior, temperature, accelerator)
        if config.objective == "dpo" and config.trainable not in ("shift-gain", "gain-temperature") and config.kl_coef == 0:
            warnings.warn(f"DPO with trainable={config.trainable!r} and kl_coef=0 has no trust region (the sigmoid loss "
                          "can blow variances up); pass --dpo.kl-coef 0.01", stacklevel=2)
        self.pending: list[PreferencePairs] = []
        self.rounds_collected = 0

    @staticmethod
    def uses_reference(config: DPOConfig) -> bool:
        return config.objective == "dpo"

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        config = self.config
        check_rollouts(batch, config.rollouts_per_prompt)
        self.prior.eval()  # no dropout: log-probs are those of the policy that acts

        # 1. Preference pairs: i-th best vs i-th worst rollout of each prompt, when the gap is large enough.
        chosen, rejected = best_worst_pairs(
            batch.rewards, config.rollouts_per_prompt, config.score_gap, config.pairs_per_prompt
        )
        knobs = batch.knobs
        pairs = PreferencePairs(batch.noise[chosen], batch.noise[rejected], Condition(batch.cond.embeds[chosen]),
                                None if knobs is None else knobs[chosen], None if knobs is None else knobs[rejected])
        gaps = batch.rewards.reshape(-1, config.rollouts_per_prompt)
        round_metrics = {
            "pairs": float(len(pairs)),
            "pair_gap": float((batch.rewards[chosen] - batch.rewards[rejected]).mean()) if len(pairs) else 0.0,
            "group_gap": float((gaps.max(1).values - gaps.min(1).values).mean()),
        }

        # 2. Offline: keep the pairs (every process's) until the last round, then train on them all.
        if config.offline:
            self.pending.append(self._gather(pairs))
            self.rounds_collected += 1
            if self.rounds_collected < config.iterations:
                self.step_schedule()
                return {**round_metrics, "pending_pairs": float(sum(len(p) for p in self.pending))}
            collected = PreferencePairs.cat(self.pending)
            self.pending, self.rounds_collected = [], 0
            rank, processes = self.process_info()
            pairs = collected[slice(rank, None, processes)].to(self.prior.device)
            round_metrics["trained_pairs"] = float(len(collected))

        metrics = self._train(pairs)
        self.step_schedule()
        return {**metrics, **round_metrics}

    def _train(self, pairs: PreferencePairs) -> dict[str, float]:
        """`epochs` passes of minibatch updates on `pairs` (this process's)."""
        config = self.config
        noise_c, noise_r, cond = pairs.chosen, pairs.rejected, pairs.cond

        # The reference's log-probs and patch Gaussians (for the KL term) are fixed for the update.
        # With knobs, the pair's two episodes are scored by the density of their draws.
        chosen, rejected = Episodes(noise_c, cond, pairs.chosen_knobs), Episodes(noise_r, cond, pairs.rejected_knobs)
        if self.has_reference and len(pairs):
            ref_c, ref_r = self.reference_log_probs(chosen), self.reference_log_probs(rejected)
            ref_params_c, ref_params_r = self.reference_params(chosen), self.reference_params(rejected)

        def loss_fn(idx: Tensor) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
            if config.objective != "dpo":
                return self.prior.nll_loss(noise_c[idx], cond[idx].embeds, recon_weight=config.recon_weight)
            logp_c, params_c = self.episode_log_probs(chosen, idx)
            logp_r, params_r = self.episode_log_probs(rejected, idx)
            terms = dpo_loss(logp_c, logp_r, ref_c[idx], ref_r[idx], config.beta)
            metrics = {"reward_margin": terms.reward_margin, "accuracy": terms.accuracy,
                       "chosen_reward": terms.chosen_reward, "rejected_reward": terms.rejected_reward}
            if config.kl_coef > 0:
                kl = 0.5 * (self.kl_to_reference(params_c, ref_params_c, idx) + self.kl_to_reference(params_r, ref_params_r, idx)).mean()
                return terms.loss + config.kl_coef * kl, {**metrics, "kl_to_reference": kl}
            return terms.loss, metrics

        return self.fit_minibatches(len(pairs), loss_fn, config.minibatch_size, config.epochs)

    # ----------------------------------------------------------------------------- offline
    def _gather(self, pairs: PreferencePairs) -> PreferencePairs:
        """Every process's pairs of this round, in process order, on the CPU (so that each process,
        and the main process's checkpoint, holds them all)."""
        local = pairs.to("cpu")
        if self.process_info()[1] == 1:
            return local
        from accelerate.utils import gather_object

        return PreferencePairs.cat(gather_object([local]))

    def state_dict(self) -> dict[str, Any]:
        """The base state, and offline the pairs collected so far."""
        state = super().state_dict()
        if self.config.offline:
            pending = PreferencePairs.cat(self.pending) if self.pending else None
            state["offline"] = {
                "rounds_collected": self.rounds_collected,
                "pairs": None if pending is None else {
                    "chosen": pending.chosen, "rejected": pending.rejected, "embeds": pending.cond.embeds,
                    "chosen_knobs": pending.chosen_knobs, "rejected_knobs": pending.rejected_knobs,
                },
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""
        super().load_state_dict(state)
        if self.config.offline:
            if "offline" not in state:
                raise KeyError("the checkpoint holds no offline DPO pairs, but this config collects them (offline=True)")
            offline = state["offline"]
            self.rounds_collected = int(offline["rounds_collected"])
            saved = offline["pairs"]
            self.pending = [] if saved is None else [
                PreferencePairs(saved["chosen"], saved["rejected"], Condition(saved["embeds"]),
                                saved.get("chosen_knobs"), saved.get("rejected_knobs"))
            ]
