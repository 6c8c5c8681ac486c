"""Supervised pretraining of the prior on (prompt, golden noise) pairs (paper 2.3 and E.1.2).

Each iteration is one Adam step on the prior's NLL objective (per-element Gaussian NLL plus 0.2
x the reconstruction MSE of a reparameterised sample) over a minibatch of golden noises; the
learning rate decays on a cosine schedule. The pairs come from `python -m noisear_rl.collect`
(--data); the algorithm draws them itself (`round_data`), leaving out held-out evaluation prompts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from noisear_rl.algorithms.base import Algorithm, OptimConfig, register_algorithm
from noisear_rl.algorithms.context import FreshPrior, Round, TrainingContext, to_device
from noisear_rl.checks import check_at_least, check_finite, option_name
from noisear_rl.data import GoldenNoiseDataset, read_manifest
from noisear_rl.pipelines.base import Condition
from noisear_rl.prior.layers import ResidualStyle
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.seeds import derive_seed


@dataclass
class NLLConfig(OptimConfig):
    """NLL pretraining on golden-noise pairs; the architecture fields apply when no --prior is given."""

    iterations: int = 5000
    """Optimizer steps (the paper: 10 epochs at batch 40; 20k pairs x 10 / 40 = 5000)."""
    batch_size: int = 40
    """Pairs per step (split across processes)."""
    lr: float = 3e-4
    """Adam learning rate (the paper used 6.25e-5 for its 2048-wide SDXL prior)."""
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    """Learning-rate decay after warm-up."""
    warmup_iterations: int = 100
    """Linear warm-up steps."""
    recon_weight: float = 0.2
    """Weight of the reconstruction term of the paper's objective."""
    patch_size: int = 8
    """New prior: side of one patch (must divide the latent; Shapes 32x32 -> 16 patches of 8x8)."""
    d_model: int = 192
    """New prior: transformer width."""
    d_ff: int = 384
    """New prior: feed-forward width."""
    n_heads: int = 4
    """New prior: attention heads."""
    n_layers: int = 2
    """New prior: decoder layers."""
    dropout: float = 0.1
    """New prior: dropout (active in training only)."""
    residual_style: ResidualStyle = "pre_norm"
    """New prior: "pre_norm" or "release" (the public checkpoint's post-norm-like order)."""
    prompt_shift_width: int = 0
    """New prior: width of its prompt-shift pathway (a per-patch mean term read from the prompt alone; 0: none)."""
    prompt_shift_resolution: Literal["element", "patch"] = "element"
    """New prior: the prompt shift's values: one per element of a patch, or one per channel of each
    patch ("patch": the noise's patch means, its lowest frequencies)."""

    def check(self, prefix: str = "") -> None:
        """The base ranges, the batch, the objective's weight and the new prior's architecture."""
        super().check(prefix)
        check_at_least(self, 1, ("batch_size", "patch_size", "d_model", "d_ff", "n_heads", "n_layers"), prefix)
        check_at_least(self, 0, ("prompt_shift_width",), prefix)
        check_finite(self, ("recon_weight",), prefix, minimum=0.0)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{option_name('dropout', prefix)} must be in [0, 1), got {self.dropout!r}")


def build_prior(config: NLLConfig, latent_shape: tuple[int, int, int], cond_dim: int) -> NoiseARPrior:
    """A freshly initialised prior with `config`'s architecture for a backend's latent and condition."""
    channels, height, width = latent_shape
    return NoiseARPrior(
        latent_channels=channels, latent_height=height, latent_width=width, patch_size=config.patch_size,
        cond_dim=cond_dim, d_model=config.d_model, d_ff=config.d_ff, n_heads=config.n_heads,
        n_layers=config.n_layers, dropout=config.dropout, residual_style=config.residual_style,
        prompt_shift_width=config.prompt_shift_width, prompt_shift_resolution=config.prompt_shift_resolution,
    )


@dataclass
class GoldenBatch:
    """A minibatch of golden-noise pairs.

    Attributes:
        noise: [B, C, H, W] golden noises (the targets).
        cond: Their prompts' condition.
    """

    noise: Tensor
    cond: Condition

    def __len__(self) -> int:
        return self.noise.shape[0]


class GoldenPairs:
    """The golden-noise pairs of a collection, in epochs of seeded permutations; each prompt
    encoded once by `world` (the env's). Pairs of a `heldout` prompt are left out."""

    def __init__(self, data: str, world: Any, heldout: frozenset[str], batch_size: int, seed: int) -> None:
        dataset = GoldenNoiseDataset(data, in_memory=True, require_complete=True)
        if tuple(dataset.latent_shape) != tuple(world.backend.latent_shape):
            raise ValueError(f"{data} holds noises of shape {dataset.latent_shape}, the env's backend needs "
                             f"{tuple(world.backend.latent_shape)}")
        keep = torch.tensor([dataset.prompts[i] not in heldout for i in dataset.prompt_index.tolist()], dtype=torch.bool)
        if not keep.any():
            raise ValueError(f"every pair in {data} is of a held-out evaluation prompt")
        self.noise = dataset.golden[keep]
        self.prompt_index = dataset.prompt_index[keep]
        self.cond: Condition = world.encode(dataset.prompts)
        self.batch_size = batch_size
        self.seed = seed

    def batch(self, iteration: int, rank: int, processes: int) -> GoldenBatch:
        """The iteration's pairs (this process's share): positions it*B .. (it+1)*B of the epoch permutations."""
        n = len(self.noise)
        positions = range(iteration * self.batch_size, (iteration + 1) * self.batch_size)
        permutations: dict[int, Tensor] = {}
        rows = []
        for position in positions:
            epoch = position // n
            if epoch not in permutations:
                permutations[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0, 4)))
            rows.append(int(permutations[epoch][position % n]))
        index = torch.tensor(rows[rank::processes], dtype=torch.long)
        return GoldenBatch(self.noise[index], self.cond[self.prompt_index[index]])


@register_algorithm("nll")
class NLL(Algorithm):
    """Maximum likelihood of golden noises given their prompts."""

    config_class = NLLConfig
    config: NLLConfig
    uses_rollouts = False

    @classmethod
    def check_inputs(cls, config: NLLConfig, data: str | None, num_processes: int, prefix: str = "--") -> None:
        """--data must name a golden-noise collection (its manifest is read)."""
        if data is None:
            raise ValueError(f"--algo {cls.name} needs --data: a golden-noise collection "
                             "(make one with `python -m noisear_rl.collect --output-dir DIR`)")
        read_manifest(data)

    @classmethod
    def fresh_prior(cls, config: NLLConfig) -> FreshPrior:
        """Without --prior, a new prior of the config's architecture (`build_prior`)."""
        return FreshPrior(config.patch_size, functools.partial(build_prior, config))

    def round_data(self, context: TrainingContext) -> Round:
        """Each iteration, the next `batch_size` pairs of --data (this process's share)."""
        self.check_inputs(self.config, context.data, 1)
        assert context.data is not None
        pairs = GoldenPairs(context.data, context.world, context.heldout, self.config.batch_size, context.seed)
        rank, processes = self.process_info()
        return lambda iteration: (to_device(pairs.batch(iteration, rank, processes), self.prior.device), {})

    def update(self, batch: GoldenBatch) -> dict[str, float]:
        self.prior.train()  # dropout on, as in the paper's training
        loss_fn = lambda i: self.prior.nll_loss(batch.noise[i], batch.cond[i].embeds, recon_weight=self.config.recon_weight)  # noqa: E731
        metrics = self.fit_minibatches(len(batch), loss_fn)  # one step on the whole batch
        self.step_schedule()
        return metrics
