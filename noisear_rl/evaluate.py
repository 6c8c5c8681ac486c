"""Compare noise sources on a prompt set: `python -m noisear_rl.evaluate`.

Every source gets the same prompts, the same pipeline and the same seeds: for each seed the prompts
are cut into fixed chunks of --batch-size, and chunk i of seed s hands every source a generator
seeded by (s, i); sources that start from Gaussian noise draw it first, so they all start from the
same noises. Each image is scored by every metric (a reward name or composite spec); a reward's
details become metrics too (the Shapes verifier's `shapes.success` is the success rate).

A table cell is the mean over prompts x seeds with a 95% confidence interval: a Student t
interval over the per-prompt means (each prompt's mean over the seeds), so prompts are the
independent unit. Time per image is measured per source: the noise (the source's call: for
best-of-n its N generations and rewards) and the noise plus the image generation.

Outputs in --output-dir: results.md (Markdown table), results.csv (one row per source and
metric), results.json (everything), grid.png (prompts x sources, first seed), bars.png, and
config.json. Results are stored per (source, seed) in cells/ as soon as they are finished
(atomically, with a checksum of their content); rerunning the same command skips finished cells,
so an interrupted evaluation resumes, and recomputes a damaged one. Cells are keyed by the spec
text, the settings and, for a source whose argument is a path, the sizes and modification times
of the files under it: weights retrained in place are evaluated again. Every input (specs,
prompts, the sources' weights) is checked before anything is written; --output-dir must be new,
empty, or an evaluation's own folder. Example (the Shapes world):

    python -m noisear_rl.evaluate --backend shapes --metrics shapes --seeds 0 1 2 \\
        --sources gaussian golden:runs/shapes-npnet erasure-injection \\
                  "noisear:runs/shapes-nll/prior" "noisear:runs/dpo?label=noisear+dpo" best-of-n:8 \\
        --output-dir runs/eval
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from noisear_rl.checks import check_at_least, check_device, check_finite
from noisear_rl.cli import DEBUG_HELP, run_command
from noisear_rl.io import (
    CorruptFileError,
    atomic_write,
    clear_killed_writes,
    inspect_output_folder,
    load_safetensors,
    save_safetensors,
    write_json,
)
from noisear_rl.noise_sources import NoiseSource, load_noise_source, parse_spec, source_label
from noisear_rl.noise_sources.base import check_spec, encode_on_cpu
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.factory import check_backend_name
from noisear_rl.reward_models import RewardModel, check_reward_spec, load_reward
from noisear_rl.reward_models.clip_rewards import as_dtype
from noisear_rl.seeds import derive_seed

CELL_FORMAT = "noisear-rl evaluation cell v1"
CONFIG_FILE = "config.json"
GRID_MAX_SIDE = 256  # grid images are stored downscaled to at most this many pixels a side


@dataclass
class EvaluateConfig:
    """Noise sources x metrics on a prompt set (`python -m noisear_rl.evaluate`)."""

    sources: tuple[str, ...] = ("gaussian",)
    """Noise-source specs NAME[:ARGUMENT][?KEY=VALUE&...]: gaussian, golden:FOLDER, erasure-injection,
    noisear:FOLDER?temperature=T, best-of-n:N; `label=NAME` names a source in the tables
    (see `noisear_rl.noise_sources.base`). Quote specs holding '?' or '&' in a shell."""
    metrics: tuple[str, ...] = ("shapes",)
    """Reward names or composite specs scored on every image; the first also selects for best-of-n."""
    backend: str = "shapes"
    """Diffusion backend: shapes, sdxl, dreamshaper, hunyuan-dit, tiny-sdxl, tiny-hunyuan-dit."""
    model: str | None = None
    """Hub id or local folder of the backend's weights (default: the backend's own)."""
    device: str = "cpu"
    """Device of the backend, the sources and the rewards."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Backend weights/activations dtype."""
    num_inference_steps: int | None = None
    """Denoising steps (None: the backend's default)."""
    guidance_scale: float | None = None
    """Classifier-free guidance (None: the backend's default)."""
    prompts: str = "eval"
    """"eval": the backend's evaluation split (Shapes: `evaluation_prompts()`, 564 prompts; others:
    the shipped prompt list); "train" (Shapes): the 588 prompts of its training split; or a
    prompt file (one a line, or .jsonl with a "prompt" field)."""
    num_prompts: int | None = None
    """Use only the first N prompts (None: all)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: each gives every prompt one noise per source."""
    batch_size: int = 64
    """Prompts per source call and per pipeline call (part of what a seed means: changing it
    changes the noises)."""
    output_dir: Path = Path("runs/eval")
    """Where the tables, plots and per-cell results go; rerunning there resumes."""
    grid_prompts: int = 8
    """Prompts (evenly spaced over the set) shown in grid.png."""
    overwrite: bool = False
    """Recompute every cell even when a finished one is stored."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    progress: bool = True
    """Show a progress bar."""


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


def evaluate(
    config: EvaluateConfig,
    backend: DiffusionBackend | None = None,
    rewards: dict[str, RewardModel] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the evaluation and writes its outputs; returns the summary (results.json).

    Args:
        config: The settings.
        backend: An already-built backend instead of `config.backend` (tests, notebooks).
        rewards: Already-built reward models by metric name, instead of loading `config.metrics`.
    """
    _check_config(config)
    if backend is None:
        check_backend_name(config.backend)
    for metric in config.metrics:
        if metric not in (rewards or {}):
            check_reward_spec(metric)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    output_dir = Path(config.output_dir)
    labels = [source_label(spec) for spec in config.sources]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"sources {duplicates} appear more than once; give each a distinct `?label=NAME`")
    prompts = load_prompts(config)
    grid_rows = _grid_rows(len(prompts), config.grid_prompts)
    inspect_output_folder(
        output_dir, CONFIG_FILE, lambda record: isinstance(record, dict) and {"sources", "metrics", "labels"} <= set(record),
        "evaluation", "choose a new or empty --output-dir",
    )
    settings = _settings(config, prompts)
    todo = [
        (spec, label, seed)
        for spec, label in zip(config.sources, labels)
        for seed in config.seeds
        if config.overwrite or _stored_cell(_cell_path(output_dir, label, seed), _identity(settings, spec, seed)) is None
    ]
    reward_models: dict[str, RewardModel] = {}
    if todo:  # a finished evaluation only rewrites its tables: nothing to load
        backend = backend if backend is not None else _load_backend(config)
        given = rewards or {}
        reward_models = {m: (given[m] if m in given else load_reward(m)).to(backend.device) for m in config.metrics}
        for spec in dict.fromkeys(spec for spec, _, _ in todo):  # each source loads (so is checked) before any work
            load_noise_source(spec, backend=backend, reward=reward_models[config.metrics[0]])

    # Everything is checked: only now is --output-dir written.
    output_dir.mkdir(parents=True, exist_ok=True)
    clear_killed_writes(output_dir)
    write_json(output_dir / CONFIG_FILE, asdict(config) | {"labels": labels, "num_prompts_used": len(prompts)})
    if todo:
        run_cells(todo, config, backend, reward_models, prompts, settings, grid_rows)

    cells = {
        label: [read_cell(_cell_path(output_dir, label, seed), _identity(settings, spec, seed)) for seed in config.seeds]
        for spec, label in zip(config.sources, labels)
    }
    summary = summarise(cells, config, len(prompts))  # type: ignore[arg-type]
    write_outputs(output_dir, summary, cells, [prompts[i] for i in grid_rows])  # type: ignore[arg-type]
    return summary


