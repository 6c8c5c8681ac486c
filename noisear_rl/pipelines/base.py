"""The one interface between noisear-rl and a diffusion model.

A backend encodes prompts once into a `Condition` (what the prior reads, plus whatever the
pipeline needs besides), knows its latent shape, predicts (guided) noise for one step, and turns
unit-variance initial latents into images. Everything else in the toolkit (environments,
golden-noise collection, noise sources, evaluation) talks to diffusion models only through it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from noisear_rl.worlds.info import WorldInfo


@dataclass
class Condition:
    """Encoded prompts: computed once per prompt, then indexed, repeated and moved freely.

    Attributes:
        embeds: [B, L, D] the sequence the NoiseAR prior cross-attends to.
        extras: Everything else the pipeline needs (pooled embeddings, negative embeddings,
            attention masks), each a tensor with leading dim B.
    """

    embeds: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3:
            raise ValueError(f"Condition.embeds must be [B, L, D], got {tuple(self.embeds.shape)}")
        for key, value in self.extras.items():
            if value.shape[0] != self.embeds.shape[0]:
                raise ValueError(
                    f"Condition.extras[{key!r}] has batch {value.shape[0]}, embeds have {self.embeds.shape[0]}"
                )

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> Condition:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Condition(self.embeds[index], {k: v[index] for k, v in self.extras.items()})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Condition:
        """Moves every tensor; `dtype` applies to floating-point tensors only."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)

        return Condition(move(self.embeds), {k: move(v) for k, v in self.extras.items()})

    def repeat_interleave(self, repeats: int) -> Condition:
        """Each prompt `repeats` times in a row (K rollouts per prompt)."""
        return Condition(
            self.embeds.repeat_interleave(repeats, dim=0),
            {k: v.repeat_interleave(repeats, dim=0) for k, v in self.extras.items()},
        )

    @staticmethod
    def cat(conditions: list[Condition]) -> Condition:
        """Concatenates along the batch dimension."""
        if not conditions:
            raise ValueError("Condition.cat needs at least one condition")
        keys = conditions[0].extras.keys()
        return Condition(
            torch.cat([c.embeds for c in conditions]),
            {k: torch.cat([c.extras[k] for c in conditions]) for k in keys},
        )


class DiffusionBackend(ABC):
    """A frozen text-to-image diffusion model seen through the toolkit's interface.

    Attributes:
        latent_shape: (C, H, W) of one initial latent.
        cond_dim: Width D of `Condition.embeds`.
        num_inference_steps: Denoising steps used by `generate`.
        guidance_scale: Classifier-free guidance used by `generate`.
        device: Where the model runs.
        pipe: The diffusers pipeline behind the backend (its scheduler gives the default
            `alphas_cumprod` and `timesteps`).
        world: The embedded world the backend belongs to (`WorldInfo`: its prompts, reward,
            patch size and shipped priors, which environments and CLIs use by default); None for
            a general text-to-image model.
    """

    world: WorldInfo | None = None
    pipe: Any
    latent_shape: tuple[int, int, int]
    cond_dim: int
    num_inference_steps: int
    guidance_scale: float
    device: torch.device

    @abstractmethod
    def encode(self, prompts: list[str]) -> Condition:
        """Encodes prompts once (including the negative / unconditional branch for CFG)."""

    @abstractmethod
    def generate(self, latents: Tensor, cond: Condition, generator: torch.Generator | None = None) -> Tensor:
        """Denoises unit-variance initial latents [B, C, H, W] into images [B, 3, H', W'] in [0, 1].

        The backend applies its scheduler's `init_noise_sigma` itself. Same latents and condition
        give the same images.
        """

    @abstractmethod
    def predict_noise(self, latents: Tensor, timestep: int, cond: Condition, guidance_scale: float) -> Tensor:
        """The model's classifier-free-guided epsilon prediction at `timestep` for noisy `latents`."""

    @property
    def alphas_cumprod(self) -> Tensor:
        """[num_train_timesteps] cumulative alpha products of the model's training schedule.

        The default reads the diffusers scheduler of `self.pipe`; backends without one override it.
        """
        return self.pipe.scheduler.alphas_cumprod.float().cpu()

    def timesteps(self, num_inference_steps: int | None = None) -> Tensor:
        """The scheduler's descending timesteps for `num_inference_steps` (default: the backend's).

        The default asks a fresh copy of `self.pipe`'s scheduler, leaving the pipeline's untouched.
        """
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(num_inference_steps or self.num_inference_steps, device="cpu")
        return scheduler.timesteps

    def random_latents(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard Gaussian initial latents [B, C, H, W] on the backend's device (float32)."""
        return torch.randn(
            (batch_size, *self.latent_shape), generator=generator, device=generator.device if generator else "cpu"
        ).to(self.device)

    def check_latents(self, latents: Tensor, batch_size: int | None = None) -> None:
        """Raises a ValueError for latents of the wrong shape, or holding NaN or inf."""
        if latents.ndim != 4 or tuple(latents.shape[1:]) != tuple(self.latent_shape):
            raise ValueError(f"latents must have shape [B, {', '.join(map(str, self.latent_shape))}], got {tuple(latents.shape)}")
        if batch_size is not None and latents.shape[0] != batch_size:
            raise ValueError(f"got {latents.shape[0]} latents for {batch_size} conditions")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or inf")


def check_fits(backend: DiffusionBackend, latent_shape: tuple[int, ...], cond_dim: int, what: str) -> None:
    """Raises a ValueError unless a model of latents `latent_shape` and condition width `cond_dim`
    (`what`: "the prior", "the network") can serve `backend`."""
    if tuple(latent_shape) != tuple(backend.latent_shape) or cond_dim != backend.cond_dim:
        raise ValueError(
            f"{what} models latents {tuple(latent_shape)} with condition width {cond_dim}, but the backend has "
            f"{tuple(backend.latent_shape)} and {backend.cond_dim}; use one trained for this backend"
        )
