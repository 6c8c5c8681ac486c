"""Where a training run reports besides its folder and TensorBoard: `--report-to wandb`.

Weights & Biases is optional (not a dependency): asking for it without `wandb` installed is a
one-line error before any work. A reporter gets what the run folder logs: the scalars of each
logged iteration, the image grids and the run's config.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

REPORTERS = ("wandb",)


class Reporter(Protocol):
    """What a run folder sends its metrics and images to."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def image(self, tag: str, image: Any, step: int) -> None: ...

    def close(self) -> None: ...


def check_report_to(names: Sequence[str]) -> None:
    """Raises a ValueError naming the fix for an unknown service or one whose package is missing."""
    for name in names:
        if name not in REPORTERS:
            raise ValueError(f"--report-to {name}: unknown service; valid: {', '.join(REPORTERS)}")
        try:
            importlib.import_module(name)
        except ImportError:
            raise ValueError(f"--report-to {name}: the {name} package is not installed; `pip install {name}` "
                             "(it is optional), or leave out --report-to") from None


def make_reporters(names: Sequence[str], root: Path, config: dict[str, Any]) -> list[Reporter]:
    """The reporters of the services `names` (checked by `check_report_to`) for the run in `root`."""
    return [WandbReporter(root, config) for name in names if name == "wandb"]


class WandbReporter:
    """Sends a run's scalars, image grids and config to Weights & Biases (project $WANDB_PROJECT, else
    noisear-rl). The run's id is derived from its folder and config, so a resumed run continues it.

    Args:
        root: The run folder (wandb's files go to root/wandb).
        config: The run's settings (its config.json).
    """

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        import wandb

        text = f"{Path(root).resolve()}\n{json.dumps(config, sort_keys=True, default=str)}"
        self._wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "noisear-rl", name=Path(root).name, dir=str(root),
            id=hashlib.sha256(text.encode()).hexdigest()[:16], resume="allow", config=config,
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def image(self, tag: str, image: Any, step: int) -> None:
        self.run.log({tag: self._wandb.Image(image)}, step=step)

    def close(self) -> None:
        self.run.finish()
