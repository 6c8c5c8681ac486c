"""The NLL-pretrained prior that ships for the Shapes world, and how to make it."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from noisear_rl.io import require_saved

SHAPES_PRIOR = Path(str(files("noisear_rl") / "assets" / "shapes_prior"))
SHAPES_PRIOR_COMMAND = (
    "python -m noisear_rl.collect --backend shapes --out data/shapes_golden && "
    "python -m noisear_rl.train --algo nll --data data/shapes_golden --output-dir runs/shapes-nll && "
    "cp -r runs/shapes-nll/prior noisear_rl/assets/shapes_prior"
)


def shipped_shapes_prior_path() -> Path:
    """The shipped Shapes prior's folder.

    Raises:
        FileNotFoundError: It is missing; the message gives the command that creates it.
    """
    return require_saved(
        SHAPES_PRIOR, "config.json", "shipped Shapes prior",
        f"create it with `{SHAPES_PRIOR_COMMAND}`, or pass a prior folder",
    )
