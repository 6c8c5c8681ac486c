"""What a training run is set up with before its first iteration: the prior and the env, the
prompts (the evaluation pool, which is never trained on, and the training prompt sampler), and
the state of a resumed run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from noisear_rl.algorithms.base import Algorithm
from noisear_rl.envs.prompts import world_prompt_set
from noisear_rl.envs.registration import env_backend
from noisear_rl.io import require_saved
from noisear_rl.noise_sources.noisear import resolve_prior
from noisear_rl.pipelines.base import DiffusionBackend
from noisear_rl.pipelines.factory import world_info
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.run_folder import CheckpointError, checkpoint_dirs, inspect_run_folder, load_checkpoint, read_summary
from noisear_rl.seeds import derive_seed
from noisear_rl.training.config import RunConfig, check_resumable


# ------------------------------------------------------------------------------ prior and env
def load_prior(run: RunConfig) -> NoiseARPrior:
    """--prior, else the env's embedded world's shipped prior."""
    if run.prior is not None:
        return resolve_prior(run.prior)
    backend_name = env_backend(run.env)
    world = world_info(backend_name) if backend_name else None
    if world is not None:
        folder = require_saved(
            world.prior, "config.json", f"shipped {world.name} prior", f"create it with `{world.prior_command}`, or pass --prior"
        )
        return NoiseARPrior.from_pretrained(str(folder))
    raise ValueError(f"--prior is required for {run.env} (a NoiseARPrior.save_pretrained folder)")


def make_env(run: RunConfig, backend: DiffusionBackend | None, patch_size: int) -> Any:
    """The run's vector env (`run.num_envs` episodes in lockstep) with the prior's patch size."""
    kwargs: dict[str, Any] = dict(
        reward=run.reward, model=run.model, device=run.device, dtype=run.dtype, patch_size=patch_size,
        num_inference_steps=run.num_inference_steps, guidance_scale=run.guidance_scale,
    )
    if backend is not None:
        kwargs["backend"] = backend
    return gym.make_vec(run.env, num_envs=run.num_envs, vectorization_mode="vector_entry_point", **kwargs)


def prior_and_env(
    run: RunConfig, algorithm_class: type[Algorithm], algo_config: Any, backend: DiffusionBackend | None,
    prior: NoiseARPrior | None,
) -> tuple[NoiseARPrior, Any]:
    """The prior to start from and the vector env: `prior` when given, else --prior, else a new
    prior when the algorithm makes one (`Algorithm.fresh_prior`, nll), else the env's world's
    shipped prior. The env is built with the prior's patch size (a new prior is shaped for its backend)."""
    fresh = algorithm_class.fresh_prior(algo_config) if prior is None and run.prior is None else None
    if prior is None and fresh is None:
        prior = load_prior(run)
    venv = make_env(run, backend, prior.config.patch_size if prior is not None else fresh.patch_size)
    if prior is None:
        world = venv.unwrapped.world
        prior = fresh.build(tuple(world.backend.latent_shape), world.backend.cond_dim)
    return prior, venv


# ------------------------------------------------------------------------------------ prompts
def evaluation_pool(run: RunConfig, world: Any) -> list[str]:
    """Every prompt that evaluation may use, none of which is ever trained on: --eval-prompts, an
    embedded world's evaluation split (what `python -m noisear_rl.evaluate` scores), or a fixed
    draw from the world's prompts."""
    if run.eval_prompts is not None:
        pool = world_prompt_set(run.eval_prompts, world.backend.world)
    elif world.backend.world is not None:
        pool = world.backend.world.evaluation_prompts()
    else:
        pool = world.sample_prompts(8 * run.num_eval_prompts, np.random.default_rng(run.eval_seed))
    return list(dict.fromkeys(pool))


def train_prompt_sampler(run: RunConfig, world: Any, heldout: set[str]) -> Callable[[int, int], list[str]]:
    """(iteration, count) -> its `count` training prompts (never a held-out one), the same on every process."""
    if run.train_prompts is not None:
        pool = [p for p in world_prompt_set(run.train_prompts, world.backend.world) if p not in heldout]
        if not pool:
            raise ValueError(f"every prompt of {run.train_prompts} is a held-out evaluation prompt")
        source = lambda n, rng: [pool[i] for i in rng.integers(len(pool), size=n)]  # noqa: E731
    else:
        source = world.sample_prompts

    def sample(iteration: int, count: int) -> list[str]:
        rng = np.random.default_rng(derive_seed(run.seed, iteration, 0, 3))
        chosen: list[str] = []
        for _ in range(100):
            chosen += [p for p in source(2 * count, rng) if p not in heldout]
            if len(chosen) >= count:
                return chosen[:count]
        raise ValueError("the prompt source yields only held-out evaluation prompts")

    return sample


# ------------------------------------------------------------------------------------- resume
def find_checkpoint(run: RunConfig, output_dir: Path, record: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """(newest checkpoint to resume from or None, the summary of a finished run or None): a new or
    empty folder, or with --resume this run's own folder (the same settings as `record`)."""
    stored = inspect_run_folder(output_dir)
    if not run.resume:
        if stored is not None:
            raise FileExistsError(f"{output_dir} holds a run: pass --resume to continue it (same settings), "
                                  "or choose a new or empty --output-dir")
        return None, None
    if stored is None:
        raise CheckpointError(f"nothing to resume: {output_dir} holds no run; run without --resume to start one")
    check_resumable(output_dir, stored, record)
    finished = read_summary(output_dir)
    if finished is not None:
        return None, finished
    found = checkpoint_dirs(output_dir)  # none: killed before its first checkpoint, so it starts over
    return (load_checkpoint(found[-1]) if found else None), None


def restore(checkpoint: Any, output_dir: Path, prior: NoiseARPrior, algorithm: Algorithm) -> tuple[int, Any, Any]:
    """Loads a checkpoint (`find_checkpoint`) into the prior and the algorithm; returns (iterations
    done, held-out metrics before training, their per-episode values), or (0, None, None) without one."""
    if checkpoint is None:
        return 0, None, None
    start, state = checkpoint
    newest = checkpoint_dirs(output_dir)[-1]
    try:
        prior.load_state_dict(state["prior"])
        algorithm.load_state_dict(state["algorithm"])
        before = state["heldout_before"], state.get("heldout_before_episodes")
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
    return start, *before
