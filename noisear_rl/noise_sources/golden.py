"""`golden`: Golden Noise (Zhou et al., 2024): a noise prompt network turns Gaussian noise into a
prompt-specific "golden" noise in one forward pass: the project's own small network
(`noisear_rl.noise_sources.npnet`, trained on a backend's golden noise), or the released NPNet
weights of Golden Noise for SDXL, DreamShaper and Hunyuan-DiT (`golden:PATH.pth`,
`noisear_rl.noise_sources.npnet_reference`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from noisear_rl.io import require_saved
from noisear_rl.noise_sources.base import NoiseSource, register_noise_source
from noisear_rl.noise_sources.npnet import NoisePromptNetwork
from noisear_rl.noise_sources.npnet_reference import GoldenNoiseNPNet
from noisear_rl.pipelines.base import Condition, DiffusionBackend, check_fits

TRAIN_COMMAND = "python -m noisear_rl.noise_sources.golden_train --data DATA --output-dir FOLDER"


def load_noise_prompt_network(
    path: str | Path | None, backend: DiffusionBackend | None = None
) -> NoisePromptNetwork | GoldenNoiseNPNet:
    """Loads a trained network (None: the one shipped with the backend's embedded world).

    `path` is a `save_pretrained` folder (of either network class), or a `.pth` of Golden Noise's
    released NPNet weights (read weights-only).

    Raises:
        FileNotFoundError: No network at `path`; the message says how to train one.
    """
    if path is None:
        world = backend.world if backend is not None else None
        if world is None:
            raise ValueError(f"the golden source needs a trained network for this backend: 'golden:FOLDER' (`{TRAIN_COMMAND}`)")
        return NoisePromptNetwork.from_pretrained(
            str(require_saved(world.npnet, "config.json", f"shipped {world.name} noise prompt network", f"create it with `{world.npnet_command}`"))
        )
    if Path(path).suffix == ".pth":  # Golden Noise's released weights
        return GoldenNoiseNPNet.from_reference_checkpoint(path)
    folder = require_saved(
        path, "config.json", "noise prompt network",
        f"train one on golden-noise pairs with `{TRAIN_COMMAND}` and pass 'golden:FOLDER'",
    )
    if json.loads((folder / "config.json").read_text()).get("_class_name") == GoldenNoiseNPNet.__name__:
        return GoldenNoiseNPNet.from_pretrained(str(folder))
    return NoisePromptNetwork.from_pretrained(str(folder))


@register_noise_source("golden")
class GoldenNoiseSource(NoiseSource):
    """The base Gaussian noise mapped through a trained noise prompt network.

    Args:
        backend: The diffusion backend (latent shape and condition width must match the network's).
        path: The network's `save_pretrained` folder, or a Golden Noise NPNet `.pth` (None: the one
            shipped with the backend's world).
        network: An already-built network instead of `path`.
    """

    argument = "path"

    def __init__(
        self, backend: DiffusionBackend, path: str | None = None, network: NoisePromptNetwork | GoldenNoiseNPNet | None = None
    ) -> None:
        super().__init__(backend)
        network = network if network is not None else load_noise_prompt_network(path, backend)
        check_fits(backend, network.latent_shape, network.config.cond_dim, "the network")
        self.network = network.to(backend.device).eval()

    @torch.no_grad()
    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        noise = self.base_noise(len(prompts), generator)
        return self.network(noise.to(self.network.device), cond.embeds.to(self.network.device))
