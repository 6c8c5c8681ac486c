"""A training run's settings (`RunConfig`, shared by every algorithm) and the checks on them made
before any work: the option ranges and files, and that a resumed run keeps its settings."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from noisear_rl.checks import check_at_least, check_device, check_finite, check_positive
from noisear_rl.cli import Dtype, Imports
from noisear_rl.envs.prompts import world_prompt_set
from noisear_rl.envs.registration import env_backend
from noisear_rl.pipelines.base import DiffusionBackend
from noisear_rl.pipelines.factory import world_info
from noisear_rl.reporters import check_report_to
from noisear_rl.reward_models import check_reward_spec

SHAPES_ENV = "NoiseAR-Shapes-v1"
# Settings that may differ between a run and its resumption without changing its result.
RESUMABLE = ("resume", "output_dir", "progress", "checkpoint_every", "keep_checkpoints", "tensorboard", "threads",
             "report_to", "imports")


@dataclass
class RunConfig:
    """Settings shared by every algorithm."""

    algo: str = "dpo"
    """The algorithm: nll, dpo, ppo, reinforce (or a third-party one); `--algo NAME --help` shows its options."""
    imports: Imports = ()
    """Modules or .py files imported first (`--import`): a reward or algorithm they register can be named."""
    env: str = SHAPES_ENV
    """Gymnasium environment id: NoiseAR-Shapes-v1 (the embedded world: offline, CPU), NoiseAR-SDXL-v0,
    NoiseAR-DreamShaper-v0, NoiseAR-HunyuanDiT-v0."""
    model: str | None = None
    """Hub id or local folder of the env's diffusion weights (None: the backend's own)."""
    reward: str | None = None
    """Reward name or composite spec ("imagereward:1.0,pickscore:0.5"); None: the env's default (Shapes: the verifier)."""
    prior: str | None = None
    """Prior to start from (a `save_pretrained` folder). None: the shipped NLL-pretrained prior of
    an embedded world's environment; a fresh prior for --algo nll."""
    data: str | None = None
    """Golden-noise collection (`python -m noisear_rl.collect --output-dir DIR`) for --algo nll."""
    output_dir: Path | None = None
    """Run folder. None: runs/{algo}-seed{seed}-{date-time}."""
    seed: int = 0
    """Seed of everything random (prompts, noises, minibatches); each iteration reseeds from (seed, iteration)."""
    resume: bool = False
    """Continue the run in --output-dir from its newest checkpoint (same settings required); a
    finished run is left as it is. Without --resume, --output-dir must be new or empty."""
    device: str = "cpu"
    """Device of the prior, the diffusion backend and the reward (cpu, cuda); under accelerate, its device."""
    dtype: Dtype = "float32"
    """Dtype of the diffusion backend and of the reward's networks (float16 or bfloat16 for SDXL-size
    models on a GPU); the prior, its log-probs and its updates stay float32."""
    threads: int | None = None
    """torch CPU threads (None: torch's default; 1 is fastest for small models on a busy CPU)."""
    num_envs: int = 64
    """Episodes stepped in lockstep (the diffusion pipeline's batch size)."""
    num_inference_steps: int | None = None
    """Denoising steps of the backend (None: its default)."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the backend (None: its default)."""
    temperature: float | None = None
    """The policy's sampling temperature (std multiplier) for rollouts, their log-probs and
    evaluation, and the saved prior's default (its `config.temperature`). None: the prior's own
    (1.0, or 0.5 for a released prior, as the release samples)."""
    train_prompts: str | None = None
    """Training prompts, drawn at random: a prompt file (one a line, or .jsonl with a "prompt" field) or
    an embedded world's named split ("train", "eval"). None: the world's prompt generator."""
    eval_prompts: str | None = None
    """Held-out evaluation prompts: a prompt file, or "eval" / "train" as for --train-prompts. None: the
    world's evaluation split (Shapes) or a fixed draw."""
    num_eval_prompts: int = 192
    """Held-out prompts scored before and after training, spread over the evaluation pool (the
    whole pool is removed from the training prompts, so any of it can be used to compare runs).
    With 4 noises each (768 images), the paired 95% interval of a change in success is about
    +-2.4 points on the Shapes world's shipped prior (2 noises: +-3.8, which held the main job's
    +3.6-point gain short of excluding zero; 64 x 1 gave +-11)."""
    eval_noises_per_prompt: int = 4
    """Noises sampled per held-out prompt (before and after use the same standard normals, so the
    change is paired)."""
    eval_every: int = 0
    """Also evaluate every N iterations (0: only before and after training)."""
    eval_seed: int = 12345
    """Seed of the evaluation noises (with --seed; the same standard normals at every evaluation of a run)."""
    checkpoint_every: int | None = None
    """Write a checkpoint every N iterations and after the last (None: about 20 per run, at least every iteration)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    tensorboard: bool = True
    """Also log metrics as TensorBoard events."""
    progress: bool = True
    """Show progress bars."""
    report_to: tuple[Literal["wandb"], ...] = ()
    """Also log metrics, grids and the config to these services (wandb: needs `pip install wandb`;
    project $WANDB_PROJECT or noisear-rl). TensorBoard is --tensorboard."""


def output_dir_name(run: RunConfig) -> str:
    """--output-dir, or a new folder's name (runs/{algo}-seed{seed}-{date-time})."""
    if run.output_dir is not None:
        return str(run.output_dir)
    if run.resume:
        raise ValueError("--resume needs --output-dir: the folder of the run to continue")
    return f"runs/{run.algo}-seed{run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def config_record(run: RunConfig, algo_config: Any, num_processes: int) -> dict[str, Any]:
    """The run's config.json: its settings, as JSON values."""
    record = {"run": asdict(run), "algorithm": asdict(algo_config), "num_processes": num_processes}
    return json.loads(json.dumps(record, default=str))


