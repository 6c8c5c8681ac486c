"""Train the NoiseAR prior: NLL pretraining on golden noise, or RL from rollouts (DPO, PPO, REINFORCE).

    python -m noisear_rl.train --algo dpo                     # the main job: Shapes world, shipped prior
    python -m noisear_rl.train --algo ppo --ppo.kl-coef 0.01 --seed 1
    python -m noisear_rl.train --algo nll --data data/shapes_golden --output-dir runs/shapes-nll
    python -m noisear_rl.train --algo dpo --output-dir runs/x --resume   # continue a killed run
    accelerate launch --multi_gpu --num_processes 2 -m noisear_rl.train --algo dpo   # 2 processes

(On a CPU-only machine `--multi_gpu` still works: torchrun starts the processes and they talk over
gloo; `accelerate launch --cpu --num_processes 2` starts one process unless MPI is set up.)

`--algo NAME --help` lists that algorithm's options. Every iteration collects rollouts of the
training prompts (or draws golden-noise pairs for nll), calls the algorithm's `update`, logs,
and checkpoints; the held-out evaluation prompts (never trained on) are scored before and after
training. The run folder layout is described in `noisear_rl.run_folder`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch

import noisear_rl  # noqa: F401  (registers the environments)
from noisear_rl.algorithms.base import Algorithm, get_algorithm, list_algorithms
from noisear_rl.algorithms.nll import GoldenBatch, NLLConfig, build_prior
from noisear_rl.checks import check_at_least, check_device, check_finite, check_positive
from noisear_rl.cli import DEBUG_HELP, run_command
from noisear_rl.data import read_manifest
from noisear_rl.envs.policy import NoiseARPolicy
from noisear_rl.envs.prompts import evenly_spaced, read_prompt_file
from noisear_rl.envs.registration import env_backend
from noisear_rl.envs.rollout import RolloutBatch, collect_rollouts
from noisear_rl.evaluate import mean_ci
from noisear_rl.io import require_saved, save_pretrained_atomically, write_json
from noisear_rl.noise_sources.noisear import resolve_prior
from noisear_rl.pipelines.base import Condition, DiffusionBackend, check_fits
from noisear_rl.pipelines.factory import world_info
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.reward_models import check_reward_spec
from noisear_rl.run_folder import (
    CheckpointError,
    RunFolder,
    checkpoint_dirs,
    inspect_run_folder,
    load_checkpoint,
    read_summary,
    save_checkpoint,
)
from noisear_rl.seeds import derive_seed

SHAPES_ENV = "NoiseAR-Shapes-v1"
# Settings that may differ between a run and its resumption without changing its result.
RESUMABLE = ("resume", "output_dir", "progress", "checkpoint_every", "keep_checkpoints", "tensorboard")


@dataclass
class RunConfig:
    """Settings shared by every algorithm."""

    algo: str = "dpo"
    """The algorithm: nll, dpo, ppo, reinforce (or a third-party one); `--algo NAME --help` shows its options."""
    env: str = SHAPES_ENV
    """Gymnasium environment id: NoiseAR-Shapes-v1 (the embedded world: offline, CPU), NoiseAR-SDXL-v0,
    NoiseAR-DreamShaper-v0, NoiseAR-HunyuanDiT-v0."""
    reward: str | None = None
    """Reward name or composite spec ("imagereward:1.0,pickscore:0.5"); None: the env's default (Shapes: the verifier)."""
    prior: str | None = None
    """Prior to start from (a `save_pretrained` folder). None: the shipped NLL-pretrained prior of
    an embedded world's environment; a fresh prior for --algo nll."""
    data: str | None = None
    """Golden-noise collection (`python -m noisear_rl.collect --out DIR`) for --algo nll."""
    output_dir: Path | None = None
    """Run folder. None: runs/{algo}-seed{seed}-{date-time}."""
    seed: int = 0
    """Seed of everything random (prompts, noises, minibatches); each iteration reseeds from (seed, iteration)."""
    resume: bool = False
    """Continue the run in --output-dir from its newest checkpoint (same settings required); a
    finished run is left as it is. Without --resume, --output-dir must be new or empty."""
    device: str = "cpu"
    """Device of the prior and the diffusion backend (cpu, cuda); under accelerate, its device."""
    num_envs: int = 64
    """Episodes stepped in lockstep (the diffusion pipeline's batch size)."""
    num_inference_steps: int | None = None
    """Denoising steps of the backend (None: its default)."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the backend (None: its default)."""
    temperature: float | None = None
    """The policy's sampling temperature (std multiplier) for rollouts, their log-probs and
    evaluation. None: the prior's own (`config.temperature`: 1.0, or 0.5 for a released prior)."""
    train_prompts: str | None = None
    """Prompt file for training (one a line, or .jsonl). None: the world's prompt generator."""
    eval_prompts: str | None = None
    """Prompt file for held-out evaluation. None: the world's evaluation set (Shapes) or a fixed draw."""
    num_eval_prompts: int = 64
    """Held-out prompts scored before and after training, spread over the evaluation pool (the
    whole pool is removed from the training prompts, so any of it can be used to compare runs)."""
    eval_noises_per_prompt: int = 1
    """Noises sampled per held-out prompt."""
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


