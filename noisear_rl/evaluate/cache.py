"""The evaluation's disk cache: one file per (source, seed) cell, keyed by what determines it.

Cells are written atomically with a checksum of their content (safetensors: metric columns and
grid images; JSON metadata). A cell is reused only when its identity (settings, source spec,
seed, and the fingerprint of the files a path argument names) matches; a damaged one is
reported and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from noisear_rl.evaluate.config import EvaluateConfig
from noisear_rl.io import CorruptFileError, load_safetensors, save_safetensors
from noisear_rl.noise_sources import parse_spec

CELL_FORMAT = "noisear-rl evaluation cell v1"


@dataclass
class Cell:
    """The results of one source on all prompts for one seed.

    Attributes:
        values: Metric column -> [P] per-prompt values.
        grid_images: [G, 3, h, w] uint8 images of the grid prompts.
        timing: noise_seconds, generate_seconds, images (cells stored before may also hold
            reward_seconds, which nothing reads).
    """

    values: dict[str, Tensor]
    grid_images: Tensor
    timing: dict[str, float]


def cell_path(output_dir: Path, label: str, seed: int) -> Path:
    """Where the cell of source `label` and `seed` is stored under `output_dir`."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("_") or "source"
    digest = hashlib.sha256(label.encode()).hexdigest()[:8]
    return output_dir / "cells" / f"{slug}-{digest}" / f"seed-{seed}.safetensors"


def cell_settings(config: EvaluateConfig, prompts: list[str]) -> dict[str, Any]:
    """What determines a cell's content besides its source and seed."""
    return {
        "format": CELL_FORMAT,
        "backend": config.backend,
        "model": config.model,
        "dtype": config.dtype,
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": config.guidance_scale,
        "metrics": list(config.metrics),
        "batch_size": config.batch_size,
        "grid_prompts": config.grid_prompts,
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
    }


def cell_identity(settings: dict[str, Any], spec: str, seed: int) -> str:
    """The text a stored cell must carry to be reused: the settings, the source (its label left
    out) and the seed, and for a source whose argument is a path, its files' fingerprint."""
    parsed = parse_spec(spec)
    options = {k: v for k, v in parsed.options.items() if k != "label"}  # the label only names the cell
    identity = settings | {"source": [parsed.name, parsed.argument, options], "seed": seed}
    files = files_fingerprint(parsed.argument)
    if files is not None:
        identity["source_files"] = files
    return json.dumps(identity, sort_keys=True, default=str)


def files_fingerprint(argument: str | None) -> str | None:
    """A digest of the size and modification time of every file under a source argument that is a
    path (None otherwise): a cell is recomputed when the weights it came from were retrained or
    replaced under the same name."""
    if argument is None or not Path(argument).exists():
        return None
    root = Path(argument)
    files = sorted(path for path in ([root] if root.is_file() else root.rglob("*")) if path.is_file())
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root) if path != root else path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def write_cell(path: Path, cell: Cell, identity: str) -> None:
    """Stores a finished cell atomically (safetensors: metric columns, grid images; JSON metadata;
    a checksum of it all)."""
    tensors = {f"metric/{column}": values for column, values in cell.values.items()}
    tensors["grid_images"] = cell.grid_images
    metadata = {"identity": identity, "timing": json.dumps(cell.timing), "columns": json.dumps(list(cell.values))}
    save_safetensors(path, tensors, metadata)


def read_cell(path: Path, identity: str) -> Cell | None:
    """The stored cell at `path` if it was computed with `identity`; None if there is none, or it
    was computed with other settings.

    Raises:
        CorruptFileError: The cell is damaged (unreadable, or its content does not match its
            checksum); the message names it.
    """
    if not path.is_file():
        return None
    fix = "delete it, or rerun the evaluation, which recomputes it"
    tensors, metadata = load_safetensors(path, fix)
    if metadata.get("identity") != identity:
        return None
    try:
        columns = json.loads(metadata["columns"])
        values = {column: tensors[f"metric/{column}"] for column in columns}
        return Cell(values, tensors["grid_images"], json.loads(metadata["timing"]))
    except (KeyError, ValueError, TypeError) as error:
        raise CorruptFileError(path, f"incomplete: {type(error).__name__} {error}", fix) from error


def stored_cell(path: Path, identity: str) -> Cell | None:
    """`read_cell`, with a damaged cell reported and treated as missing (it is recomputed)."""
    try:
        return read_cell(path, identity)
    except CorruptFileError as error:
        print(f"note: {path} is damaged ({error.reason}); recomputing it", file=sys.stderr)
        return None