def check_inputs(run: RunConfig, algo_config: Any, backend: DiffusionBackend | None) -> None:
    """Checks what can be checked without loading a model or starting processes, before any work:
    option ranges, the device, the environment id, the reward spec and the prompt files (each
    prompt in the env's world's language). What the algorithm needs of the run (nll: --data) is
    checked next, by `Algorithm.check_inputs`, once the number of processes is known."""
    check_at_least(run, 1, ("num_envs", "num_eval_prompts", "eval_noises_per_prompt", "keep_checkpoints",
                            "checkpoint_every", "num_inference_steps", "threads"))
    check_at_least(run, 0, ("eval_every",))
    check_positive(run, ("temperature",))
    check_finite(run, ("guidance_scale",), minimum=0.0)
    algo_config.check(prefix=f"--{run.algo}.")
    check_device(run.device)
    check_report_to(run.report_to)
    backend_name = env_backend(run.env)
    if run.reward is not None:
        check_reward_spec(run.reward)
    world = backend.world if backend is not None else (world_info(backend_name) if backend_name else None)
    for prompts in (run.train_prompts, run.eval_prompts):
        if prompts is not None:
            world_prompt_set(prompts, world)


def check_resumable(output_dir: Path, stored: dict[str, Any], record: dict[str, Any]) -> None:
    """Raises a ValueError naming the settings that differ between the run in `output_dir`
    (`stored`, its config.json) and this one (`record`). A run setting that a run started before it
    existed lacks had its default then."""
    defaults = {"run": json.loads(json.dumps(asdict(RunConfig()), default=str)), "algorithm": {}}

    def before(section: str, key: str) -> Any:
        return stored.get(section, {}).get(key, defaults[section].get(key))

    changed = [
        f"{section}.{key}: {before(section, key)!r} -> {value!r}"
        for section in ("run", "algorithm")
        for key, value in record[section].items()
        if key not in RESUMABLE and before(section, key) != value
    ]
    if stored.get("num_processes") != record["num_processes"]:
        changed.append(f"num_processes: {stored.get('num_processes')} -> {record['num_processes']}")
    if changed:
        raise ValueError(f"--resume must use the settings of the run in {output_dir}; these differ: {'; '.join(changed)}")