def train(
    run: RunConfig,
    algo_config: Any,
    backend: DiffusionBackend | None = None,
    prior: NoiseARPrior | None = None,
    callback: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) one training run; returns its summary.

    Args:
        run: The shared settings.
        algo_config: The algorithm's config (`get_algorithm(run.algo).config_class`).
        backend: An already-built diffusion backend to use instead of the env's (tests).
        prior: An already-built prior to start from instead of `run.prior` (tests).
        callback: Called with the number of finished iterations after each one (and its checkpoint).
    """
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list

    started = time.perf_counter()
    algorithm_class = get_algorithm(run.algo)
    if not isinstance(algo_config, algorithm_class.config_class):
        raise TypeError(f"--algo {run.algo} needs a {algorithm_class.config_class.__name__}, got {type(algo_config).__name__}")
    _check_inputs(run, algo_config, algorithm_class, backend)
    accelerator = Accelerator(cpu=run.device == "cpu")
    main_process = accelerator.is_main_process
    if algorithm_class.uses_rollouts and algo_config.prompts_per_iteration % accelerator.num_processes:
        raise ValueError(f"--{run.algo}.prompts-per-iteration ({algo_config.prompts_per_iteration}) must be divisible "
                         f"by the number of processes ({accelerator.num_processes})")
    output_dir = [_output_dir(run)]
    broadcast_object_list(output_dir)  # every process uses the main process's folder name
    output_dir = Path(output_dir[0])
    config_record = _config_record(run, algo_config, accelerator.num_processes)

    # Resume or start: a new or empty folder, or with --resume this run's own folder (same settings).
    # Nothing is written before every input below has been checked and loaded.
    stored = inspect_run_folder(output_dir)
    checkpoint = None
    if run.resume:
        if stored is None:
            raise CheckpointError(f"nothing to resume: {output_dir} holds no run; run without --resume to start one")
        _check_resumable(output_dir, stored, config_record)
        finished = read_summary(output_dir)
        if finished is not None:
            if main_process:
                print(f"the run in {output_dir} is finished: nothing to do\n{format_summary(finished)}")
            return finished
        found = checkpoint_dirs(output_dir)
        if found:  # none: killed before its first checkpoint, so it starts over with the same settings
            checkpoint = load_checkpoint(found[-1])
    elif stored is not None:
        raise FileExistsError(
            f"{output_dir} holds a run: pass --resume to continue it (same settings), or choose a new or empty --output-dir"
        )
    accelerator.wait_for_everyone()  # every process has looked at the folder before the main one writes it

    # Environment, prior, algorithm.
    torch.manual_seed(run.seed)
    prior = prior if prior is not None else _load_prior(run, algo_config)
    venv = _make_env(run, backend, prior.config.patch_size if prior is not None else algo_config.patch_size)
    world = venv.unwrapped.world
    if prior is None:  # nll without --prior: a fresh prior shaped for the env's backend
        prior = build_prior(algo_config, tuple(world.backend.latent_shape), world.backend.cond_dim)
    prior = prior.to(accelerator.device)
    check_fits(world.backend, prior.latent_shape, prior.config.cond_dim, "the prior (--prior)")
    if run.temperature is None:
        run = dataclasses.replace(run, temperature=prior.sampling_temperature())
    algorithm: Algorithm = algorithm_class(algo_config, prior, temperature=run.temperature, accelerator=accelerator)
    pool = _evaluation_pool(run, world)
    heldout = _heldout_prompts(run, pool)
    sample_train_prompts = _train_prompt_sampler(run, world, set(pool), getattr(algo_config, "prompts_per_iteration", 0))
    golden = _GoldenPairs(run.data, world, set(pool), algo_config, run.seed) if not algorithm_class.uses_rollouts else None

    checkpoint_every = run.checkpoint_every or max(1, algo_config.iterations // 20)
    start, heldout_before, episodes_before = 0, None, None
    if checkpoint is not None:
        start, state = checkpoint
        newest = checkpoint_dirs(output_dir)[-1]
        try:
            prior.load_state_dict(state["prior"])
            algorithm.load_state_dict(state["algorithm"])
            heldout_before = state["heldout_before"]
            episodes_before = state.get("heldout_before_episodes")
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise CheckpointError(
                f"checkpoint {newest} does not fit this run ({type(error).__name__}: {str(error).strip().splitlines()[0]}); "
                f"delete it to resume from the previous checkpoint"
            ) from error
        try:
            prior.check_weights(newest)
        except ValueError as error:
            raise CheckpointError(f"checkpoint {newest} is unusable ({error}); delete it to resume from the previous "
                                  "checkpoint") from error

    # Everything is checked: only now is the run folder written.
    folder = None
    if main_process:
        folder = RunFolder(output_dir, None if checkpoint is None else start, run.tensorboard,
                           config=config_record if checkpoint is None else None)
    if heldout_before is None:
        heldout_before, episodes_before, images = _evaluate(prior, venv, heldout, run, accelerator)
        if folder is not None:
            folder.log(0, {f"eval/{k}": v for k, v in heldout_before.items()})
            _save_grid(folder, "eval-000000", images, heldout)

    # The loop: collect (or draw pairs) -> update -> log -> checkpoint -> evaluate.
    from tqdm.auto import tqdm

    bar = tqdm(range(start, algo_config.iterations), initial=start, total=algo_config.iterations,
               desc=f"{run.algo} iterations", disable=not (run.progress and main_process))
    for iteration in bar:
        tick = time.perf_counter()
        torch.manual_seed(derive_seed(run.seed, iteration, accelerator.process_index, 0))
        metrics: dict[str, float] = {"train/lr": algorithm.scheduler.get_last_lr()[0]}
        if algorithm_class.uses_rollouts:
            batch = _collect(prior, venv, sample_train_prompts(iteration), algo_config.rollouts_per_prompt,
                             run, iteration, accelerator)
            metrics.update(_rollout_metrics(batch, accelerator))
        else:
            assert golden is not None
            batch = golden.batch(iteration, accelerator.process_index, accelerator.num_processes)
        updates = algorithm.update(_to_device(batch, prior.device))
        metrics.update({f"train/{k}": v for k, v in _mean_across_processes(updates, accelerator).items()})
        done = iteration + 1
        if run.eval_every and done % run.eval_every == 0 and done < algo_config.iterations:
            heldout_now, _, images = _evaluate(prior, venv, heldout, run, accelerator)
            metrics.update({f"eval/{k}": v for k, v in heldout_now.items()})
            if folder is not None:
                _save_grid(folder, f"eval-{done:06d}", images, heldout)
        metrics["time/iteration_s"] = time.perf_counter() - tick
        if folder is not None:
            folder.log(done, metrics)
            if done % checkpoint_every == 0 or done == algo_config.iterations:
                state = {"prior": prior.state_dict(), "algorithm": algorithm.state_dict(), "heldout_before": heldout_before,
                         "heldout_before_episodes": episodes_before}
                save_checkpoint(output_dir, done, state, run.keep_checkpoints)
        if "rollout/reward" in metrics:
            bar.set_postfix(reward=f"{metrics['rollout/reward']:.3f}")
        accelerator.wait_for_everyone()
        if callback is not None:
            callback(done)
    bar.close()

    # Final evaluation, artefacts and summary.
    heldout_after, episodes_after, images = _evaluate(prior, venv, heldout, run, accelerator)
    summary = {
        "algo": run.algo,
        "env": run.env,
        "seed": run.seed,
        "iterations": algo_config.iterations,
        "num_processes": accelerator.num_processes,
        "heldout_prompts": len(heldout),
        "heldout_noises_per_prompt": run.eval_noises_per_prompt,
        "heldout_before": heldout_before,
        "heldout_after": heldout_after,
        "heldout_change": _paired_change(episodes_before, episodes_after, run.eval_noises_per_prompt),
        "seconds_this_session": round(time.perf_counter() - started, 1),
        "output_dir": str(output_dir),
    }
    if folder is not None:
        folder.log(algo_config.iterations, {f"eval/{k}": v for k, v in heldout_after.items()})
        _save_grid(folder, f"eval-{algo_config.iterations:06d}", images, heldout)
        folder.plot_reward_curve({"rollout/reward": "training rollouts", "eval/reward": "held-out reward",
                                  "eval/success": "held-out success rate"})
        save_pretrained_atomically(prior, output_dir / "prior")
        summary["prior"] = str(output_dir / "prior")
        write_json(output_dir / "summary.json", summary)
        folder.close()
        print(format_summary(summary))
    venv.close()
    accelerator.wait_for_everyone()
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary's human-readable lines."""

    def describe(metrics: dict[str, float]) -> str:
        text = f"reward {metrics['reward']:.4f}"
        return text + (f", success rate {metrics['success']:.3f}" if "success" in metrics else "")

    def change(name: str, digits: int) -> str:
        mean, low, high = summary["heldout_change"][name]
        return f"{name} {mean:+.{digits}f} (95% CI {low:+.{digits}f} to {high:+.{digits}f})"

    changes = summary.get("heldout_change") or {}
    change_line = ([f"held-out change, paired over the same prompts and noises: "
                    + ", ".join(change(name, 4 if name == "reward" else 3) for name in ("reward", "success") if name in changes)]
                   if changes else [])
    return "\n".join([
        f"{summary['algo']} on {summary['env']} (seed {summary['seed']}, {summary['iterations']} iterations) "
        f"-> {summary['output_dir']}",
        f"held-out ({summary['heldout_prompts']} prompts x {summary['heldout_noises_per_prompt']} noises) before: "
        f"{describe(summary['heldout_before'])}",
        f"held-out ({summary['heldout_prompts']} prompts x {summary['heldout_noises_per_prompt']} noises) after:  "
        f"{describe(summary['heldout_after'])}",
        *change_line,
        f"time: {summary['seconds_this_session']:.0f} s",
    ])


