"""The NLL-pretrained priors that ship for the Shapes world, and how to make them."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

from noisear_rl.io import require_saved

ASSETS = Path(str(files("noisear_rl") / "assets"))
SHAPES_PRIOR = ASSETS / "shapes_prior"
SHAPES_SCENE_PRIOR = ASSETS / "shapes_scene_prior"
SHAPES_PRIOR_COMMAND = (
    "python -m noisear_rl.collect --backend shapes --out data/shapes_golden && "
    "python -m noisear_rl.train --algo nll --data data/shapes_golden --output-dir runs/shapes-nll && "
    "cp -r runs/shapes-nll/prior noisear_rl/assets/shapes_prior"
)
SHAPES_SCENE_PRIOR_COMMAND = (
    "python -m noisear_rl.collect --backend shapes --out data/shapes_golden && "
    "python -m noisear_rl.train --algo nll --env NoiseAR-ShapesScene-v0 --data data/shapes_golden "
    "--nll.prompt-shift-width 64 --output-dir runs/shapes-scene-nll && "
    "cp -r runs/shapes-scene-nll/prior noisear_rl/assets/shapes_scene_prior"
)


def shipped_shapes_prior_path(condition: Literal["text", "scene"] = "text") -> Path:
    """The folder of the shipped Shapes prior for the backend's `condition`: "text" reads the text
    encoder's states (`NoiseAR-Shapes-v0`); "scene" reads the scene's object tokens and has a
    prompt shift (`NoiseAR-ShapesScene-v0`).

    Raises:
        FileNotFoundError: It is missing; the message gives the command that creates it.
    """
    if condition not in ("text", "scene"):
        raise ValueError(f"condition must be 'text' or 'scene', got {condition!r}")
    folder, command = (SHAPES_PRIOR, SHAPES_PRIOR_COMMAND) if condition == "text" else (SHAPES_SCENE_PRIOR, SHAPES_SCENE_PRIOR_COMMAND)
    return require_saved(
        folder, "config.json", f"shipped Shapes prior ({condition} condition)",
        f"create it with `{command}`, or pass a prior folder",
    )
