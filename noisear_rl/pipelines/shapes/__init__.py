"""The embedded Shapes world: a small text-to-image diffusion model the project trains and ships.

32x32 images of one or two coloured shapes at positions, prompts like "a red circle on the left
and a blue square on the right", a diffusers `ShapesPipeline` used like SDXL, its
`DiffusionBackend`, and (in `noisear_rl.reward_models.shapes`) the exact `shapes` verifier.
See docs/shapes_world.md.

The world's vocabulary, prompts and renderer import eagerly; the model classes (which import
diffusers) load on first access, so the verifier stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from noisear_rl.pipelines.shapes.world import (
    COLOURS,
    POSITIONS,
    SHAPES,
    VOCABULARY,
    ShapeObject,
    evaluation_prompts,
    parse_prompt,
    render,
    render_batch,
    sample_prompts,
    scene_to_prompt,
    training_prompts,
)

_LAZY = {
    "ShapesBackend": "noisear_rl.pipelines.shapes.backend",
    "ShapesPipeline": "noisear_rl.pipelines.shapes.pipeline",
    "build_shapes_pipeline": "noisear_rl.pipelines.shapes.pipeline",
    "build_tiny_shapes_pipeline": "noisear_rl.pipelines.shapes.pipeline",
    "load_shapes_pipeline": "noisear_rl.pipelines.shapes.pipeline",
    "ShapesTextEncoder": "noisear_rl.pipelines.shapes.text_encoder",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "VOCABULARY",
    "ShapeObject",
    "evaluation_prompts",
    "parse_prompt",
    "render",
    "render_batch",
    "sample_prompts",
    "scene_to_prompt",
    *_LAZY,
]
