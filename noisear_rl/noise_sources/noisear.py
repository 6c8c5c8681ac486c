"""`noisear`: noise sampled from a NoiseAR prior p(x_T | prompt), e.g. NLL-pretrained or RL-tuned."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.prior.shipped import shipped_shapes_prior_path
from noisear_rl.pipelines.base import Condition, DiffusionBackend, check_fits
from noisear_rl.prior.model import NoiseARPrior


def resolve_prior(path: str | Path | None) -> tuple[NoiseARPrior, float | None]:
    """Loads a prior and the temperature it was trained with, when known.

    Args:
        path: A `NoiseARPrior.save_pretrained` folder; a training run folder
            (`python -m noisear_rl.train`; its final `prior/` and the run's `temperature`); a
            `.pth` of the public NoiseAR release (SDXL); None: the shipped Shapes prior.

    Returns:
        (prior, the run's sampling temperature or None).

    Raises:
        FileNotFoundError: Nothing loadable at `path`; the message says what is expected.
    """
    if path is None:
        path = shipped_shapes_prior_path()
    folder = Path(path)
    if folder.suffix == ".pth" and folder.is_file():
        return NoiseARPrior.from_release_checkpoint(str(folder)), None
    if (folder / "config.json").is_file() and not (folder / "prior" / "config.json").is_file():
        return NoiseARPrior.from_pretrained(str(folder)), None
    if (folder / "prior" / "config.json").is_file():
        run_config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        temperature = run_config.get("run", {}).get("temperature")
        return NoiseARPrior.from_pretrained(str(folder / "prior")), temperature
    raise FileNotFoundError(
        f"no NoiseAR prior at {str(folder)!r}: expected a NoiseARPrior.save_pretrained folder (config.json + "
        "safetensors), a training run folder holding prior/ (`python -m noisear_rl.train`), or a release .pth"
    )


@register_noise_source("noisear")
class NoiseARSource(NoiseSource):
    """Samples each noise patch by patch from a NoiseAR prior given the prompt's condition.

    Args:
        backend: The diffusion backend (the prior's latent shape and condition width must match it).
        path: The prior: see `resolve_prior` (None: the shipped Shapes prior of the backend's
            condition, text or scene).
        temperature: Multiplies every predicted std (None: the training run's, else 1.0).
        prior: An already-built prior instead of `path`.
    """

    argument = "path"

    def __init__(
        self,
        backend: DiffusionBackend,
        path: str | None = None,
        temperature: float | None = None,
        prior: NoiseARPrior | None = None,
    ) -> None:
        super().__init__(backend)
        run_temperature = None
        if prior is None:
            if path is None and backend.world == "shapes":
                path = shipped_shapes_prior_path(getattr(backend, "condition", "text"))
            prior, run_temperature = resolve_prior(path)
        check_fits(backend, prior.latent_shape, prior.config.cond_dim, "the prior")
        self.prior = prior.to(backend.device).eval()
        self.temperature = float(temperature if temperature is not None else run_temperature or 1.0)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        embeds = cond.embeds.to(self.prior.device, self.prior.dtype)
        return self.prior.sample(embeds, generator=generator, temperature=self.temperature)
