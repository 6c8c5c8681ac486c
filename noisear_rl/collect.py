"""Collect (prompt, golden noise) pairs, the NoiseAR prior's training data.

For each prompt, K random noises x_T each become a golden noise, made one of two ways (`--golden`):

- "inversion" (the release's): one DDIM step at high guidance, one DDIM inversion step at guidance
  1 (`noisear_rl.pipelines.golden`), optionally kept only when a reward model prefers the golden
  noise's image to the original's;
- "selected": the noise itself, kept only when the reward of its own image exceeds
  `--reward-threshold` (verifier-selected noise, e.g. `--reward shapes --reward-threshold 0.999`
  keeps the noises whose Shapes image passes every check). Where the inversion's small move does
  not improve images (the Shapes world, docs/shapes_world.md), this is the target that carries
  what makes a noise good for its prompt. Output: see `noisear_rl.data` (sharded
safetensors, prompts JSONL, manifest).

Shard i always covers the same prompts and draws its noises from a generator seeded by
(seed, i) alone, so a rerun of the same command regenerates exactly the missing shards, with the
same content an uninterrupted run would have written; a shard that fails its checksum is
regenerated too. Every input is checked before anything is written, and --output-dir must be
new, empty, or a collection of the same settings (or of other settings, with --overwrite). Examples:

    python -m noisear_rl.collect --backend shapes --num-prompts 500 --output-dir data/shapes_golden
    python -m noisear_rl.collect --import my_reward.py --golden selected --reward my-reward --reward-threshold 0.5
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from noisear_rl.checks import check_at_least, check_device, check_finite
from noisear_rl.cli import DEBUG_HELP, Dtype, Imports, import_modules, renamed, run_command, set_threads
from noisear_rl.collect_shard import collect_shard
from noisear_rl.data import (
    MANIFEST,
    PROMPTS,
    SHARD_DIR,
    list_shards,
    prompts_jsonl,
    prompts_sha256,
    shard_path,
    shard_rows,
    write_manifest,
    write_prompts,
    write_shard,
)
from noisear_rl.envs.prompts import evenly_spaced, prompt_set
from noisear_rl.io import clear_killed_writes, inspect_output_folder
from noisear_rl.pipelines.base import DiffusionBackend
from noisear_rl.pipelines.factory import check_backend_name, world_info
from noisear_rl.pipelines.golden import golden_schedule
from noisear_rl.reward_models import check_reward_spec, load_reward_in
from noisear_rl.reward_models.clip_rewards import as_dtype

FORMAT = "noisear-rl golden-noise v1"
# Settings that may change between a run and its resumption without changing what is written.
_RESUMABLE_CHANGES = ("output_dir", "device", "batch_size", "overwrite", "progress", "threads", "imports")


@dataclass
class CollectConfig:
    """Golden-noise data collection (`python -m noisear_rl.collect`)."""

    output_dir: Annotated[Path, renamed("--output-dir", "--out")] = Path("data/golden")
    """Output folder; rerunning the same command there resumes an interrupted collection.
    (Deprecated: `--out`, its old spelling, works until the next release.)"""
    imports: Imports = ()
    """Modules or .py files imported first (`--import`): a reward they register can be named."""
    backend: str = "shapes"
    """Diffusion backend: shapes, sdxl, dreamshaper, hunyuan-dit, tiny-sdxl, tiny-hunyuan-dit."""
    model: str | None = None
    """Hub id or local folder of the backend's weights (default: the backend's own)."""
    device: str = "cpu"
    """Device the backend (and reward) run on: cpu, cuda, cuda:1, ..."""
    dtype: Dtype = "float32"
    """Dtype of the backend and of the reward's networks (float16 or bfloat16 for SDXL-size models on a GPU)."""
    prompts: str | None = None
    """Prompt file (one prompt a line, or .jsonl with a "prompt" field), or a named set of an
    embedded world: "train" (its training split), "eval". None: the world's own generator of
    training-split prompts (Shapes: `noisear_rl.worlds.shapes.sample_prompts`)."""
    num_prompts: int | None = 500
    """Number of prompts: drawn from the world's generator, or spread evenly over --prompts, first and
    last included (None: all of --prompts)."""
    prompt_seed: int = 0
    """Seed of the world's prompt generator."""
    noises_per_prompt: int = 40
    """K: random noises per prompt, each giving one (noise, golden noise) pair (the release used 40)."""
    guidance_scale: float | None = None
    """CFG of the DDIM denoising step (None: the backend's own; SDXL 5.5, as the release)."""
    inversion_guidance_scale: float = 1.0
    """CFG of the DDIM inversion step (the release used 1.0)."""
    golden: Literal["inversion", "selected"] = "inversion"
    """How a noise becomes golden: "inversion" (denoise-then-invert step, the release's) or
    "selected" (the noise itself, kept when its image's reward exceeds --reward-threshold; needs --reward)."""
    golden_steps: int | None = None
    """Inference-step count of the schedule the step and the inversion take their timesteps from
    (None: the backend's golden schedule, `pipelines.golden.default_golden_steps`; the Shapes world's is 50)."""
    golden_procedure: Literal["reference", "clean"] | None = None
    """Timesteps of the step and the inversion: "reference" (Golden Noise's collection on a DDIM
    "leading" 50-step schedule; SDXL, DreamShaper, Hunyuan-DiT), "clean" (the backend's own first
    two timesteps); None: the backend's default (docs/fidelity.md)."""
    num_inference_steps: int | None = None
    """Denoising steps of the backend when generating images for reward filtering (None: its own)."""
    prompts_per_shard: int = 16
    """Prompts per shard (a shard holds prompts_per_shard x K candidate pairs)."""
    batch_size: int = 64
    """Noises sent through the backend at once."""
    seed: int = 0
    """Seed of the noises (shard i uses a generator seeded by (seed, i))."""
    storage_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Dtype noises are stored in (float16 halves the disk size of SDXL-size latents)."""
    reward: str | None = None
    """Reward model (a `load_reward` name or spec) for filtering; None keeps every pair."""
    reward_threshold: float = 0.0
    """With --reward: keep a pair when reward(golden image) - reward(original image) > threshold
    ("inversion"), or when reward(image of the noise) > threshold ("selected")."""
    overwrite: bool = False
    """Delete an existing collection in --output-dir (with different settings) instead of refusing."""
    progress: bool = True
    """Show a progress bar."""
    threads: int | None = None
    """torch CPU threads (None: torch's default; 1 is fastest for small models on a busy CPU)."""


def collect(
    config: CollectConfig,
    backend: DiffusionBackend | None = None,
    on_shard_done: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) a collection; returns its manifest.

    Args:
        config: The settings.
        backend: An already-built backend to use instead of `load_backend(config.backend, ...)`.
        on_shard_done: Called with each shard index right after that shard is on disk.

    Raises:
        ValueError: A setting out of range, an unknown name, a bad prompt; `config.output_dir` holds
            a collection made with other settings (and not `overwrite`).
        FileExistsError: `config.output_dir` holds something that is not a collection.
    """
    started = time.perf_counter()
    import_modules(config.imports)
    _check_config(config)
    if backend is None:
        check_backend_name(config.backend)
    set_threads(config.threads)
    out = Path(config.output_dir)
    prompts = _load_prompts(config)
    settings = _settings(config, prompts)
    manifest, replace = _check_folder(out, settings, config.overwrite)

    backend = backend if backend is not None else _build_backend(config)
    schedule = golden_schedule(backend, config.golden_steps, config.golden_procedure)
    guidance = backend.guidance_scale if config.guidance_scale is None else config.guidance_scale
    reward = None
    if config.reward is not None:
        reward = load_reward_in(config.reward, config.dtype).to(config.device)

    # Everything is checked and loaded: only now is --output-dir written.
    _prepare_folder(out, replace)
    num_shards = math.ceil(len(prompts) / config.prompts_per_shard)
    manifest = {} if manifest is None or replace else manifest
    manifest.update(
        format=FORMAT,
        settings=settings,
        backend={
            "name": config.backend,
            "class": type(backend).__name__,
            "num_inference_steps": backend.num_inference_steps,
            "guidance_scale": backend.guidance_scale,
            "cond_dim": backend.cond_dim,
        },
        latent_shape=list(backend.latent_shape),
        golden={
            "guidance_scale": guidance,
            "inversion_guidance_scale": config.inversion_guidance_scale,
            "timesteps": [schedule.denoise_from, schedule.denoise_to],
        },
        num_prompts=len(prompts),
        num_shards=num_shards,
        complete=False,
    )
    write_manifest(out, manifest)  # first: a folder holding anything of a collection holds its manifest
    stored_prompts = (out / PROMPTS).read_bytes() if (out / PROMPTS).is_file() else None
    if stored_prompts != prompts_jsonl(prompts).encode("utf-8"):  # missing, cut short or edited
        write_prompts(out / PROMPTS, prompts)
    (out / SHARD_DIR).mkdir(exist_ok=True)

    rows = {i: shard_rows(shard_path(out, i)) for i in range(num_shards)}
    for index, count in rows.items():
        if count is None and shard_path(out, index).exists():
            print(f"note: {shard_path(out, index)} is damaged (unreadable, or its content does not match its "
                  "checksum); regenerating it", file=sys.stderr)
    pending = [i for i, count in rows.items() if count is None]
    progress = _progress_bar(config, total=num_shards, initial=num_shards - len(pending))
    for index in pending:
        start = index * config.prompts_per_shard
        tensors = collect_shard(
            backend,
            config,
            prompts,
            start,
            min(start + config.prompts_per_shard, len(prompts)),
            index,
            guidance,
            reward,
        )
        write_shard(shard_path(out, index), tensors, metadata={"shard": str(index), "format": FORMAT})
        rows[index] = len(tensors["prompt_index"])
        progress.update(1)
        if on_shard_done is not None:
            on_shard_done(index)
    progress.close()

    elapsed = time.perf_counter() - started
    manifest.update(
        complete=True, num_pairs=sum(count or 0 for count in rows.values()),
        num_candidates=len(prompts) * config.noises_per_prompt,
    )
    manifest.setdefault("runs", []).append(
        {
            "shards_written": len(pending),
            "seconds": round(elapsed, 2),
            "device": config.device,
            "finished": time.ctime(),
        }
    )
    write_manifest(out, manifest)
    return manifest


def _check_config(config: CollectConfig) -> None:
    """Checks the settings that need no model or file: ranges, names, the device."""
    check_at_least(config, 1, ("noises_per_prompt", "prompts_per_shard", "batch_size", "num_prompts",
                               "num_inference_steps", "threads"))
    check_at_least(config, 2, ("golden_steps",))
    check_finite(config, ("guidance_scale",), minimum=0.0)
    check_finite(config, ("inversion_guidance_scale", "reward_threshold"))
    if config.golden not in ("inversion", "selected"):
        raise ValueError(f"golden must be 'inversion' or 'selected', got {config.golden!r}")
    if config.golden == "selected" and config.reward is None:
        raise ValueError("--golden selected keeps noises by the reward of their images: pass --reward (e.g. shapes)")
    check_device(config.device)
    if config.reward is not None:
        check_reward_spec(config.reward)


def _load_prompts(config: CollectConfig) -> list[str]:
    """The prompt list: from --prompts, else from the world's generator."""
    if config.prompts is not None:
        return evenly_spaced(prompt_set(config.prompts, config.backend), config.num_prompts)
    world = world_info(config.backend)
    if world is None:
        raise ValueError(f"backend {config.backend!r} has no prompt generator of its own; pass --prompts FILE")
    if config.num_prompts is None:
        raise ValueError(f"the {world.name} world's prompt generator needs --num-prompts N")
    return list(world.sample_prompts(config.num_prompts, config.prompt_seed))


def _settings(config: CollectConfig, prompts: list[str]) -> dict[str, Any]:
    """Everything that determines the content of the collection (compared when resuming)."""
    settings = {key: value for key, value in asdict(config).items() if key not in _RESUMABLE_CHANGES}
    settings["prompts"] = None if config.prompts is None else str(config.prompts)
    settings["prompts_sha256"] = prompts_sha256(prompts)
    return settings


def _check_folder(out: Path, settings: dict[str, Any], overwrite: bool) -> tuple[dict[str, Any] | None, bool]:
    """What `out` holds, before anything is written there: (the manifest of the collection
    there, None for a new or empty folder; whether that collection is to be replaced).

    Raises:
        FileExistsError: `out` holds something other than a collection.
        ValueError: A collection with other settings, without `overwrite`.
    """
    manifest = inspect_output_folder(
        out, MANIFEST, lambda record: isinstance(record, dict) and record.get("format") == FORMAT,
        "golden-noise collection", "choose a new or empty --output-dir",
    )
    if manifest is None:
        return None, False
    previous = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
    changed = sorted(key for key in set(previous) | set(settings) if previous.get(key) != settings.get(key))
    if changed and not overwrite:
        raise ValueError(
            f"{str(out)!r} holds a collection with other settings ({', '.join(changed)}); "
            "use another --output-dir, the same settings to resume, or --overwrite to delete it"
        )
    return manifest, bool(changed)


def _prepare_folder(out: Path, replace: bool) -> None:
    """Creates `out` (or deletes the collection there when `replace`) and removes what killed
    writes left in it."""
    if replace:
        for path in list_shards(out):
            path.unlink()
        (out / PROMPTS).unlink(missing_ok=True)
        (out / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)
    clear_killed_writes(out)


def _build_backend(config: CollectConfig) -> DiffusionBackend:
    from noisear_rl.pipelines.factory import load_backend

    return load_backend(
        config.backend, model=config.model, device=config.device, dtype=as_dtype(config.dtype),
        batch_size=config.batch_size, num_inference_steps=config.num_inference_steps,
    )


def _progress_bar(config: CollectConfig, total: int, initial: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="shard", desc="golden noise", disable=not config.progress)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.collect --help`; returns the exit status (2 after an error)."""
    return run_command(_command, argv)


def _command(argv: list[str]) -> None:
    import tyro

    config = tyro.cli(CollectConfig, args=argv, prog="python -m noisear_rl.collect", description=f"{__doc__}\n{DEBUG_HELP}")
    manifest = collect(config)
    runs = manifest["runs"][-1]
    print(
        f"{manifest['num_pairs']} pairs ({manifest['num_candidates']} candidates) in {config.output_dir}; "
        f"this run wrote {runs['shards_written']} shards in {runs['seconds']:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
