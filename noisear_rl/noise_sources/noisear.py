"""`noisear`: noise sampled from a NoiseAR prior p(x_T | prompt), e.g. NLL-pretrained or RL-tuned."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.io import read_json, require_saved
from noisear_rl.pipelines.base import Condition, DiffusionBackend, check_fits
from noisear_rl.prior.model import NoiseARPrior


def resolve_prior(path: str | Path, n_heads: int | None = None) -> tuple[NoiseARPrior, float | None]:
    """Loads a prior and the temperature it was trained with, when known.

    Args:
        path: A `NoiseARPrior.save_pretrained` folder; a training run folder
            (`python -m noisear_rl.train`; its final `prior/` and the temperature it ended with:
            the learned one when the run trained it, `summary.json`'s policy, else the run's); a
            `.pth` of the public NoiseAR release (SDXL, DreamShaper, Hunyuan-DiT), which samples
            at the release's temperature 0.5 (its config's).
        n_heads: A release `.pth`'s attention heads (required for one: the weights do not say).

    Returns:
        (prior, the run's sampling temperature or None).

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
        return NoiseARPrior.from_release_checkpoint(str(folder), n_heads=n_heads), None
    if (folder / "config.json").is_file() and not (folder / "prior" / "config.json").is_file():
        return NoiseARPrior.from_pretrained(str(folder)), None
    if (folder / "prior" / "config.json").is_file():
        run_config = {}
        if (folder / "config.json").is_file():
            run_config = read_json(folder / "config.json", "pass the run's prior/ folder itself to load its prior")
        run_settings = run_config.get("run") if isinstance(run_config, dict) else None
        temperature = run_settings.get("temperature") if isinstance(run_settings, dict) else None
        if (folder / "summary.json").is_file():  # runs since the knobs: the temperature the run ended with
            ended = read_json(folder / "summary.json", "pass the run's prior/ folder itself to load its prior").get("policy_after")
            temperature = ended.get("temperature", temperature) if isinstance(ended, dict) else temperature
        return NoiseARPrior.from_pretrained(str(folder / "prior")), temperature
    raise FileNotFoundError(f"no NoiseAR prior at {str(folder)!r}: {expected}")


@register_noise_source("noisear")
class NoiseARSource(NoiseSource):
    """Samples each noise patch by patch from a NoiseAR prior given the prompt's condition.

    Args:
        backend: The diffusion backend (the prior's latent shape and condition width must match it).
        path: The prior: see `resolve_prior` (None: the shipped prior of the backend's embedded world).
        temperature: Multiplies every predicted std (None: the training run's, else the prior's
            `config.temperature`: 0.5 for a release `.pth`, as the release samples).
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
        run_temperature = None
        if prior is None:
            if path is None:
                world = backend.world
                if world is None:
                    raise ValueError("the noisear source needs a prior for this backend: 'noisear:PATH'")
                path = require_saved(
                    world.prior, "config.json", f"shipped {world.name} prior",
                    f"create it with `{world.prior_command}`, or pass 'noisear:PATH'",
                )
            prior, run_temperature = resolve_prior(path, n_heads=n_heads)
        check_fits(backend, prior.latent_shape, prior.config.cond_dim, "the prior")
        self.prior = prior.to(backend.device).eval()
        if temperature is None:
            temperature = run_temperature if run_temperature is not None else prior.config.temperature
        self.temperature = float(temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        embeds = cond.embeds.to(self.prior.device, self.prior.dtype)
        return self.prior.sample(embeds, generator=generator, temperature=self.temperature)
