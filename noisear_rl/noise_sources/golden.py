"""`golden`: Golden Noise (Zhou et al., 2024): a noise prompt network turns Gaussian noise into a
prompt-specific "golden" noise in one forward pass (`noisear_rl.noise_sources.npnet`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from noisear_rl.io import require_saved
from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.noise_sources.npnet import NoisePromptNetwork
from noisear_rl.pipelines.base import Condition, DiffusionBackend, check_fits

SHAPES_NPNET = Path(__file__).resolve().parents[1] / "assets" / "shapes_npnet"
TRAIN_COMMAND = "python -m noisear_rl.noise_sources.golden_train --data DATA --output-dir FOLDER"


def load_noise_prompt_network(path: str | Path | None) -> NoisePromptNetwork:
    """Loads a trained network (None: the one shipped for the Shapes world).

    Raises:
        FileNotFoundError: No network at `path`; the message says how to train one.
    """
    folder = require_saved(
        path if path is not None else SHAPES_NPNET, "config.json", "noise prompt network",
        f"train one on golden-noise pairs with `{TRAIN_COMMAND}` and pass 'golden:FOLDER'",
    )
    return NoisePromptNetwork.from_pretrained(str(folder))


@register_noise_source("golden")
class GoldenNoiseSource(NoiseSource):
    """The base Gaussian noise mapped through a trained `NoisePromptNetwork`.

    Args:
        backend: The diffusion backend (latent shape and condition width must match the network's).
        path: The network's `save_pretrained` folder (None: the shipped Shapes network).
        network: An already-built network instead of `path`.
    """

    argument = "path"

    def __init__(self, backend: DiffusionBackend, path: str | None = None, network: NoisePromptNetwork | None = None) -> None:
        super().__init__(backend)
        network = network if network is not None else load_noise_prompt_network(path)
        check_fits(backend, network.latent_shape, network.config.cond_dim, "the network")
        self.network = network.to(backend.device).eval()

    @torch.no_grad()
    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        noise = self.base_noise(len(prompts), generator)
        return self.network(noise.to(self.network.device), cond.embeds.to(self.network.device))