# ------------------------------------------------------------------------------ running cells
def run_cells(
    todo: list[tuple[str, str, int]],
    config: EvaluateConfig,
    backend: DiffusionBackend,
    rewards: dict[str, RewardModel],
    prompts: list[str],
    settings: dict[str, Any],
    grid_rows: list[int],
) -> None:
    """Computes and stores the (spec, label, seed) cells in `todo`, one source in memory at a time."""
    from tqdm.auto import tqdm

    cond = encode_on_cpu(backend, prompts, config.batch_size)  # on the CPU until a chunk is used
    bar = tqdm(total=len(todo) * math.ceil(len(prompts) / config.batch_size), unit="batch", desc="evaluate",
               disable=not config.progress)
    _warm_up(backend, rewards, prompts[:1], cond[:1])
    loaded: tuple[str, NoiseSource] | None = None
    for spec, label, seed in todo:
        if loaded is None or loaded[0] != label:
            loaded = None  # free the previous source first
            source = load_noise_source(spec, backend=backend, reward=rewards[config.metrics[0]])
            _call_source(source, prompts[:1], cond[:1].to(backend.device), torch.Generator(device=backend.device).manual_seed(0))  # warm-up
            loaded = (label, source)
        bar.set_postfix_str(f"{label} seed {seed}")
        cell = run_cell(loaded[1], backend, rewards, prompts, cond, seed, config.batch_size, grid_rows, bar)
        write_cell(_cell_path(Path(config.output_dir), label, seed), cell, _identity(settings, spec, seed))
    bar.close()


