"""What every algorithm shares: the registry, the base configs, and the `Algorithm` base class.

An algorithm is a config dataclass and a class registered with `@register_algorithm("name")`:

    @dataclass
    class MyConfig(RolloutConfig):
        epochs: int = 2
        '''Passes over each round's rollouts.'''
        minibatch_size: int = 16
        '''Rollouts per optimizer step.'''

    @register_algorithm("mine")
    class Mine(Algorithm):
        config_class = MyConfig

        def update(self, batch: RolloutBatch) -> dict[str, float]:
            advantages = batch.rewards - batch.rewards.mean()

            def loss(index: Tensor) -> Tensor:  # the mean loss over the rollouts at `index`
                logp, _ = self.episode_log_probs(batch, index)
                return -(advantages[index] * logp).mean()

            metrics = self.fit_minibatches(len(batch), loss, self.config.minibatch_size, self.config.epochs)
            self.step_schedule()
            return metrics  # "loss", "grad_norm"

The training loop (`noisear_rl.train`) asks the algorithm once for its rounds' data
(`round_data`: rollouts of the training prompts by default; nll overrides it with golden-noise
pairs), then at every iteration calls that round, passes its batch to `update`, logs,
checkpoints and evaluates. `examples/extending/my_algorithm.py` is a whole example. Third-party
packages register algorithms through the entry-point group `noisear_rl.algorithms`.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from noisear_rl.algorithms.config import OptimConfig, RolloutConfig  # noqa: F401  (re-exported: algorithms subclass them from here)
from noisear_rl.algorithms.context import FreshPrior, Round, TrainingContext, rollout_round
from noisear_rl.algorithms.losses import kl_per_noise
from noisear_rl.algorithms.trainable import frozen_copy, select_trainable
from noisear_rl.checks import option_name
from noisear_rl.envs.rollout import Episodes, RolloutBatch
from noisear_rl.schedules import warmup_cosine
from noisear_rl.pipelines.base import Condition
from noisear_rl.prior.knobs import SamplingKnobs
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.registry import Registry

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", "noisear_rl.algorithms", package="noisear_rl.algorithms")


def register_algorithm(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator registering an `Algorithm` subclass under `name`."""

    def decorator(cls: type[Algorithm]) -> type[Algorithm]:
        cls.name = name
        return ALGORITHMS.register(name)(cls)

    return decorator


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class registered as `name`.

    Raises:
        KeyError: Unknown name; the message lists the valid names.
    """
    return ALGORITHMS.get(name)


def list_algorithms() -> list[str]:
    """Names of the built-in (every module of this package), registered and entry-point algorithms."""
    return ALGORITHMS.names()


class Algorithm(ABC):
    """Optimises a `NoiseARPrior` in place; subclasses implement `update`, and one that learns
    from other data than rollouts overrides `round_data` (and `check_inputs`, `fresh_prior`).

    Args:
        config: The algorithm's config (an instance of `config_class`).
        prior: The prior to optimise (the policy).
        temperature: The policy's sampling temperature: log-probs are computed under it.
        accelerator: An `accelerate.Accelerator` for multi-process training (None: one process).

    Attributes:
        has_reference: `uses_reference(config)`: the update holds the policy near its start.
        reference: A frozen copy of the prior at construction, when it has a reference and the
            knobs do not train (theirs is `reference_knobs`, the search distribution's start).
        knobs: The sampling knobs with `trainable="gain-temperature"`, else None.
        optimizer: Adam(W) over the prior's trainable parameters (`config.trainable`; the others
            get `requires_grad=False`).
        scheduler: Per-iteration learning-rate schedule (warm-up, then constant or cosine).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type]
    uses_rollouts: ClassVar[bool] = True
    """True: `update` takes a `RolloutBatch` (the default `round_data`); False: it takes what its
    own `round_data` makes (nll: golden-noise pairs, `GoldenBatch`)."""

    def __init__(
        self,
        config: Any,
        prior: NoiseARPrior,
        temperature: float = 1.0,
        accelerator: Any | None = None,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.prior = prior
        self._temperature = temperature
        self.accelerator = accelerator
        trainable = select_trainable(prior, config.trainable)  # may add a zero prompt shift: before the copy
        self.knobs = None
        if config.trainable == "gain-temperature":
            self.knobs = SamplingKnobs(prior, temperature, config.gain_exploration, config.temperature_exploration)
            trainable.append(self.knobs.log_temperature)
        self.trained_parameters: list[torch.nn.Parameter] = trainable
        self.has_reference = self.uses_reference(config)
        # With knobs the reference is the search distribution's starting mean: no copy of the prior.
        self.reference = frozen_copy(prior) if self.has_reference and self.knobs is None else None
        self.reference_knobs = None if self.knobs is None else self.knobs.mean().detach().clone()
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)

    @staticmethod
    def uses_reference(config: Any) -> bool:
        """Whether the algorithm needs a frozen reference prior with this config."""
        return False

    @abstractmethod
    def update(self, batch: Any) -> dict[str, float]:
        """One iteration of optimisation on `batch`; returns metrics to log (floats)."""

    # ------------------------------------------------------------------------ what a round needs
    @classmethod
    def check_inputs(cls, config: Any, data: str | None, num_processes: int, prefix: str = "--") -> None:
        """Raises a ValueError naming the fix when the run cannot give this algorithm its data;
        called before any model is loaded. Here (rollouts): each round's prompts must split evenly
        over the processes."""
        if config.prompts_per_iteration % num_processes:
            raise ValueError(f"{option_name('prompts_per_iteration', prefix)} ({config.prompts_per_iteration}) must be "
                             f"divisible by the number of processes ({num_processes})")

    @classmethod
    def fresh_prior(cls, config: Any) -> FreshPrior | None:
        """How to make a new prior for a run that names none (nll); None: the run starts from the
        env's embedded world's shipped prior (and needs --prior without one)."""
        return None

    def round_data(self, context: TrainingContext) -> Round:
        """What each iteration's `update` learns from: iteration -> (this process's batch, on the
        prior's device; metrics of that data), asked for once before the first iteration. Here:
        rollouts of the current prior (`rollout_round`), a `RolloutBatch` for `update`."""
        return rollout_round(self, context)

    def process_info(self) -> tuple[int, int]:
        """(this process's index, the number of processes); (0, 1) without an accelerator."""
        if self.accelerator is None:
            return 0, 1
        return self.accelerator.process_index, self.accelerator.num_processes

    # --------------------------------------------------------------------------------- helpers
    @property
    def temperature(self) -> float:
        """The policy's sampling temperature: fixed, or with `trainable="gain-temperature"` the
        knobs' current one."""
        return self._temperature if self.knobs is None else self.knobs.temperature

    def log_prob_and_params(
        self, model: NoiseARPrior, noise: Tensor, cond: Condition, per_patch: bool = False
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Log-probs at the policy's temperature, of whole noises [B] (or per patch [B, T]), and
        the teacher-forced patch Gaussians (mean, logvar) [B, T, D] they come from, in one pass."""
        mean, logvar = model.patch_params(noise, cond.embeds)
        logp = model.patch_log_prob(noise, mean, logvar, self.temperature)
        return (logp if per_patch else logp.sum(-1)), (mean, logvar)

    def policy_metrics(self) -> dict[str, float]:
        """The policy's sampling temperature and, for a prior with a prompt shift, its gain (what
        the default RL settings train), to log every iteration."""
        metrics = {"temperature": self.temperature}
        if self.prior.prompt_shift is not None:
            metrics["shift_gain"] = float(self.prior.prompt_shift.gain.detach())
        return metrics

    # Episodes' log-probs and the KL to the reference, through the patches or (knobs) the draws.
    def episode_log_probs(self, batch: RolloutBatch | Episodes, index: Tensor, per_patch: bool = False) -> tuple[Tensor, Any]:
        """The current policy's log-probs of the episodes at `index` ([B], or [B, T] per patch), and
        what `kl_to_reference` needs of them. With knobs: the log-density of each episode's draw
        ([B], or [B, 1]): the patches' density given the draw does not depend on what trains."""
        if self.knobs is not None:
            logp = self.knobs.log_prob(knob_draws(batch)[index])
            return (logp[:, None] if per_patch else logp), None
        return self.log_prob_and_params(self.prior, batch.noise[index], batch.cond[index], per_patch)

    def sampling_log_probs(self, batch: RolloutBatch, per_patch: bool = False) -> Tensor:
        """The log-probs of every episode under the policy that sampled it (the current one, before
        this update's first step), detached; shaped as `episode_log_probs`'."""
        if self.knobs is not None:
            with torch.no_grad():
                logp = self.knobs.log_prob(knob_draws(batch))
            return logp[:, None] if per_patch else logp
        return (batch.log_probs if per_patch else batch.log_probs.sum(1)).detach()

    def reference_log_probs(self, batch: RolloutBatch | Episodes) -> Tensor:
        """[B] the frozen reference's log-probs of every episode (with knobs: of its draw under
        the search distribution's starting mean)."""
        with torch.no_grad():
            if self.knobs is not None:
                return self.knobs.log_prob(knob_draws(batch), mean=self.reference_knobs)
            return self.log_prob_and_params(self.reference, batch.noise, batch.cond)[0]

    def reference_params(self, batch: RolloutBatch | Episodes) -> Any:
        """What `kl_to_reference` needs of the frozen reference for the whole batch (its teacher-
        forced patch Gaussians; None with knobs, whose reference is their starting mean)."""
        if self.reference is None:  # none kept, or knobs (whose reference is their starting mean)
            return None
        with torch.no_grad():
            return self.reference.patch_params(batch.noise, batch.cond.embeds)

    def kl_to_reference(self, params: Any, reference_params: Any, index: Tensor) -> Tensor:
        """[B] closed-form KL(policy || reference) of the episodes at `index`, summed over the
        noise: of their patch Gaussians, or with knobs of the search distributions (the same for
        every episode)."""
        if self.knobs is not None:
            return self.knobs.kl_to(self.reference_knobs).expand(len(index))
        ref_mean, ref_logvar = reference_params
        return kl_per_noise(params, (ref_mean[index], ref_logvar[index]), self.temperature)

    def minibatches(self, num_items: int, minibatch_size: int) -> list[Tensor]:
        """Shuffled index chunks of `num_items` local items (torch's global RNG, which the training
        loop reseeds every iteration); every process gets the same number of chunks (from the
        global item count), so their optimizer steps stay in lockstep."""
        total = self.sum_across_processes(num_items)
        chunks = max(1, math.ceil(total / minibatch_size))
        return list(torch.tensor_split(torch.randperm(num_items), chunks))

    def fit_minibatches(
        self,
        num_items: int,
        loss_fn: Callable[[Tensor], Tensor | tuple[Tensor, dict[str, Any]]],
        minibatch_size: int | None = None,
        epochs: int = 1,
    ) -> dict[str, float]:
        """`epochs` passes over this process's `num_items` items, one optimizer step per minibatch.

        `loss_fn(index)` returns the mean loss over the items at `index` (a non-empty index
        tensor), or (that loss, more metrics to average). The minibatches are shuffled chunks of
        about `minibatch_size` items (`minibatches`), or with None the whole batch in order.
        Every process takes part in every step, also one with no items in it (it contributes no
        gradient), so the processes' gradient averaging stays in lockstep; a process that skipped
        a step would leave the others waiting forever.

        Returns the means over this process's steps of "loss", "grad_norm" (of every step it took
        part in) and the extra metrics.
        """
        metrics = MetricMeans()
        for _ in range(epochs):
            chunks = [torch.arange(num_items)] if minibatch_size is None else self.minibatches(num_items, minibatch_size)
            for index in chunks:
                loss = None
                if len(index):
                    out = loss_fn(index)
                    loss, extra = out if isinstance(out, tuple) else (out, {})
                    metrics.add(**extra, loss=loss)
                metrics.add(grad_norm=self.optimizer_step(loss, len(index)))
        return metrics.means()

    def optimizer_step(self, loss: Tensor | None, num_items: int) -> float | None:
        """Backpropagates `loss` (a mean over this process's `num_items` items) and applies the
        gradients (`apply_gradients`). Every process must call it the same number of times; one
        with no items passes `loss=None`. Returns the gradient norm before clipping, or None."""
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None and num_items > 0:
            loss.backward()
        return self.apply_gradients(num_items)

    def apply_gradients(self, num_items: int) -> float | None:
        """Averages the gradients in `.grad` (each process's a mean over its `num_items` items)
        over all processes' items, clips them to `max_grad_norm` and steps the optimizer.

        Returns the gradient norm before clipping, or None when no process had items (no step).
        """
        total = self.sum_across_processes(num_items)
        if total == 0:
            return None
        self._average_gradients_across_processes(num_items / total)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained_parameters, self.config.max_grad_norm)
        self.optimizer.step()
        return float(grad_norm)

    def step_schedule(self) -> None:
        """Advances the per-iteration learning-rate schedule; call once at the end of `update`
        (also when the iteration took no optimizer step, e.g. DPO without pairs)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()

    def sum_across_processes(self, value: int) -> int:
        """`value` summed over all processes (itself with one process)."""
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return int(value)
        tensor = torch.tensor([value], dtype=torch.int64, device=self.accelerator.device)
        return int(self.accelerator.reduce(tensor, reduction="sum").item())

    def _average_gradients_across_processes(self, weight: float) -> None:
        """Replaces each gradient by the sum over processes of `weight` x its local value."""
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return
        params = self.trained_parameters
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]) * weight, reduction="sum")
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def _lr_factor(self, iteration: int) -> float:
        warmup, total = self.config.warmup_iterations, self.config.iterations
        if self.config.lr_schedule == "cosine":
            return warmup_cosine(iteration, warmup, total)
        return (iteration + 1) / warmup if iteration < warmup else 1.0

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Optimizer and scheduler state, and the reference prior's weights when there is one."""
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.reference is not None:
            state["reference"] = self.reference.state_dict()
        if self.knobs is not None:
            state["knobs"] = {**self.knobs.state_dict(), "reference_mean": self.reference_knobs}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.reference is not None:
            if "reference" not in state:
                raise KeyError("the checkpoint holds no reference prior, but this algorithm config needs one")
            self.reference.load_state_dict(state["reference"])
        if self.knobs is not None:
            if "knobs" not in state:
                raise KeyError("the checkpoint holds no sampling knobs, but this config trains them (gain-temperature)")
            self.knobs.load_state_dict(state["knobs"])
            self.reference_knobs = state["knobs"]["reference_mean"].to(self.reference_knobs.device)


