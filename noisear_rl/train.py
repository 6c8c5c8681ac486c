"""Train the NoiseAR prior: NLL pretraining on golden noise, or RL from rollouts (DPO, PPO, REINFORCE).

    python -m noisear_rl.train --algo dpo                     # the main job: Shapes world, shipped prior
    python -m noisear_rl.train --algo ppo --ppo.kl-coef 0.01 --seed 1
    python -m noisear_rl.train --algo nll --data data/shapes_golden --output-dir runs/shapes-nll
    python -m noisear_rl.train --algo dpo --output-dir runs/x --resume   # continue a killed run
    python -m noisear_rl.train --import my_reward.py --reward brightness # a reward registered in your file
    python -m noisear_rl.train --env NoiseAR-SDXL-v0 --device cuda --dtype float16 --reward imagereward
    accelerate launch --multi_gpu --num_processes 2 -m noisear_rl.train --algo dpo   # 2 processes

(On a CPU-only machine `--multi_gpu` still works: torchrun starts the processes and they talk over
gloo; `accelerate launch --cpu --num_processes 2` starts one process unless MPI is set up.)

`--algo NAME --help` lists that algorithm's options. Every iteration collects rollouts of the
training prompts (or draws golden-noise pairs for nll), calls the algorithm's `update`, logs,
and checkpoints; the held-out evaluation prompts (never trained on) are scored before and after
training. The run folder layout is described in `noisear_rl.run_folder`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

import noisear_rl  # noqa: F401  (registers the environments)
from noisear_rl.algorithms.base import Algorithm, get_algorithm, list_algorithms
from noisear_rl.algorithms.context import TrainingContext
from noisear_rl.cli import DEBUG_HELP, IMPORT_FLAG, early_values, import_modules, run_command, set_threads
from noisear_rl.envs.prompts import evenly_spaced
from noisear_rl.io import save_pretrained_atomically, write_json
from noisear_rl.pipelines.base import DiffusionBackend, check_fits
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.run_folder import RunFolder, save_checkpoint
from noisear_rl.seeds import derive_seed
from noisear_rl.training.config import RunConfig, check_inputs, config_record, output_dir_name
from noisear_rl.training.heldout import evaluate_heldout, format_summary, paired_change, save_grid
from noisear_rl.training.setup import evaluation_pool, find_checkpoint, prior_and_env, restore, train_prompt_sampler

__all__ = ["RunConfig", "format_summary", "main", "parse_args", "train"]


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
    import_modules(run.imports)
    algorithm_class = get_algorithm(run.algo)
    if not isinstance(algo_config, algorithm_class.config_class):
        raise TypeError(f"--algo {run.algo} needs a {algorithm_class.config_class.__name__}, got {type(algo_config).__name__}")
    check_inputs(run, algo_config, backend)
    set_threads(run.threads)
    accelerator = Accelerator(cpu=run.device == "cpu")
    main_process, rank = accelerator.is_main_process, accelerator.process_index
    algorithm_class.check_inputs(algo_config, run.data, accelerator.num_processes, prefix=f"--{run.algo}.")
    output_dir = [output_dir_name(run)]
    broadcast_object_list(output_dir)  # every process uses the main process's folder name
    output_dir = Path(output_dir[0])
    record = config_record(run, algo_config, accelerator.num_processes)

    # Resume or start: nothing is written before every input below has been checked and loaded.
    checkpoint, finished = find_checkpoint(run, output_dir, record)
    if finished is not None:
        if main_process:
            print(f"the run in {output_dir} is finished: nothing to do\n{format_summary(finished)}")
        return finished
    accelerator.wait_for_everyone()  # every process has looked at the folder before the main one writes it

    # Environment, prior, algorithm and the algorithm's data.
    torch.manual_seed(run.seed)
    prior, venv = prior_and_env(run, algorithm_class, algo_config, backend, prior)
    prior = prior.to(accelerator.device)
    world = venv.unwrapped.world
    check_fits(world.backend, prior.latent_shape, prior.config.cond_dim, "the prior (--prior)")
    if run.temperature is None:
        run = dataclasses.replace(run, temperature=prior.sampling_temperature())
    algorithm: Algorithm = algorithm_class(algo_config, prior, temperature=run.temperature, accelerator=accelerator)
    policy_before = algorithm.policy_metrics()
    pool = evaluation_pool(run, world)
    heldout = evenly_spaced(pool, run.num_eval_prompts)  # scored before and after training
    context = TrainingContext(venv, train_prompt_sampler(run, world, set(pool)), frozenset(pool), run.seed, run.data)
    next_round = algorithm.round_data(context)
    checkpoint_every = run.checkpoint_every or max(1, algo_config.iterations // 20)
    start, heldout_before, episodes_before = restore(checkpoint, output_dir, prior, algorithm)

    # Everything is checked: only now is the run folder written.
    folder = None
    if main_process:
        folder = RunFolder(output_dir, None if checkpoint is None else start, run.tensorboard,
                           config=record if checkpoint is None else None, report_to=run.report_to)
    if heldout_before is None:
        heldout_before, episodes_before, images = evaluate_heldout(prior, venv, heldout, run, accelerator)
        if folder is not None:
            folder.log(0, {f"eval/{k}": v for k, v in heldout_before.items()})
            save_grid(folder, "eval-000000", images, heldout, episodes_before, run.eval_noises_per_prompt)

    # The loop: the round's data -> update -> log -> checkpoint -> evaluate.
    from tqdm.auto import tqdm

    bar = tqdm(range(start, algo_config.iterations), initial=start, total=algo_config.iterations,
               desc=f"{run.algo} iterations", disable=not (run.progress and main_process))
    for iteration in bar:
        tick = time.perf_counter()
        torch.manual_seed(derive_seed(run.seed, iteration, rank, 0))
        metrics: dict[str, float] = {"train/lr": algorithm.scheduler.get_last_lr()[0]}
        batch, data_metrics = next_round(iteration)
        metrics.update(data_metrics)
        updates = _mean_across_processes(algorithm.update(batch), accelerator)
        metrics.update({f"train/{k}": v for k, v in updates.items()})
        metrics.update({f"policy/{k}": v for k, v in algorithm.policy_metrics().items()})
        done = iteration + 1
        if run.eval_every and done % run.eval_every == 0 and done < algo_config.iterations:
            heldout_now, episodes_now, images = evaluate_heldout(prior, venv, heldout, learned(run, algorithm), accelerator)
            metrics.update({f"eval/{k}": v for k, v in heldout_now.items()})
            if folder is not None:
                save_grid(folder, f"eval-{done:06d}", images, heldout, episodes_now, run.eval_noises_per_prompt)
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
    run = learned(run, algorithm)
    prior.register_to_config(temperature=run.temperature)  # the saved prior samples as it was evaluated
    heldout_after, episodes_after, images = evaluate_heldout(prior, venv, heldout, run, accelerator)
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
        "heldout_change": paired_change(episodes_before, episodes_after, run.eval_noises_per_prompt),
        "policy_before": policy_before,
        "policy_after": algorithm.policy_metrics(),
        "seconds_this_session": round(time.perf_counter() - started, 1),
        "output_dir": str(output_dir),
    }
    if folder is not None:
        folder.log(algo_config.iterations, {f"eval/{k}": v for k, v in heldout_after.items()})
        save_grid(folder, f"eval-{algo_config.iterations:06d}", images, heldout, episodes_after, run.eval_noises_per_prompt)
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


def learned(run: RunConfig, algorithm: Algorithm) -> RunConfig:
    """`run` with the policy's current temperature (learned, when the algorithm trains it)."""
    return dataclasses.replace(run, temperature=algorithm.temperature)