# ------------------------------------------------------------------------------------ setup
def _output_dir(run: RunConfig) -> str:
    if run.output_dir is not None:
        return str(run.output_dir)
    if run.resume:
        raise ValueError("--resume needs --output-dir: the folder of the run to continue")
    return f"runs/{run.algo}-seed{run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _config_record(run: RunConfig, algo_config: Any, num_processes: int) -> dict[str, Any]:
    record = {"run": asdict(run), "algorithm": asdict(algo_config), "num_processes": num_processes}
    return json.loads(json.dumps(record, default=str))


def _check_inputs(run: RunConfig, algo_config: Any, algorithm_class: type[Algorithm], backend: DiffusionBackend | None) -> None:
    """Checks everything that can be checked without loading a model, before any work: option
    ranges, the device, the environment id, the reward spec, the prompt files (each prompt in the
    env's world's language) and the golden-noise collection's manifest."""
    check_at_least(run, 1, ("num_envs", "num_eval_prompts", "eval_noises_per_prompt", "keep_checkpoints",
                            "checkpoint_every", "num_inference_steps"))
    check_at_least(run, 0, ("eval_every",))
    check_positive(run, ("temperature",))
    check_finite(run, ("guidance_scale",), minimum=0.0)
    algo_config.check(prefix=f"--{run.algo}.")
    check_device(run.device)
    backend_name = env_backend(run.env)
    if run.reward is not None:
        check_reward_spec(run.reward)
    world = backend.world if backend is not None else (world_info(backend_name) if backend_name else None)
    for prompts in (run.train_prompts, run.eval_prompts):
        if prompts is not None:
            read_prompt_file(prompts, world)
    if not algorithm_class.uses_rollouts:
        if run.data is None:
            raise ValueError(f"--algo {run.algo} needs --data: a golden-noise collection "
                             "(make one with `python -m noisear_rl.collect --out DIR`)")
        read_manifest(run.data)