def run_cell(
    source: NoiseSource,
    backend: DiffusionBackend,
    rewards: dict[str, RewardModel],
    prompts: list[str],
    cond: Condition,
    seed: int,
    batch_size: int,
    grid_rows: list[int],
    bar: Any = None,
) -> Cell:
    """One source on every prompt for one seed: noises, images, metrics, timing."""
    columns: dict[str, list[Tensor]] = {}
    timing = {"noise_seconds": 0.0, "generate_seconds": 0.0, "images": float(len(prompts))}
    grid: dict[int, Tensor] = {}
    for chunk, first in enumerate(range(0, len(prompts), batch_size)):
        rows = list(range(first, min(first + batch_size, len(prompts))))
        chunk_prompts, chunk_cond = [prompts[i] for i in rows], cond[first : first + len(rows)].to(backend.device)
        generator = torch.Generator(device=backend.device).manual_seed(derive_seed(seed, chunk))
        start = _now(backend.device)
        noise = _call_source(source, chunk_prompts, chunk_cond, generator)
        made = _now(backend.device)
        sampler = torch.Generator(device=backend.device).manual_seed(seed)
        with torch.no_grad():
            images = backend.generate(noise, chunk_cond, generator=sampler).float()
        generated = _now(backend.device)
        for metric, reward in rewards.items():
            output = reward.evaluate(images, chunk_prompts)
            for column, values in metric_columns(metric, output.scores, output.details, len(rows)).items():
                columns.setdefault(column, []).append(values)
        timing["noise_seconds"] += made - start
        timing["generate_seconds"] += generated - made
        for i, row in enumerate(rows):
            if row in grid_rows:
                grid[row] = _thumbnail(images[i])
        if bar is not None:
            bar.update(1)
    grid_images = torch.stack([grid[row] for row in grid_rows]) if grid_rows else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    return Cell({column: torch.cat(parts) for column, parts in columns.items()}, grid_images, timing)


def metric_columns(metric: str, scores: Tensor, details: dict[str, Tensor], batch: int) -> dict[str, Tensor]:
    """A reward's scores and per-sample details as metric columns: `metric`, `metric.success`, ..."""
    columns = {metric: scores.detach().float().cpu()}
    ordered = sorted(details, key=lambda name: name != "success")  # the success rate first, if any
    for name in ordered:
        value = details[name]
        if value.shape == (batch,):
            columns[f"{metric}.{name}"] = value.detach().float().cpu()
    return columns


