"""Supervised pretraining of the prior on (prompt, golden noise) pairs (paper 2.3 and E.1.2).

Each iteration is one Adam step on the prior's NLL objective (per-element Gaussian NLL plus 0.2
x the reconstruction MSE of a reparameterised sample) over a minibatch of golden noises; the
learning rate decays on a cosine schedule. The pairs come from `python -m noisear_rl.collect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from noisear_rl.algorithms.base import Algorithm, MetricMeans, OptimConfig, register_algorithm
from noisear_rl.checks import check_at_least, check_finite, option_name
from noisear_rl.pipelines.base import Condition
from noisear_rl.prior.layers import ResidualStyle
from noisear_rl.prior.model import NoiseARPrior


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
        prompt_shift_width=config.prompt_shift_width,
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


@register_algorithm("nll")
class NLL(Algorithm):
    """Maximum likelihood of golden noises given their prompts."""

    config_class = NLLConfig
    config: NLLConfig
    uses_rollouts = False

    def update(self, batch: GoldenBatch) -> dict[str, float]:
        self.prior.train()  # dropout on, as in the paper's training
        loss = None
        if len(batch):
            loss = self.prior.nll_loss(batch.noise, batch.cond.embeds, recon_weight=self.config.recon_weight)
        grad_norm = self.optimizer_step(loss, len(batch))
        self.step_schedule()
        metrics = MetricMeans()
        metrics.add(loss=loss, grad_norm=grad_norm)
        return metrics.means()