def _check_resumable(output_dir: Path, stored: dict[str, Any], record: dict[str, Any]) -> None:
    """Raises a ValueError naming the settings that differ between the run in `output_dir`
    (`stored`, its config.json) and this one (`record`)."""
    changed = [
        f"{section}.{key}: {stored[section].get(key)!r} -> {value!r}"
        for section in ("run", "algorithm")
        for key, value in record[section].items()
        if key not in RESUMABLE and stored.get(section, {}).get(key) != value
    ]
    if stored.get("num_processes") != record["num_processes"]:
        changed.append(f"num_processes: {stored.get('num_processes')} -> {record['num_processes']}")
    if changed:
        raise ValueError(f"--resume must use the settings of the run in {output_dir}; these differ: {'; '.join(changed)}")


def _load_prior(run: RunConfig, algo_config: Any) -> NoiseARPrior | None:
    """The prior to start from: --prior, else the env's embedded world's shipped prior; None for a fresh nll prior."""
    if run.prior is not None:
        return resolve_prior(run.prior)[0]
    if isinstance(algo_config, NLLConfig):
        return None
    backend_name = env_backend(run.env)
    world = world_info(backend_name) if backend_name else None
    if world is not None:
        folder = require_saved(
            world.prior, "config.json", f"shipped {world.name} prior", f"create it with `{world.prior_command}`, or pass --prior"
        )
        return NoiseARPrior.from_pretrained(str(folder))
    raise ValueError(f"--prior is required for {run.env} (a NoiseARPrior.save_pretrained folder)")


