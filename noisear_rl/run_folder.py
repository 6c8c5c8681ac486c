"""A training run's folder: config, metrics, checkpoints, image grids, reward curve, summary.

Layout:

    config.json                  the run's settings (written at start)
    metrics.jsonl                one JSON object per logged iteration ("iteration" + metrics)
    tensorboard/                 the same scalars, the image grids and the config (hyperparameters) for TensorBoard
    wandb/                       with --report-to wandb: Weights & Biases' files (the same scalars, grids, config)
    checkpoints/step-000012/     tensors.safetensors + state.json (the last N kept)
    images/eval-000012.png       image grids of the fixed evaluation prompts (green/red border: passed/failed)
    reward_curve.png             training and held-out reward over iterations
    summary.json                 the final summary (also printed)
    prior/                       the final prior (`NoiseARPrior.from_pretrained` loads it)

Checkpoints hold tensors in safetensors and everything else in JSON (never pickle). Each is
written into a temporary folder that is renamed into place, so a checkpoint folder that exists
is complete; a run killed at any moment resumes from its newest one. The tensors file's metadata
holds a checksum of its tensors and of state.json, verified on load: a damaged or edited
checkpoint is an error that names it.

A run is written only into a new or empty folder, or resumed in its own (`inspect_run_folder`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from noisear_rl.grids import image_grid
from noisear_rl.io import (
    CorruptFileError,
    atomic_folder,
    atomic_write,
    clear_killed_writes,
    inspect_output_folder,
    load_safetensors,
    read_json,
    save_safetensors,
    write_json,
)
from noisear_rl.reporters import Reporter, make_reporters

CHECKPOINTS = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^step-(\d{6,})$")
_NUMBERED_NAME = re.compile(r"^(.*?)-(\d+)$")  # an image grid's name "eval-000012": tag and step
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
STATE_CHECKSUM = "state.json sha256"
"""The tensors file's metadata key holding the checksum of the checkpoint's state.json."""
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"


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
    state_text = json.dumps({"step": step, "state": tree}, indent=1) + "\n"
    with atomic_folder(target) as tmp:  # a resumed run may write the same step again
        (tmp / STATE_FILE).write_text(state_text)
        save_safetensors(tmp / TENSORS_FILE, tensors, {STATE_CHECKSUM: _sha256(state_text)})
    for old in checkpoint_dirs(run_dir)[: -max(1, keep)]:
        shutil.rmtree(old)
    return target


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, Any]]:
    """Reads a checkpoint folder and verifies its checksums; returns (step, state).

    Raises:
        CheckpointError: The folder or one of its files is missing, unreadable, or does not match
            its checksum (damaged or edited); the message says what to delete to go on.
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
        tensors, metadata = load_safetensors(path / TENSORS_FILE, fix)
        state_text = (path / STATE_FILE).read_text(encoding="utf-8")
        if STATE_CHECKSUM in metadata and metadata[STATE_CHECKSUM] != _sha256(state_text):
            raise CorruptFileError(path / STATE_FILE, "its content does not match its checksum", fix)
        record = json.loads(state_text)
        step, tree = int(record["step"]), record["state"]
        state = unflatten_state(tree, tensors)
    except CorruptFileError as error:
        raise CheckpointError(f"checkpoint {path} is corrupt ({error.path.name}: {error.reason}); {fix}") from error
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(error).__name__}: {error}); {fix}") from error
    named = _CHECKPOINT_NAME.match(path.name)
    if named and int(named.group(1)) != step:
        raise CheckpointError(f"checkpoint {path} is corrupt ({STATE_FILE} says step {step}); {fix}")
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


def inspect_run_folder(run_dir: str | Path) -> dict[str, Any] | None:
    """The stored settings (config.json) of the run in `run_dir`; None for a new or empty folder.

    Raises:
        FileExistsError: `run_dir` holds other things (a user's files, another command's output).
        CorruptFileError: Its config.json is not readable JSON.
    """
    return inspect_output_folder(run_dir, CONFIG_FILE, _is_run_config, "training run", "choose a new or empty --output-dir")