@torch.no_grad()
def _call_source(source: NoiseSource, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
    return source(prompts, cond, generator)


def _warm_up(backend: DiffusionBackend, rewards: dict[str, RewardModel], prompts: list[str], cond: Condition) -> None:
    """One untimed generation and scoring, so no source pays the backend's first-call costs."""
    with torch.no_grad():
        images = backend.generate(backend.random_latents(1), cond).float()
    for reward in rewards.values():
        reward.evaluate(images, prompts)


def _now(device: torch.device | str) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _thumbnail(image: Tensor) -> Tensor:
    """[3, H, W] in [0, 1] -> uint8, downscaled to at most GRID_MAX_SIDE pixels a side."""
    image = image.detach().float().cpu().clamp(0, 1)
    side = max(image.shape[-2:])
    if side > GRID_MAX_SIDE:
        size = [round(s * GRID_MAX_SIDE / side) for s in image.shape[-2:]]
        image = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
    return (image * 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------ cells on disk
def _cell_path(output_dir: Path, label: str, seed: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("_") or "source"
    digest = hashlib.sha256(label.encode()).hexdigest()[:8]
    return output_dir / "cells" / f"{slug}-{digest}" / f"seed-{seed}.safetensors"


def _settings(config: EvaluateConfig, prompts: list[str]) -> dict[str, Any]:
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


def _identity(settings: dict[str, Any], spec: str, seed: int) -> str:
    parsed = parse_spec(spec)
    options = {k: v for k, v in parsed.options.items() if k != "label"}  # the label only names the cell
    identity = settings | {"source": [parsed.name, parsed.argument, options], "seed": seed}
    files = _files_fingerprint(parsed.argument)
    if files is not None:
        identity["source_files"] = files
    return json.dumps(identity, sort_keys=True, default=str)


def _files_fingerprint(argument: str | None) -> str | None:
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


def _stored_cell(path: Path, identity: str) -> Cell | None:
    """`read_cell`, with a damaged cell reported and treated as missing (it is recomputed)."""
    try:
        return read_cell(path, identity)
    except CorruptFileError as error:
        print(f"note: {path} is damaged ({error.reason}); recomputing it", file=sys.stderr)
        return None


# ------------------------------------------------------------------------------ statistics
def t_quantile(probability: float, df: int) -> float:
    """The Student t quantile (df >= 1), by bisection on the CDF integrated with Simpson's rule."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        ts = np.linspace(0.0, x, 4001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(ts**2 / df))
        simpson = (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum()) * (x / 4000) / 3
        return 0.5 + simpson

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


def mean_ci(values_SP: Tensor) -> tuple[float, float, float]:
    """(mean, 95% CI low, high) of values [seeds, prompts]: a t interval over the per-prompt means
    (over the per-seed values when there is a single prompt); NaN bounds with one unit."""
    units = values_SP.double().mean(dim=0) if values_SP.shape[1] > 1 else values_SP.double().flatten()
    mean = float(units.mean())
    if len(units) < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(0.975, len(units) - 1) * float(units.std(unbiased=True)) / math.sqrt(len(units))
    return mean, mean - half, mean + half


def summarise(cells: dict[str, list[Cell]], config: EvaluateConfig, num_prompts: int) -> dict[str, Any]:
    """Per source: every metric's mean and 95% CI, its paired difference from the first source
    (same prompts and seeds, so the interval is over per-prompt mean differences), and the time
    per image."""
    results: dict[str, Any] = {}
    baseline = next(iter(cells))
    for label, seed_cells in cells.items():
        metrics = {}
        for column in seed_cells[0].values:
            values_SP = torch.stack([cell.values[column] for cell in seed_cells])
            mean, low, high = mean_ci(values_SP)
            metrics[column] = {"mean": mean, "ci95_low": low, "ci95_high": high}
            if label != baseline and column in cells[baseline][0].values:
                delta = mean_ci(values_SP - torch.stack([cell.values[column] for cell in cells[baseline]]))
                metrics[column] |= dict(zip(("delta", "delta_ci95_low", "delta_ci95_high"), delta))
        images = sum(cell.timing["images"] for cell in seed_cells)
        noise = sum(cell.timing["noise_seconds"] for cell in seed_cells)
        generate = sum(cell.timing["generate_seconds"] for cell in seed_cells)
        results[label] = {
            "metrics": metrics,
            "seconds_per_image": {"noise": noise / images, "noise_and_generation": (noise + generate) / images,
                                  "generation": generate / images},
        }
    return {
        "backend": config.backend,
        "device": config.device,
        "num_prompts": num_prompts,
        "seeds": list(config.seeds),
        "ci": "95% Student t interval over per-prompt means (each prompt averaged over the seeds)",
        "baseline": baseline,
        "sources": dict(zip(results, config.sources)),
        "results": results,
    }


# ------------------------------------------------------------------------------ outputs
def write_outputs(output_dir: Path, summary: dict[str, Any], cells: dict[str, list[Cell]], grid_prompts: list[str]) -> None:
    """results.json, results.csv, results.md, grid.png and bars.png, each written atomically."""
    write_json(output_dir / "results.json", summary)
    atomic_write(output_dir / "results.csv", lambda tmp: tmp.write_text(results_csv(summary)))
    atomic_write(output_dir / "results.md", lambda tmp: tmp.write_text(results_markdown(summary)))
    if grid_prompts:
        from noisear_rl.run_folder import image_grid

        labels = list(cells)
        images = torch.stack([cells[label][0].grid_images[row] for row in range(len(grid_prompts)) for label in labels])
        captions = [f"{label}: {prompt}" for prompt in grid_prompts for label in labels]
        scale = max(1, 128 // max(images.shape[-2:]))
        grid = image_grid(images.float() / 255, captions, columns=len(labels), scale=scale)
        atomic_write(output_dir / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
    atomic_write(output_dir / "bars.png", lambda tmp: tmp.write_bytes(bar_plot_png(summary)))


def _metric_names(summary: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for result in summary["results"].values():
        names += [name for name in result["metrics"] if name not in names]
    return names


def results_csv(summary: dict[str, Any]) -> str:
    """One row per (source, metric) with the paired difference from the baseline source, plus
    the timing rows (no intervals)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = ("mean", "ci95_low", "ci95_high", "delta", "delta_ci95_low", "delta_ci95_high")
    writer.writerow(["source", "spec", "metric", *keys, "baseline", "num_prompts", "num_seeds"])
    n, seeds = summary["num_prompts"], len(summary["seeds"])
    for label, result in summary["results"].items():
        spec = summary["sources"][label]
        for metric, value in result["metrics"].items():
            numbers = [f"{value[k]:.6g}" if k in value else "" for k in keys]
            writer.writerow([label, spec, metric, *numbers, summary["baseline"], n, seeds])
        for kind, seconds in result["seconds_per_image"].items():
            writer.writerow([label, spec, f"seconds_per_image.{kind}", f"{seconds:.6g}", *[""] * 5, "", n, seeds])
    return buffer.getvalue()


def results_markdown(summary: dict[str, Any]) -> str:
    """Two tables, sources as rows: `mean ± half-width` per metric with the seconds per image, and
    the paired differences from the baseline source."""
    metrics = _metric_names(summary)
    baseline = summary["baseline"]
    lines = [
        f"Backend `{summary['backend']}` on {summary['device']}; {summary['num_prompts']} prompts x "
        f"{len(summary['seeds'])} seeds ({', '.join(map(str, summary['seeds']))}); mean ± half-width of the "
        f"{summary['ci']}. s/img: seconds per image for the noise alone, and for the noise plus the image.",
        "",
        "| source | " + " | ".join(metrics) + " | noise s/img | noise+image s/img |",
        "|---" * (len(metrics) + 3) + "|",
    ]
    for label, result in summary["results"].items():
        cells = [_interval(result["metrics"].get(metric), "") for metric in metrics]
        seconds = result["seconds_per_image"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seconds['noise']:.4f} | {seconds['noise_and_generation']:.4f} |")
    if len(summary["results"]) > 1:
        lines += [
            "",
            f"Difference from `{baseline}` on the same prompts and seeds (paired: the interval is over the "
            "per-prompt mean differences):",
            "",
            "| source | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        for label, result in summary["results"].items():
            if label != baseline:
                cells = [_interval(result["metrics"].get(metric), "delta", signed=True) for metric in metrics]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _interval(value: dict[str, float] | None, prefix: str, signed: bool = False) -> str:
    """`mean ± half-width` of `value[prefix]` and its interval ("" when absent)."""
    key = prefix or "mean"
    if value is None or key not in value:
        return ""
    low, high = value[f"{prefix}_ci95_low" if prefix else "ci95_low"], value[f"{prefix}_ci95_high" if prefix else "ci95_high"]
    text = f"{value[key]:+.3f}" if signed else f"{value[key]:.3f}"
    return text if math.isnan(low) else f"{text} ± {(high - low) / 2:.3f}"


def bar_plot_png(summary: dict[str, Any]) -> bytes:
    """One panel per metric: a bar per source with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = _metric_names(summary)
    labels = list(summary["results"])
    columns = min(3, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")(np.arange(len(labels)) % 10)
    for axis, metric in zip(axes.flat, metrics):
        values = [summary["results"][label]["metrics"].get(metric) for label in labels]
        means = [v["mean"] if v else float("nan") for v in values]
        errors = np.array([[v["mean"] - v["ci95_low"], v["ci95_high"] - v["mean"]] if v else [0, 0] for v in values]).T
        axis.bar(range(len(labels)), means, yerr=np.nan_to_num(errors), color=colours, capsize=3)
        axis.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        axis.set_title(metric, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.axis("off")
    title = f"{summary['backend']}: mean and 95% CI ({summary['num_prompts']} prompts x {len(summary['seeds'])} seeds)"
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ set-up
def load_prompts(config: EvaluateConfig) -> list[str]:
    """The prompt set (`noisear_rl.envs.prompts.prompt_set`); the first --num-prompts."""
    from noisear_rl.envs.prompts import prompt_set

    prompts = prompt_set(config.prompts, config.backend)
    return prompts[: config.num_prompts] if config.num_prompts is not None else prompts


def _load_backend(config: EvaluateConfig) -> DiffusionBackend:
    from noisear_rl.pipelines.factory import load_backend

    return load_backend(
        config.backend, model=config.model, device=config.device, dtype=as_dtype(config.dtype),
        num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
    )


def _grid_rows(num_prompts: int, count: int) -> list[int]:
    """`count` prompt indices evenly spaced over the set (first and last included)."""
    if count <= 0 or num_prompts == 0:
        return []
    return sorted({int(i) for i in np.linspace(0, num_prompts - 1, min(count, num_prompts)).round()})


def _check_config(config: EvaluateConfig) -> None:
    """Checks the settings that need no model or file: counts, ranges, names and specs, the device."""
    if not config.sources:
        raise ValueError("give at least one noise source (--sources gaussian ...)")
    if not config.metrics:
        raise ValueError("give at least one metric (--metrics shapes ...)")
    if not config.seeds:
        raise ValueError("give at least one seed (--seeds 0 1 2)")
    if len(set(config.seeds)) != len(config.seeds):
        raise ValueError(f"seeds must be distinct, got {config.seeds}")
    check_at_least(config, 1, ("batch_size", "num_prompts", "num_inference_steps", "threads"))
    check_at_least(config, 0, ("grid_prompts",))
    check_finite(config, ("guidance_scale",), minimum=0.0)
    check_device(config.device)
    for spec in config.sources:
        check_spec(spec)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.evaluate --help`; returns the exit status (2 after an error)."""
    return run_command(_command, argv)


def _command(argv: list[str]) -> None:
    import tyro

    config = tyro.cli(EvaluateConfig, args=argv, prog="python -m noisear_rl.evaluate", description=f"{__doc__}\n{DEBUG_HELP}")
    summary = evaluate(config)
    print((Path(config.output_dir) / "results.md").read_text(), end="")
    print(f"tables, grid and plot in {config.output_dir} ({len(summary['results'])} sources)")


if __name__ == "__main__":
    sys.exit(main())