def _make_env(run: RunConfig, backend: DiffusionBackend | None, patch_size: int) -> Any:
    kwargs: dict[str, Any] = dict(
        reward=run.reward, device=run.device, patch_size=patch_size,
        num_inference_steps=run.num_inference_steps, guidance_scale=run.guidance_scale,
    )
    if backend is not None:
        kwargs["backend"] = backend
    return gym.make_vec(run.env, num_envs=run.num_envs, vectorization_mode="vector_entry_point", **kwargs)


# ---------------------------------------------------------------------------------- prompts
def _evaluation_pool(run: RunConfig, world: Any) -> list[str]:
    """Every prompt that evaluation may use, none of which is ever trained on: --eval-prompts, an
    embedded world's evaluation split (what `python -m noisear_rl.evaluate` scores), or a fixed
    draw from the world's prompts."""
    if run.eval_prompts is not None:
        pool = read_prompt_file(run.eval_prompts, world.backend.world)
    elif world.backend.world is not None:
        pool = world.backend.world.evaluation_prompts()
    else:
        pool = world.sample_prompts(8 * run.num_eval_prompts, np.random.default_rng(run.eval_seed))
    return list(dict.fromkeys(pool))


def _heldout_prompts(run: RunConfig, pool: list[str]) -> list[str]:
    """The prompts scored before and after training: `num_eval_prompts` spread evenly over the pool."""
    return evenly_spaced(pool, run.num_eval_prompts)


def _train_prompt_sampler(run: RunConfig, world: Any, heldout: set[str], count: int) -> Callable[[int], list[str]]:
    """iteration -> its `count` training prompts (never a held-out one), the same on every process."""
    if run.train_prompts is not None:
        pool = [p for p in read_prompt_file(run.train_prompts, world.backend.world) if p not in heldout]
        if not pool:
            raise ValueError(f"every prompt of {run.train_prompts} is a held-out evaluation prompt")
        source = lambda n, rng: [pool[i] for i in rng.integers(len(pool), size=n)]  # noqa: E731
    else:
        source = world.sample_prompts

    def sample(iteration: int) -> list[str]:
        rng = np.random.default_rng(derive_seed(run.seed, iteration, 0, 3))
        chosen: list[str] = []
        for _ in range(100):
            chosen += [p for p in source(2 * count, rng) if p not in heldout]
            if len(chosen) >= count:
                return chosen[:count]
        raise ValueError("the prompt source yields only held-out evaluation prompts")

    return sample