def _mean_across_processes(metrics: dict[str, float], accelerator: Any) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    gathered = gather_object([metrics])
    keys = sorted({k for m in gathered for k in m})
    return {k: float(np.mean([m[k] for m in gathered if k in m])) for k in keys}


# --------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> tuple[RunConfig, Any]:
    """Parses the command line: `--algo` picks the algorithm, whose config adds `--{algo}.*` flags.

    Raises:
        KeyError: An unknown `--algo` (the message lists the valid names).
        ValueError, RuntimeError: An `--import` that is not found or fails.
    """
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    import_modules(early_values(argv, IMPORT_FLAG))  # before --algo is looked up: it may name an algorithm they register
    name = (early_values(argv, "--algo") or [RunConfig.algo])[-1]
    algorithm_class = get_algorithm(name)
    config_class = algorithm_class.config_class
    args_class = dataclasses.make_dataclass(
        "TrainArgs",
        [
            ("run", Annotated[RunConfig, tyro.conf.arg(name="")], field(default_factory=RunConfig)),
            # `--{name}.*`, for any registered name (a field name must be an identifier; "my-algo" is not)
            ("algorithm", Annotated[config_class, tyro.conf.arg(name=name)], field(default_factory=config_class)),
        ],
    )
    description = (f"{__doc__}\n{DEBUG_HELP}\nAlgorithms: {', '.join(list_algorithms())}. "
                   f"The options below are those of --algo {name}: {(config_class.__doc__ or '').strip()}")
    args = tyro.cli(args_class, args=argv, prog="python -m noisear_rl.train", description=description)
    return args.run, args.algorithm


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.train --help`; returns the exit status (2 after an error)."""
    return run_command(lambda arguments: train(*parse_args(arguments)), argv)


if __name__ == "__main__":
    sys.exit(main())
