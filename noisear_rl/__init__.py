"""noisear-rl: learn and optimize the initial noise of text-to-image diffusion models.

Importing the package registers the Gymnasium environments (`NoiseAR-Shapes-v1`, ...).
"""

from __future__ import annotations

from pathlib import Path

from noisear_rl.envs.registration import register_envs
from noisear_rl.prior import NoiseARPrior

__version__ = "0.1.0"
__all__ = ["NoiseARPrior", "__version__", "shipped_prior"]


def shipped_prior(world: str = "shapes") -> Path:
    """The folder of the NLL-pretrained NoiseAR prior an embedded world ships, as an absolute path
    (it works from any folder): `NoiseARPrior.from_pretrained(noisear_rl.shipped_prior("shapes"))`.

    Only embedded worlds ship priors; for SDXL, DreamShaper or Hunyuan-DiT load a checkpoint of the
    public NoiseAR release with `NoiseARPrior.from_release_checkpoint(path, n_heads=...)`.

    Raises:
        KeyError: `world` is not an embedded world; the message lists them.
        FileNotFoundError: This installation lacks the world's prior; the message gives the commands
            that make it.
    """
    from noisear_rl.pipelines.factory import WORLDS

    if world not in WORLDS:
        raise KeyError(
            f"{world!r} is not an embedded world, so it ships no prior (embedded worlds: {', '.join(WORLDS.names())}); "
            "for SDXL, DreamShaper or Hunyuan-DiT use NoiseARPrior.from_release_checkpoint(path) with the public "
            "release's .pth"
        )
    info = WORLDS.get(world)
    if not (info.prior / "config.json").is_file():
        raise FileNotFoundError(
            f"the {world} world's shipped prior is missing from {info.prior}; make it with: {info.prior_command}"
        )
    return info.prior


register_envs()