# ---------------------------------------------------------------------------------- rollouts
def _collect(
    prior: NoiseARPrior, venv: Any, prompts: list[str], rollouts_per_prompt: int, run: RunConfig, iteration: int,
    accelerator: Any,
) -> RolloutBatch:
    """This process's share of the iteration's rollouts: K contiguous episodes per prompt."""
    rank, processes = accelerator.process_index, accelerator.num_processes
    if len(prompts) % processes:
        raise ValueError(f"prompts_per_iteration ({len(prompts)}) must be divisible by the number of processes ({processes})")
    mine = [p for p in prompts[rank::processes] for _ in range(rollouts_per_prompt)]
    venv.unwrapped.np_random = np.random.default_rng(derive_seed(run.seed, iteration, rank, 2))
    generator = torch.Generator(device=prior.device).manual_seed(derive_seed(run.seed, iteration, rank, 1))
    prior.eval()
    return collect_rollouts(venv, NoiseARPolicy(prior, run.temperature), mine, generator=generator)


def _to_device(batch: Any, device: torch.device) -> Any:
    """The batch dataclass with its tensors and condition on `device` (details stay where they are)."""
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return dataclasses.replace(batch, **{k: v.to(device) for k, v in fields.items() if isinstance(v, (torch.Tensor, Condition))})


def _rollout_metrics(batch: RolloutBatch, accelerator: Any) -> dict[str, float]:
    """Mean reward and reward details over all processes' rollouts."""
    values = {"reward": batch.rewards.float(), **{k: v.float() for k, v in batch.details.items()}}
    return {f"rollout/{k}": float(accelerator.gather(v.to(accelerator.device)).mean()) for k, v in values.items()}


def _mean_across_processes(metrics: dict[str, float], accelerator: Any) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    gathered = gather_object([metrics])
    keys = sorted({k for m in gathered for k in m})
    return {k: float(np.mean([m[k] for m in gathered if k in m])) for k in keys}


def _evaluate(
    prior: NoiseARPrior, venv: Any, prompts: list[str], run: RunConfig, accelerator: Any
) -> tuple[dict[str, float], dict[str, list[float]], Any]:
    """Mean reward (and details) of the prior's noises on the held-out prompts, the same standard
    normals every time; returns (metrics, every episode's values in prompt-major order, images of
    the first noise per prompt or None off the main process)."""
    from accelerate.utils import gather_object

    rank, processes = accelerator.process_index, accelerator.num_processes
    episodes = [p for p in prompts for _ in range(run.eval_noises_per_prompt)]
    mine = list(range(rank, len(episodes), processes))
    env = venv.unwrapped
    env.np_random = np.random.default_rng(derive_seed(run.eval_seed, run.seed, rank, 2))
    generator = torch.Generator(device=prior.device).manual_seed(derive_seed(run.eval_seed, run.seed, rank, 1))
    prior.eval()
    env.return_image = True
    try:
        batch = collect_rollouts(venv, NoiseARPolicy(prior, run.temperature), [episodes[i] for i in mine], generator=generator)
    finally:
        env.return_image = False
    grid_image = lambda i, j: batch.images[j] if i % run.eval_noises_per_prompt == 0 else None  # noqa: E731
    rows = [(i, float(batch.rewards[j]), {k: float(v[j]) for k, v in batch.details.items()}, grid_image(i, j))
            for j, i in enumerate(mine)]
    rows = sorted(gather_object(rows) if processes > 1 else rows, key=lambda row: row[0])
    episodes = {"reward": [r[1] for r in rows], **{key: [r[2][key] for r in rows] for key in rows[0][2]}}
    metrics = {key: float(np.mean(values)) for key, values in episodes.items()}
    first = [r[3] for r in rows if r[0] % run.eval_noises_per_prompt == 0]
    return metrics, episodes, torch.stack(first) if accelerator.is_main_process else None


