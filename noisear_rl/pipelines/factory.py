"""`load_backend(name, **kwargs)`: builds a diffusion backend by name, importing it lazily.

Importing this module imports no backend: SDXL, Hunyuan-DiT and the Shapes world each load
diffusers/transformers pieces only when asked for.
"""

from __future__ import annotations

from typing import Any

from noisear_rl.pipelines.base import DiffusionBackend
from noisear_rl.registry import Registry
from noisear_rl.worlds.info import WorldInfo

BACKENDS: Registry[Any] = Registry(
    "diffusion backend",
    "noisear_rl.backends",
    lazy={
        "shapes": "noisear_rl.worlds.shapes:ShapesBackend",
        "sdxl": "noisear_rl.pipelines.sdxl:SDXLBackend",
        "dreamshaper": "noisear_rl.pipelines.sdxl:DreamShaperBackend",
        "hunyuan-dit": "noisear_rl.pipelines.hunyuan:HunyuanDiTBackend",
        # Random-weight pipelines built from configs (no downloads): smoke runs and tests.
        "tiny-sdxl": "noisear_rl.pipelines.tiny:tiny_sdxl_backend",
        "tiny-hunyuan-dit": "noisear_rl.pipelines.tiny:tiny_hunyuan_backend",
    },
)
"""Backend name -> a `DiffusionBackend` class or a factory function returning one (third-party
packages: entry-point group `noisear_rl.backends`)."""

WORLDS: Registry[WorldInfo] = Registry("world", "noisear_rl.worlds", lazy={"shapes": "noisear_rl.worlds.shapes:WORLD"})
"""Backend name -> the `WorldInfo` of the embedded world it belongs to."""


def world_info(name: str) -> WorldInfo | None:
    """The embedded world a backend name belongs to (its prompts, reward, shipped priors), without
    building the backend; None for a general text-to-image backend."""
    return WORLDS.get(name) if name in WORLDS else None


def list_backends() -> list[str]:
    """The names `load_backend` accepts."""
    return BACKENDS.names()


def check_backend_name(name: str) -> None:
    """Raises a KeyError listing the valid names unless `load_backend` knows `name` (nothing is loaded)."""
    BACKENDS.check(name)


def load_backend(name: str | DiffusionBackend, **kwargs: Any) -> DiffusionBackend:
    """Builds the backend registered as `name`.

    Args:
        name: One of `list_backends()` ("shapes", "sdxl", "dreamshaper", "hunyuan-dit",
            "tiny-sdxl", "tiny-hunyuan-dit"), or an already-built backend, returned as is.
        **kwargs: Passed to the backend's constructor: `model` (hub id or local folder),
            `device`, `dtype`, `num_inference_steps`, `guidance_scale`, ... A None value means
            the backend's own default (so CLI options left unset can be passed as they are).
            For "shapes", `model` is passed on as the Shapes world's `model_path`.

    Raises:
        KeyError: Unknown name; the message lists the valid names.
    """
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    if isinstance(name, DiffusionBackend):
        if kwargs:
            raise TypeError(f"got an already-built backend and constructor arguments {sorted(kwargs)}")
        return name
    factory = BACKENDS.get(name)
    if name in WORLDS and "model" in kwargs:
        kwargs["model_path"] = kwargs.pop("model")
    return factory(**kwargs)
