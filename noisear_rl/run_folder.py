"""A training run's folder: config, metrics, checkpoints, image grids, reward curve, summary.

Layout:

    config.json                  the run's settings (written at start)
    metrics.jsonl                one JSON object per logged iteration ("iteration" + metrics)
    tensorboard/                 the same scalars for TensorBoard
    checkpoints/step-000012/     tensors.safetensors + state.json (the last N kept)
    images/eval-000012.png       image grids of the fixed evaluation prompts
    reward_curve.png             training and held-out reward over iterations
    summary.json                 the final summary (also printed)
    prior/                       the final prior (`NoiseARPrior.from_pretrained` loads it)

Checkpoints hold tensors in safetensors and everything else in JSON (never pickle). Each is
written into a temporary folder that is renamed into place, so a checkpoint folder that exists
is complete; a run killed at any moment resumes from its newest one.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from noisear_rl.io import atomic_folder, atomic_write, write_json

CHECKPOINTS = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^step-(\d{6,})$")
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the run."""


# ------------------------------------------------------------------------------ state trees
def flatten_state(tree: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Splits a nested state (dicts, lists, tuples, tensors, numbers, strings) into a JSON tree
    and a flat dict of tensors; tensors are replaced by {"__tensor__": key}. Dicts with non-string
    keys (an optimizer's per-parameter state) and tuples survive the round trip."""
    tensors: dict[str, Tensor] = {}

    def encode(node: Any, path: str) -> Any:
        if isinstance(node, Tensor):
            tensors[path] = node.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(node, dict):
            if all(isinstance(k, str) for k in node):
                return {k: encode(v, f"{path}.{k}" if path else k) for k, v in node.items()}
            return {"__items__": [[k, encode(v, f"{path}.{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [encode(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [encode(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} at {path!r} in a checkpoint")

    return encode(tree, prefix), tensors


def unflatten_state(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of `flatten_state`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__items__" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["__items__"]}
        if "__tuple__" in tree:
            return tuple(unflatten_state(v, tensors) for v in tree["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


# ------------------------------------------------------------------------------ checkpoints
def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoint folders, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Writes `state` as `checkpoints/step-{step}` atomically and deletes all but the newest `keep`."""
    target = Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"
    tree, tensors = flatten_state(state)
    with atomic_folder(target) as tmp:  # a resumed run may write the same step again
        save_file(tensors, str(tmp / TENSORS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "state": tree}, indent=1) + "\n")
    for old in checkpoint_dirs(run_dir)[: -max(1, keep)]:
        shutil.rmtree(old)
    return target


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, Any]]:
    """Reads a checkpoint folder; returns (step, state).

    Raises:
        CheckpointError: The folder or one of its files is missing or unreadable; the message
            says how to go on.
    """
    path = Path(path)
    fix = (
        f"delete {path} to resume from the previous checkpoint (if any), "
        "or start a new run without --resume"
    )
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    for name in (TENSORS_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete ({name} missing); {fix}")
    try:
        tensors = load_file(str(path / TENSORS_FILE))
        record = json.loads((path / STATE_FILE).read_text())
        step, tree = int(record["step"]), record["state"]
        state = unflatten_state(tree, tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(error).__name__}: {error}); {fix}") from error
    return step, state


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint folder of the run.

    Raises:
        CheckpointError: The run has none.
    """
    found = checkpoint_dirs(run_dir)
    if not found:
        raise CheckpointError(
            f"nothing to resume: {Path(run_dir) / CHECKPOINTS} holds no checkpoint; run without --resume to start"
        )
    return found[-1]


# ------------------------------------------------------------------------------ the folder
class RunFolder:
    """Writes a run's artefacts (call from the main process only).

    Args:
        root: The run folder (created if missing).
        resume_step: When resuming from a checkpoint at this iteration: metrics logged after it
            are dropped (they are logged again), in the JSONL file and in TensorBoard.
        tensorboard: Also write TensorBoard event files.
    """

    def __init__(self, root: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.root / "metrics.jsonl"
        if resume_step is None:
            self.metrics_path.unlink(missing_ok=True)
        else:
            kept = [r for r in self.read_metrics() if r.get("iteration", 0) <= resume_step]
            lines = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.metrics_path, lambda tmp: tmp.write_text(lines))
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(str(self.root / "tensorboard"), purge_step=purge)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.root / "config.json", config)

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        """Appends one JSONL record and the same scalars to TensorBoard."""
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps({"iteration": iteration, **clean}) + "\n")
        if self._writer is not None:
            for key, value in clean.items():
                if value is not None:
                    self._writer.add_scalar(key, value, iteration)
            self._writer.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def save_image_grid(self, name: str, images: Tensor, captions: list[str], columns: int = 8, scale: int = 4) -> Path:
        """Saves images [N, 3, H, W] in [0, 1] as one captioned PNG grid under images/."""
        path = self.root / "images" / f"{name}.png"
        grid = image_grid(images, captions, columns, scale)
        atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
        return path

    def plot_reward_curve(self, keys: dict[str, str]) -> Path:
        """Plots the logged metrics named in `keys` (metric -> legend label) over iterations."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        records = self.read_metrics()
        figure, axis = plt.subplots(figsize=(7, 4))
        for key, label in keys.items():
            points = [(r["iteration"], r[key]) for r in records if r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                axis.plot(xs, ys, marker="o" if len(points) < 30 else None, label=label)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set_xlabel("iteration")
        axis.set_ylabel("reward")
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        path = self.root / "reward_curve.png"
        atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
        plt.close(figure)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def image_grid(images: Tensor, captions: list[str], columns: int = 8, scale: int = 4) -> Any:
    """A PIL image: `images` [N, 3, H, W] in [0, 1] upscaled by `scale`, each above its caption."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    n, _, h, w = images.shape
    cell_w, cell_h = w * scale, h * scale
    chars = max(8, cell_w // 6)
    wrapped = [textwrap.wrap(c, chars)[:5] for c in captions]
    text_h = 11 * max((len(lines) for lines in wrapped), default=0) + 4
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    canvas = Image.new("RGB", (columns * (cell_w + 4), rows * (cell_h + text_h + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        x, y = (i % columns) * (cell_w + 4), (i // columns) * (cell_h + text_h + 4)
        canvas.paste(Image.fromarray(pixels[i]).resize((cell_w, cell_h), Image.NEAREST), (x, y))
        for j, line in enumerate(wrapped[i]):
            draw.text((x + 1, y + cell_h + 2 + 11 * j), line, fill="black", font=font)
    return canvas
