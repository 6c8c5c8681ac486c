"""`EvaluateConfig`: the settings of `python -m noisear_rl.evaluate`, their checks and prompt set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from noisear_rl.checks import check_at_least, check_device, check_finite
from noisear_rl.cli import Dtype, Imports, renamed
from noisear_rl.noise_sources.base import check_spec

CONFIG_FILE = "config.json"


@dataclass
class EvaluateConfig:
    """Noise sources x metrics on a prompt set (`python -m noisear_rl.evaluate`)."""

    sources: tuple[str, ...] = ("gaussian",)
    """Noise-source specs NAME[:ARGUMENT][?KEY=VALUE&...]: gaussian, golden:FOLDER, erasure-injection,
    noisear:FOLDER?temperature=T, best-of-n:N; `label=NAME` names a source in the tables
    (see `noisear_rl.noise_sources.base`). Quote specs holding '?' or '&' in a shell."""
    metrics: Annotated[tuple[str, ...], renamed("--reward", "--metrics")] = ("shapes",)
    """Rewards (names or composite specs) scored on every image, each a metric of the tables; the
    first also selects for best-of-n. (Deprecated: `--metrics`, its old spelling, works until the next release.)"""
    imports: Imports = ()
    """Modules or .py files imported first (`--import`): a reward or noise source they register can be named."""
    backend: str = "shapes"
    """Diffusion backend: shapes, sdxl, dreamshaper, hunyuan-dit, tiny-sdxl, tiny-hunyuan-dit."""
    model: str | None = None
    """Hub id or local folder of the backend's weights (default: the backend's own)."""
    device: str = "cpu"
    """Device of the backend, the sources and the rewards."""
    dtype: Dtype = "float32"
    """Dtype of the backend and of the rewards' networks (float16 or bfloat16 for SDXL-size models on a GPU)."""
    num_inference_steps: int | None = None
    """Denoising steps (None: the backend's default)."""
    guidance_scale: float | None = None
    """Classifier-free guidance (None: the backend's default)."""
    prompts: str = "eval"
    """"eval": the backend's evaluation split (Shapes: `evaluation_prompts()`, 564 prompts; others:
    the shipped prompt list); "train" (Shapes): the 588 prompts of its training split; or a
    prompt file (one a line, or .jsonl with a "prompt" field)."""
    num_prompts: int | None = None
    """Use N prompts spread evenly over --prompts, first and last included (None: all)."""
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


def check_config(config: EvaluateConfig) -> None:
    """Checks the settings that need no model or file: counts, ranges, names and specs, the device."""
    if not config.sources:
        raise ValueError("give at least one noise source (--sources gaussian ...)")
    if not config.metrics:
        raise ValueError("give at least one reward to score (--reward shapes ...)")
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


def load_prompts(config: EvaluateConfig) -> list[str]:
    """The prompt set (`noisear_rl.envs.prompts.prompt_set`): --num-prompts spread evenly over it."""
    from noisear_rl.envs.prompts import evenly_spaced, prompt_set

    return evenly_spaced(prompt_set(config.prompts, config.backend), config.num_prompts)