class MetricMeans:
    """Averages metrics over the minibatches of one update."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = defaultdict(list)

    def add(self, **metrics: float | Tensor | None) -> None:
        for key, value in metrics.items():
            if value is not None:
                self._values[key].append(float(value.detach()) if isinstance(value, Tensor) else float(value))

    def means(self) -> dict[str, float]:
        return {key: sum(values) / len(values) for key, values in self._values.items()}


def knob_draws(batch: RolloutBatch | Episodes) -> Tensor:
    """The episodes' knob draws [N, 2]; a ValueError naming the fix when they were not drawn."""
    if batch.knobs is None:
        raise ValueError("these rollouts carry no knob draws, but the algorithm trains the sampling knobs "
                         "(trainable='gain-temperature'): collect them with NoiseARPolicy(prior, knobs=algorithm.knobs), "
                         "as the training loop's rounds do, or pick another trainable")
    return batch.knobs


def check_rollouts(batch: RolloutBatch, group_size: int) -> None:
    """Raises a ValueError unless `batch` holds whole groups of `group_size` rollouts of one prompt."""
    if len(batch) == 0 or len(batch) % group_size:
        raise ValueError(f"a batch of {len(batch)} rollouts does not split into groups of {group_size}")
    for start in range(0, len(batch), group_size):
        if len(set(batch.prompts[start : start + group_size])) != 1:
            raise ValueError(
                f"rollouts {start}..{start + group_size - 1} are not of one prompt; collect each prompt's "
                "rollouts_per_prompt episodes contiguously"
            )
