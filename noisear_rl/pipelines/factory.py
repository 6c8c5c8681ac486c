"""`load_backend(name, **kwargs)`: builds a diffusion backend by name, importing it lazily.

Importing this module imports no backend: SDXL, Hunyuan-DiT and the Shapes world each load
diffusers/transformers pieces only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from noisear_rl.pipelines.base import DiffusionBackend

# name -> "module:attribute" of a DiffusionBackend class or a factory function returning one.
BACKENDS: dict[str, str] = {
    "shapes": "noisear_rl.pipelines.shapes:ShapesBackend",
    # The same world; the prior reads the scene's object tokens instead of the text states.
    "shapes-scene": "noisear_rl.pipelines.shapes:ShapesBackend",
    "sdxl": "noisear_rl.pipelines.sdxl:SDXLBackend",
    "dreamshaper": "noisear_rl.pipelines.sdxl:DreamShaperBackend",
    "hunyuan-dit": "noisear_rl.pipelines.hunyuan:HunyuanDiTBackend",
    # Random-weight pipelines built from configs (no downloads): smoke runs and tests.
    "tiny-sdxl": "noisear_rl.pipelines.tiny:tiny_sdxl_backend",
    "tiny-hunyuan-dit": "noisear_rl.pipelines.tiny:tiny_hunyuan_backend",
}

SHAPES_BACKENDS: dict[str, str] = {"shapes": "text", "shapes-scene": "scene"}
"""The backends of the embedded Shapes world (its prompts, verifier and weights) -> the
`ShapesBackend(condition=...)` each builds: what its `Condition.embeds`, read by a prior, hold."""


def list_backends() -> list[str]:
    """The names `load_backend` accepts."""
    return sorted(BACKENDS)


def load_backend(name: str | DiffusionBackend, **kwargs: Any) -> DiffusionBackend:
    """Builds the backend registered as `name`.

    Args:
        name: One of `list_backends()` ("shapes", "shapes-scene", "sdxl", "dreamshaper", "hunyuan-dit",
            "tiny-sdxl", "tiny-hunyuan-dit"), or an already-built backend, returned as is.
        **kwargs: Passed to the backend's constructor: `model` (hub id or local folder),
            `device`, `dtype`, `num_inference_steps`, `guidance_scale`, ... A None value means
            the backend's own default (so CLI options left unset can be passed as they are).
            For "shapes" and "shapes-scene", `model` is passed on as the Shapes world's `model_path`
            and the name sets the default `condition` (`SHAPES_BACKENDS`).

    Raises:
        KeyError: Unknown name; the message lists the valid names.
    """
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    if isinstance(name, DiffusionBackend):
        if kwargs:
            raise TypeError(f"got an already-built backend and constructor arguments {sorted(kwargs)}")
        return name
    if name not in BACKENDS:
        raise KeyError(f"unknown diffusion backend {name!r}; valid names: {', '.join(list_backends())}")
    if name in SHAPES_BACKENDS:
        kwargs.setdefault("condition", SHAPES_BACKENDS[name])
        if "model" in kwargs:
            kwargs["model_path"] = kwargs.pop("model")
    module_name, attribute = BACKENDS[name].split(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(**kwargs)