def _is_run_config(record: Any) -> bool:
    """Whether a config.json record is a training run's (what `train` writes)."""
    return isinstance(record, dict) and isinstance(record.get("run"), dict) and isinstance(record.get("algorithm"), dict)


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The summary of a finished run (summary.json, written last), or None while it is unfinished.

    Raises:
        CorruptFileError: summary.json is not readable JSON.
    """
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    fix = f"delete it and rerun with --resume to redo the final evaluation of {run_dir}"
    summary = read_json(path, fix)
    if not isinstance(summary, dict):
        raise CorruptFileError(path, "not a summary", fix)
    return summary


# ------------------------------------------------------------------------------ the folder
def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as {"run.lr": 1e-05, ...}: numbers, booleans and strings kept, anything else
    (None, lists, paths) as its text; what TensorBoard's hyperparameters take."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def write_hparams(writer: Any, config: dict[str, Any], metrics: Sequence[str]) -> None:
    """Writes `config` to a `SummaryWriter`'s own run: as hyperparameters (HParams tab, with the
    logged scalars `metrics`; `add_hparams` would make a second run) and as JSON text (Text tab)."""
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams(flatten_config(config), {metric: 0.0 for metric in metrics}):
        writer.file_writer.add_summary(summary)
    text = json.dumps(config, indent=1, default=str)
    writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)  # indented: Markdown code
    writer.flush()


class RunFolder:
    """Writes a run's artefacts (call from the main process only).

    Opening it removes what writes killed mid-way left in it (temporary files and folders).

    Args:
        root: The run folder (created if missing); new, empty, or this run's own.
        resume_step: When resuming from a checkpoint at this iteration: what was logged after it
            is dropped (it is logged again), in the JSONL file and in TensorBoard; one record per
            iteration is kept (the checkpoint's iteration logged once before it was written; a
            second record of it is the final evaluation, which is redone). None: a start from
            scratch, which drops every earlier metric.
        tensorboard: Also write TensorBoard event files.
        config: The run's settings, written to config.json before anything else (so that a
            folder holding anything of a run holds its config.json), and to TensorBoard (as
            hyperparameters and as text); None keeps the stored ones.
        hparam_metrics: The logged scalars TensorBoard's hyperparameter table shows with them.
        report_to: Services that also get the scalars, grids and config (`noisear_rl.reporters`).
    """

    def __init__(
        self, root: str | Path, resume_step: int | None = None, tensorboard: bool = True,
        config: dict[str, Any] | None = None, hparam_metrics: Sequence[str] = ("eval/reward", "eval/success"),
        report_to: Sequence[str] = (),
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        clear_killed_writes(self.root)
        if config is not None:
            self.write_config(config)
        self.metrics_path = self.root / "metrics.jsonl"
        if resume_step is None:
            self.metrics_path.unlink(missing_ok=True)
        else:
            kept: dict[int, dict[str, Any]] = {}
            for record in self.read_metrics():
                iteration = record.get("iteration", 0)
                if iteration <= resume_step and iteration not in kept:
                    kept[iteration] = record
            lines = "".join(json.dumps(r) + "\n" for r in kept.values())
            atomic_write(self.metrics_path, lambda tmp: tmp.write_text(lines))
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = 0 if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(str(self.root / "tensorboard"), purge_step=purge)
            if config is not None:
                write_hparams(self._writer, config, hparam_metrics)
        self._reporters: list[Reporter] = []
        if report_to:
            stored = config if config is not None else read_json(self.root / CONFIG_FILE, "start the run in a new folder")
            self._reporters = make_reporters(report_to, self.root, stored)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.root / CONFIG_FILE, config)

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
        for reporter in self._reporters:
            reporter.log(iteration, {k: v for k, v in clean.items() if v is not None})

    def read_metrics(self) -> list[dict[str, Any]]:
        """The logged records; a line a killed append left unfinished (the last) is skipped.

        Raises:
            CorruptFileError: A line other than the last is not JSON.
        """
        if not self.metrics_path.is_file():
            return []
        lines = [line for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except ValueError as error:
                if number < len(lines):
                    raise CorruptFileError(self.metrics_path, f"line {number} is not JSON: {error}", "delete the line") from error
        return records

    def save_image_grid(
        self, name: str, images: Tensor, captions: list[str], columns: int = 8, scale: int = 4,
        success: Sequence[float | bool | None] | None = None, step: int | None = None,
    ) -> Path:
        """Saves images [N, 3, H, W] in [0, 1] as one captioned PNG grid under images/, and the same
        grid to TensorBoard: a name "eval-000012" as image "images/eval" at step 12 (`step`, when
        given, wins; a name without a number is its own tag, at step 0).

        Args:
            success: Per image, its success value when known: a green (passed) or red border.
        """
        path = self.root / "images" / f"{name}.png"
        grid = image_grid(images, captions, columns, scale, success)
        atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
        numbered = _NUMBERED_NAME.match(name)
        tag, number = (numbered.group(1), int(numbered.group(2))) if numbered else (name, 0)
        if self._writer is not None:
            self._writer.add_image(f"images/{tag}", np.asarray(grid), number if step is None else step, dataformats="HWC")
            self._writer.flush()
        for reporter in self._reporters:
            reporter.image(f"images/{tag}", grid, number if step is None else step)
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
        for reporter in self._reporters:
            reporter.close()
