"""`noisear`: noise sampled from a NoiseAR prior p(x_T | prompt), e.g. NLL-pretrained or RL-tuned."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.io import require_saved
from noisear_rl.pipelines.base import Condition, DiffusionBackend, check_fits
from noisear_rl.prior.model import NoiseARPrior


def resolve_prior(path: str | Path, n_heads: int | None = None) -> NoiseARPrior:
    """Loads a prior from a saved folder, a training run or a release checkpoint.

    Its `config.temperature` is the temperature it samples at: a run's saved prior records the one
    the run ended with (the learned one when the run trained it), a release `.pth` the release's 0.5.

    Args:
        path: A `NoiseARPrior.save_pretrained` folder; a training run folder
            (`python -m noisear_rl.train`; its final `prior/`); a `.pth` of the public NoiseAR
            release (SDXL, DreamShaper, Hunyuan-DiT).
        n_heads: A release `.pth`'s attention heads (required for one: the weights do not say).

    Raises:
        FileNotFoundError: Nothing loadable at `path`; the message says what is expected.
    """
    folder = Path(path)
    expected = (
        "expected a NoiseARPrior.save_pretrained folder (config.json + safetensors), a training run folder "
        "holding prior/ (`python -m noisear_rl.train`), or a release .pth"
    )
    if not folder.exists():
        raise FileNotFoundError(f"no NoiseAR prior at {str(folder)!r}: no such file or folder; {expected}")
    if folder.suffix == ".pth" and folder.is_file():
        return NoiseARPrior.from_release_checkpoint(str(folder), n_heads=n_heads)
    if (folder / "prior" / "config.json").is_file():
        return NoiseARPrior.from_pretrained(str(folder / "prior"))
    if (folder / "config.json").is_file():
        return NoiseARPrior.from_pretrained(str(folder))
    raise FileNotFoundError(f"no NoiseAR prior at {str(folder)!r}: {expected}")


@register_noise_source("noisear")
class NoiseARSource(NoiseSource):
    """Samples each noise patch by patch from a NoiseAR prior given the prompt's condition.

    Args:
        backend: The diffusion backend (the prior's latent shape and condition width must match it).
        path: The prior: see `resolve_prior` (None: the shipped prior of the backend's embedded world).
        temperature: Multiplies every predicted std (None: the prior's `config.temperature`: for a
            training run, the one it ended with; 0.5 for a release `.pth`, as the release samples).
        prior: An already-built prior instead of `path`.
        n_heads: Attention heads of a release `.pth` (`noisear:model.pth?n_heads=1`).
    """

    argument = "path"

    def __init__(
        self,
        backend: DiffusionBackend,
        path: str | None = None,
        temperature: float | None = None,
        prior: NoiseARPrior | None = None,
        n_heads: int | None = None,
    ) -> None:
        super().__init__(backend)
        if prior is None:
            if path is None:
                world = backend.world
                if world is None:
                    raise ValueError("the noisear source needs a prior for this backend: 'noisear:PATH'")
                path = require_saved(
                    world.prior, "config.json", f"shipped {world.name} prior",
                    f"create it with `{world.prior_command}`, or pass 'noisear:PATH'",
                )
            prior = resolve_prior(path, n_heads=n_heads)
        check_fits(backend, prior.latent_shape, prior.config.cond_dim, "the prior")
        self.prior = prior.to(backend.device).eval()
        self.temperature = float(prior.config.temperature if temperature is None else temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        embeds = cond.embeds.to(self.prior.device, self.prior.dtype)
        return self.prior.sample(embeds, generator=generator, temperature=self.temperature)
