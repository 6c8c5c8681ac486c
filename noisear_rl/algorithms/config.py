"""The settings every algorithm shares: optimisation (`OptimConfig`) and, for the algorithms that
learn from rollouts, the rounds and what trains (`RolloutConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from noisear_rl.checks import check_at_least, check_finite, check_positive


@dataclass
class OptimConfig:
    """Optimisation settings every algorithm has."""

    iterations: int = 100
    """Calls to `update`: rounds of collect-then-update for rollout algorithms, optimizer steps for nll."""
    lr: float = 1e-5
    """Adam learning rate (peak, after warm-up)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); 0 is plain Adam."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate decay over the iterations after warm-up."""
    warmup_iterations: int = 0
    """Iterations of linear learning-rate warm-up."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm (inf: no clipping)."""
    trainable: Literal["all", "prompt-shift", "shift-gain"] = "all"
    """Parameters the update changes: "all"; only the prior's prompt shift, a per-patch mean term
    read from the prompt alone, which cannot fit the earlier patches of each rollout (a prior
    without one gets a zero, patch-resolution one: `NoiseARPrior.add_prompt_shift`); or only that
    shift's gain, one number: how far to go along a shift NLL has already fitted."""

    def check(self, prefix: str = "") -> None:
        """Raises a ValueError naming the first option (as `{prefix}name`) outside its range.

        Subclasses extend it with their own options (calling `super().check(prefix)`).
        """
        check_at_least(self, 1, ("iterations",), prefix)
        check_at_least(self, 0, ("warmup_iterations",), prefix)
        check_positive(self, ("lr",), prefix)
        check_positive(self, ("max_grad_norm",), prefix, allow_inf=True)
        check_finite(self, ("weight_decay",), prefix, minimum=0.0)


@dataclass
class RolloutConfig(OptimConfig):
    """Settings of algorithms that learn from rollouts of the prior in the environment."""

    iterations: int = 6
    """Rounds of collect-then-update."""
    prompts_per_iteration: int = 32
    """Training prompts per round (split across processes)."""
    rollouts_per_prompt: int = 8
    """K rollouts per prompt, compared with each other (best-vs-worst pairs, per-prompt baselines; K >= 2)."""
    lr: float = 2e-2
    """Adam learning rate (peak, after warm-up); high, because by default two numbers train (the
    shift's gain, whose useful range is 1 to several, and the log temperature). Training the
    prompt shift's maps: 3e-3."""
    trainable: Literal["all", "prompt-shift", "shift-gain", "gain-temperature"] = "gain-temperature"  # type: ignore[assignment]
    """"gain-temperature" (the default): the gain of a prompt shift NLL has fitted and the
    sampling temperature, each episode drawing its own around their current values
    (`SamplingKnobs`; the update learns from the draws, not from the patches' noise, which
    carries almost none of the temperature's signal: `benchmarks/sampling_knobs.py`). From the
    shipped prior it raises every algorithm's held-out success on its own check (seed 0: +11.5
    to +17.2 points with the defaults, each interval above zero; docs/results.md). "shift-gain": the gain alone, learned
    through the patches (the default until 2026-12-07: +23 to +28 points on the first v1
    weights, whose shift was short; 0 to +4 on the second); "prompt-shift": the shift's
    maps (12K parameters; what a prior without a fitted shift can train, with lr 3e-3); "all"
    (every parameter; use a far lower lr)."""
    gain_exploration: float = 1.0
    """"gain-temperature": std of an episode's shift gain around the current gain."""
    temperature_exploration: float = 0.3
    """"gain-temperature": std of an episode's log temperature around the current one."""

    def check(self, prefix: str = "") -> None:
        """The base ranges, at least one prompt per round and K >= 2 rollouts of each (pairs,
        per-prompt baselines and advantages compare a prompt's rollouts with each other)."""
        super().check(prefix)
        check_at_least(self, 1, ("prompts_per_iteration",), prefix)
        check_at_least(self, 2, ("rollouts_per_prompt",), prefix)
        check_positive(self, ("gain_exploration", "temperature_exploration"), prefix)