def _paired_change(
    before: dict[str, list[float]] | None, after: dict[str, list[float]], noises_per_prompt: int
) -> dict[str, tuple[float, float, float]]:
    """(mean, 95% CI low, high) of after - before for reward and success: the same prompts and
    standard normals, so a t interval over the per-prompt mean differences. Empty for a run resumed
    from a checkpoint that predates per-episode values."""
    if before is None:
        return {}
    change = {}
    for name in ("reward", "success"):
        if name in before and name in after:
            difference = torch.tensor(after[name], dtype=torch.float64) - torch.tensor(before[name], dtype=torch.float64)
            change[name] = mean_ci(difference.view(-1, noises_per_prompt).T)
    return change


def _save_grid(folder: RunFolder, name: str, images: Any, prompts: list[str], max_images: int = 32) -> None:
    if images is not None:
        folder.save_image_grid(name, images[:max_images], prompts[:max_images])


# -------------------------------------------------------------------------------- golden data
class _GoldenPairs:
    """Golden-noise pairs for nll, in epochs of seeded permutations; each prompt encoded once.

    Pairs whose prompt is a held-out evaluation prompt are left out.
    """

    def __init__(self, data: str | None, world: Any, heldout: set[str], config: NLLConfig, seed: int) -> None:
        from noisear_rl.data import GoldenNoiseDataset

        if data is None:
            raise ValueError("--algo nll needs --data: a golden-noise collection "
                             "(make one with `python -m noisear_rl.collect --out DIR`)")
        dataset = GoldenNoiseDataset(data, in_memory=True, require_complete=True)
        if tuple(dataset.latent_shape) != tuple(world.backend.latent_shape):
            raise ValueError(f"{data} holds noises of shape {dataset.latent_shape}, the env's backend needs "
                             f"{tuple(world.backend.latent_shape)}")
        keep = torch.tensor([dataset.prompts[i] not in heldout for i in dataset.prompt_index.tolist()], dtype=torch.bool)
        if not keep.any():
            raise ValueError(f"every pair in {data} is of a held-out evaluation prompt")
        self.noise = dataset.golden[keep]
        self.prompt_index = dataset.prompt_index[keep]
        self.cond: Condition = world.encode(dataset.prompts)
        self.batch_size = config.batch_size
        self.seed = seed

    def batch(self, iteration: int, rank: int, processes: int) -> GoldenBatch:
        """The iteration's pairs (this process's share): positions it*B .. (it+1)*B of the epoch permutations."""
        n = len(self.noise)
        positions = range(iteration * self.batch_size, (iteration + 1) * self.batch_size)
        permutations: dict[int, torch.Tensor] = {}
        rows = []
        for position in positions:
            epoch = position // n
            if epoch not in permutations:
                permutations[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0, 4)))
            rows.append(int(permutations[epoch][position % n]))
        index = torch.tensor(rows[rank::processes], dtype=torch.long)
        return GoldenBatch(self.noise[index], self.cond[self.prompt_index[index]])


# --------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> tuple[RunConfig, Any]:
    """Parses the command line: `--algo` picks the algorithm, whose config adds `--{algo}.*` flags.

    Raises:
        KeyError: An unknown `--algo` (the message lists the valid names).
    """
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default=RunConfig.algo)
    name = pre.parse_known_args(argv)[0].algo
    algorithm_class = get_algorithm(name)
    config_class = algorithm_class.config_class
    args_class = dataclasses.make_dataclass(
        "TrainArgs",
        [
            ("run", Annotated[RunConfig, tyro.conf.arg(name="")], field(default_factory=RunConfig)),
            (name, config_class, field(default_factory=config_class)),
        ],
    )
    description = (f"{__doc__}\n{DEBUG_HELP}\nAlgorithms: {', '.join(list_algorithms())}. "
                   f"The options below are those of --algo {name}: {(config_class.__doc__ or '').strip()}")
    args = tyro.cli(args_class, args=argv, prog="python -m noisear_rl.train", description=description)
    return args.run, getattr(args, name)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.train --help`; returns the exit status (2 after an error)."""
    return run_command(lambda arguments: train(*parse_args(arguments)), argv)


if __name__ == "__main__":
    sys.exit(main())
