"""Running an evaluation: every (source, seed) cell not stored yet, then the summary and reports.

Every source gets the same prompts, the same pipeline and the same seeds: for each seed the
prompts are cut into fixed chunks of `batch_size`, and chunk i of seed s hands every source a
generator seeded by (s, i). Time per image is measured per source: the noise (the source's call)
and the noise plus the image generation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisear_rl.cli import import_modules, set_threads
from noisear_rl.evaluate.cache import Cell, cell_identity, cell_path, cell_settings, read_cell, stored_cell, write_cell
from noisear_rl.evaluate.config import CONFIG_FILE, EvaluateConfig, check_config, load_prompts
from noisear_rl.evaluate.reports import write_outputs
from noisear_rl.evaluate.stats import summarise
from noisear_rl.io import clear_killed_writes, inspect_output_folder, write_json
from noisear_rl.noise_sources import NoiseSource, load_noise_source, source_label
from noisear_rl.noise_sources.base import encode_on_cpu
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.factory import check_backend_name
from noisear_rl.reward_models import RewardModel, check_reward_spec, load_reward_in
from noisear_rl.reward_models.clip_rewards import as_dtype
from noisear_rl.seeds import derive_seed

GRID_MAX_SIDE = 256  # grid images are stored downscaled to at most this many pixels a side


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
    import_modules(config.imports)
    check_config(config)
    if backend is None:
        check_backend_name(config.backend)
    for metric in config.metrics:
        if metric not in (rewards or {}):
            check_reward_spec(metric)
    set_threads(config.threads)
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
    settings = cell_settings(config, prompts)
    todo = [
        (spec, label, seed)
        for spec, label in zip(config.sources, labels)
        for seed in config.seeds
        if config.overwrite or stored_cell(cell_path(output_dir, label, seed), cell_identity(settings, spec, seed)) is None
    ]
    reward_models: dict[str, RewardModel] = {}
    if todo:  # a finished evaluation only rewrites its tables: nothing to load
        backend = backend if backend is not None else _load_backend(config)
        given = rewards or {}
        reward_models = {m: (given[m] if m in given else load_reward_in(m, config.dtype)).to(backend.device)
                         for m in config.metrics}
        for spec in dict.fromkeys(spec for spec, _, _ in todo):  # each source loads (so is checked) before any work
            load_noise_source(spec, backend=backend, reward=reward_models[config.metrics[0]])

    # Everything is checked: only now is --output-dir written.
    output_dir.mkdir(parents=True, exist_ok=True)
    clear_killed_writes(output_dir)
    write_json(output_dir / CONFIG_FILE, asdict(config) | {"labels": labels, "num_prompts_used": len(prompts)})
    if todo:
        run_cells(todo, config, backend, reward_models, prompts, settings, grid_rows)

    cells = {
        label: [read_cell(cell_path(output_dir, label, seed), cell_identity(settings, spec, seed)) for seed in config.seeds]
        for spec, label in zip(config.sources, labels)
    }
    summary = summarise(cells, config, len(prompts))  # type: ignore[arg-type]
    write_outputs(output_dir, summary, cells, [prompts[i] for i in grid_rows], grid_rows)  # type: ignore[arg-type]
    return summary


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
        write_cell(cell_path(Path(config.output_dir), label, seed), cell, cell_identity(settings, spec, seed))
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
