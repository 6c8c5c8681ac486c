"""The embedded Shapes world: a small text-to-image diffusion model the project trains and ships.

32x32 images of one or two coloured shapes at positions, prompts like "a red circle on the left
and a blue square on the right", a diffusers `ShapesPipeline` used like SDXL, its
`DiffusionBackend`, the exact `shapes` verifier (`verifier.py`), the trainer and the measurement
that reproduce the shipped weights, and `WORLD`, the description environments and CLIs read.
See docs/shapes_world.md.

The world's vocabulary, prompts and renderer import eagerly; the model classes (which import
diffusers) load on first access, so the verifier stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from pathlib import Path

from noisear_rl.worlds.info import WorldInfo
from noisear_rl.worlds.shapes.world import (
    COLOURS,
    POSITIONS,
    SHAPES,
    VOCABULARY,
    ShapeObject,
    check_prompt,
    evaluation_prompts,
    parse_prompt,
    render,
    render_batch,
    sample_prompts,
    scene_to_prompt,
    training_prompts,
)

HERE = Path(__file__).resolve().parent
WORLD = WorldInfo(
    name="shapes",
    reward="shapes",
    patch_size=8,
    training_prompts=training_prompts,
    evaluation_prompts=evaluation_prompts,
    sample_prompts=sample_prompts,
    check_prompt=check_prompt,
    prior=HERE / "prior",
    prior_command=(
        "python -m noisear_rl.collect --prompts train --num-prompts None --noises-per-prompt 10 --output-dir data/shapes_golden && "
        "python -m noisear_rl.train --algo nll --data data/shapes_golden --nll.iterations 1500 --output-dir runs/shapes-nll && "
        "python -m noisear_rl.collect --prompts train --num-prompts None --noises-per-prompt 8 --golden selected "
        "--reward shapes --reward-threshold 0.999 --output-dir data/shapes_selected && "
        "python -m noisear_rl.train --algo nll --data data/shapes_selected --prior runs/shapes-nll/prior "
        "--nll.trainable prompt-shift --nll.lr 3e-3 --nll.iterations 1000 --temperature 0.5 --output-dir runs/shapes-nll-selected && "
        "cp -r runs/shapes-nll-selected/prior noisear_rl/worlds/shapes/prior"
    ),
    npnet=HERE / "npnet",
    npnet_command=(
        "python -m noisear_rl.collect --prompts train --num-prompts None --noises-per-prompt 10 --output-dir data/shapes_golden && "
        "python -m noisear_rl.noise_sources.golden_train --data data/shapes_golden --steps 800 --output-dir runs/shapes-npnet && "
        "cp -r runs/shapes-npnet noisear_rl/worlds/shapes/npnet"
    ),
)
"""The Shapes world as environments, CLIs and noise sources see it."""

_LAZY = {
    "ShapesBackend": "noisear_rl.worlds.shapes.backend",
    "ShapesPipeline": "noisear_rl.worlds.shapes.pipeline",
    "build_shapes_pipeline": "noisear_rl.worlds.shapes.pipeline",
    "build_tiny_shapes_pipeline": "noisear_rl.worlds.shapes.pipeline",
    "load_shapes_pipeline": "noisear_rl.worlds.shapes.pipeline",
    "ShapesTextEncoder": "noisear_rl.worlds.shapes.text_encoder",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "WORLD",
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "VOCABULARY",
    "ShapeObject",
    "check_prompt",
    "evaluation_prompts",
    "parse_prompt",
    "render",
    "render_batch",
    "sample_prompts",
    "scene_to_prompt",
    *_LAZY,
]
