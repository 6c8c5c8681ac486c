"""The held-out evaluation of a training run: the prior's noises on prompts it is never trained
on, scored before and after training with the same standard normals, the paired change with its
interval, and the run's summary lines."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from noisear_rl.envs.policy import NoiseARPolicy
from noisear_rl.envs.rollout import collect_rollouts
from noisear_rl.evaluate.stats import mean_ci
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.run_folder import RunFolder
from noisear_rl.seeds import derive_seed
from noisear_rl.training.config import RunConfig


def evaluate_heldout(
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


def paired_change(
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


def save_grid(
    folder: RunFolder, name: str, images: Any, prompts: list[str], episodes: dict[str, list[float]],
    noises_per_prompt: int, max_images: int = 32,
) -> None:
    """Saves the grid of each prompt's first-noise image (`evaluate_heldout`'s), bordered green or red
    by that episode's success when the reward reports one.

    Args:
        folder: The run folder.
        name: The grid's name ("eval-000012").
        images: The images (None off the main process: nothing is saved).
        prompts: The held-out prompts, one per image.
        episodes: Every episode's values, prompt-major (`evaluate_heldout`'s).
        noises_per_prompt: Episodes per prompt.
        max_images: The most images shown.
    """
    if images is None:
        return
    success = episodes.get("success")
    firsts = success[::noises_per_prompt][:max_images] if success is not None else None
    folder.save_image_grid(name, images[:max_images], prompts[:max_images], success=firsts)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary's human-readable lines."""

    def describe(metrics: dict[str, float]) -> str:
        text = f"reward {metrics['reward']:.4f}"
        return text + (f", success rate {metrics['success']:.3f}" if "success" in metrics else "")

    def change(name: str, digits: int) -> str:
        mean, low, high = summary["heldout_change"][name]
        return f"{name} {mean:+.{digits}f} (95% CI {low:+.{digits}f} to {high:+.{digits}f})"

    changes = summary.get("heldout_change") or {}
    parts = [change(name, 4 if name == "reward" else 3) for name in ("reward", "success") if name in changes]
    change_line = ["held-out change, paired over the same prompts and noises: " + ", ".join(parts)] if parts else []
    before, after = summary.get("policy_before") or {}, summary.get("policy_after") or {}
    knobs = [f"{name} {before[name]:.3g} -> {after[name]:.3g}" for name in before if name in after]
    policy_line = ["policy (what the prior samples with): " + ", ".join(knobs)] if knobs else []
    return "\n".join([
        f"{summary['algo']} on {summary['env']} (seed {summary['seed']}, {summary['iterations']} iterations) "
        f"-> {summary['output_dir']}",
        f"held-out ({summary['heldout_prompts']} prompts x {summary['heldout_noises_per_prompt']} noises) before: "
        f"{describe(summary['heldout_before'])}",
        f"held-out ({summary['heldout_prompts']} prompts x {summary['heldout_noises_per_prompt']} noises) after:  "
        f"{describe(summary['heldout_after'])}",
        *change_line,
        *policy_line,
        f"time: {summary['seconds_this_session']:.0f} s",
    ])
