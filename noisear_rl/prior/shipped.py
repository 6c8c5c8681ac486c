"""The NLL-pretrained prior that ships for the Shapes world, and how to make it."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

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
    if not (SHAPES_PRIOR / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped Shapes prior {SHAPES_PRIOR} does not exist; create it with `{SHAPES_PRIOR_COMMAND}`, "
            "or pass a prior folder"
        )
    return SHAPES_PRIOR
