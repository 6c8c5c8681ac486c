"""Measures the Shapes world: `python -m noisear_rl.worlds.shapes.measure`.

On the fixed evaluation prompts, with K seeded Gaussian noises per prompt at the pipeline's
default settings, it reports the verifier's success rate (overall, one- and two-object), the
per-criterion rates, how many prompts succeed for some noises and fail for others, best-of-K
success, what the failures got wrong (`failure_kind`), and what one golden-noise step
(`noisear_rl.pipelines.golden.golden_noise`) does to success on the same (prompt, noise) pairs.
Optionally it sweeps guidance scales and step counts on the same noises as the default, with
each point's paired change from it, to choose the defaults. Writes `results.json` and `grid.png`
(prompts x noises) into `output_dir`, and prints the numbers as Markdown.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from noisear_rl.checks import check_at_least, check_finite, option_name
from noisear_rl.cli import run_config_command
from noisear_rl.evaluate.stats import mean_ci
from noisear_rl.io import atomic_write, write_json
from noisear_rl.pipelines.golden import golden_noise, golden_schedule
from noisear_rl.worlds.shapes.backend import ShapesBackend
from noisear_rl.worlds.shapes.failures import binding_failures, failure_kinds, failure_shares
from noisear_rl.worlds.shapes.world import evaluation_prompts
from noisear_rl.worlds.shapes.verifier import CRITERIA, DrawnObject, ShapesVerifier


@dataclass
class MeasureConfig:
    """Evaluation of the Shapes world's model with its verifier."""

    output_dir: Path = Path("docs/shapes_world")
    """Where results.json and grid.png go."""
    model_path: Path | None = None
    """A saved ShapesPipeline folder (default: the shipped weights)."""
    num_noises: int = 8
    """Gaussian noises per prompt (best-of-K uses all of them)."""
    golden_guidance_scale: float | None = None
    """CFG of the golden-noise denoising step (None: the pipeline's default guidance; the
    inversion step uses 1.0)."""
    golden_num_inference_steps: int | None = None
    """Schedule whose first two timesteps the golden step moves between (default: the backend's
    `golden_num_inference_steps`, 50: t = 999 -> 979; fewer steps make a larger move)."""
    golden_noises: int | None = None
    """How many of the K noises per prompt also get a golden-noise step (None: all K; 0 skips it)."""
    sweep_guidance: tuple[float, ...] = ()
    """Guidance scales to compare with the default on the same noises (empty: no sweep)."""
    sweep_steps: tuple[int, ...] = ()
    """Step counts to compare with the default, at the default guidance (empty: no sweep)."""
    sweep_noises: int = 1
    """How many of the K noises per prompt the sweeps use (each point costs that many images per prompt)."""
    grid_prompts: int = 8
    """Rows of the image grid (half one-object, half two-object prompts)."""
    max_prompts: int = 0
    """Use only every n-th evaluation prompt so that at most this many remain (0: all; smoke runs)."""
    seed: int = 0
    """Seeds the noises: noise k of every prompt comes from generator seed + k."""
    batch_size: int = 256
    """Images per pipeline call."""
    threads: int = 1
    """torch CPU threads."""

    def check(self) -> None:
        """Raises a one-line ValueError naming the option for any value out of range."""
        check_at_least(self, 1, ("num_noises", "sweep_noises", "golden_num_inference_steps", "batch_size", "threads"))
        check_at_least(self, 0, ("golden_noises", "grid_prompts", "max_prompts", "seed"))
        check_finite(self, ("golden_guidance_scale",), minimum=0.0)
        for scale in self.sweep_guidance:
            if not (math.isfinite(scale) and scale >= 0):
                raise ValueError(f"--sweep-guidance takes finite numbers >= 0, got {scale!r}")
        for steps in self.sweep_steps:
            if steps < 1:
                raise ValueError(f"--sweep-steps takes step counts >= 1, got {steps!r}")
        for name in ("golden_noises", "sweep_noises"):
            if (getattr(self, name) or 0) > self.num_noises:
                raise ValueError(
                    f"{option_name(name)} ({getattr(self, name)}) must be at most --num-noises ({self.num_noises}): "
                    "it picks among the Gaussian noises"
                )


def measure(config: MeasureConfig) -> dict:
    """Runs the measurements, writes results.json and grid.png, returns the results."""
    config.check()
    torch.set_num_threads(config.threads)
    start = time.time()
    backend = ShapesBackend(model_path=config.model_path, batch_size=config.batch_size)
    verifier = ShapesVerifier()
    prompts = evaluation_prompts()
    if config.max_prompts:
        prompts = prompts[:: math.ceil(len(prompts) / config.max_prompts)]
    two_object = torch.tensor([" and " in p for p in prompts])
    cond = backend.encode(prompts)
    noises_KBCHW = torch.stack(
        [
            backend.random_latents(len(prompts), torch.Generator().manual_seed(config.seed + k))
            for k in range(config.num_noises)
        ]
    )

    def run(latents_KBCHW: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[list[list[DrawnObject]]]]:
        """Images [K, B, 3, H, W], verifier details [K, B] per criterion, and the objects read in each image."""
        images, details, drawn = [], [], []
        for latents in latents_KBCHW:
            batch_images = backend.generate(latents, cond)
            images.append(batch_images)
            drawn.append(verifier.read(batch_images))  # read once: for the reward and the failure analyses
            details.append(verifier.score_drawn(drawn[-1], prompts, batch_images.device).details)
        return torch.stack(images), {key: torch.stack([d[key] for d in details]) for key in details[0]}, drawn

    images_KB, gaussian, drawn_KB = run(noises_KBCHW)
    gaussian["binding_failure"] = torch.stack([binding_failures(drawn, prompts) for drawn in drawn_KB])
    kinds = [kind for drawn in drawn_KB for kind in failure_kinds(drawn, prompts)]
    results: dict = {
        "config": asdict(config),
        "num_prompts": len(prompts),
        "num_two_object_prompts": int(two_object.sum()),
        "num_inference_steps": backend.num_inference_steps,
        "guidance_scale": backend.guidance_scale,
        "gaussian": {**summarize(gaussian, two_object), "failure_kinds": failure_shares(kinds)},
    }
    k = config.num_noises if config.golden_noises is None else config.golden_noises
    if k:
        golden_scale = backend.guidance_scale if config.golden_guidance_scale is None else config.golden_guidance_scale
        schedule = golden_schedule(backend, config.golden_num_inference_steps)
        golden_KB = torch.stack(
            [golden_noise(
                backend, noises_KBCHW[i], cond, golden_scale, num_inference_steps=config.golden_num_inference_steps
            ) for i in range(k)]
        )
        _, golden, _ = run(golden_KB)
        before, after = gaussian["success"][:k].bool(), golden["success"].bool()
        fixed, broken = paired_flips(before, after)
        results["golden"] = {
            "guidance_scale": golden_scale,
            "inversion_guidance_scale": 1.0,
            "timesteps": [schedule.denoise_from, schedule.denoise_to],
            "noises_per_prompt": k,
            "gaussian_success_same_pairs": before.float().mean().item(),
            **summarize(golden, two_object),
            "fixed": fixed,
            "broken": broken,
            "sign_test_p": sign_test(fixed, broken),
            # Every prompt gets the same k-th noise, so pairs are correlated across prompts: the
            # effect holding on each noise seed is sturdier evidence than the pooled p-value.
            "per_noise_seed": [
                {"seed": config.seed + i, "gaussian": before[i].float().mean().item(),
                 "golden": after[i].float().mean().item(), **dict(zip(("fixed", "broken"), paired_flips(before[i], after[i])))}
                for i in range(k)
            ],
            "mean_abs_change": (golden_KB - noises_KBCHW[:k]).abs().mean().item(),
            "noise_std_after": golden_KB.std().item(),
        }
    n = config.sweep_noises
    points = [(backend.num_inference_steps, scale) for scale in config.sweep_guidance]
    points += [(steps, backend.guidance_scale) for steps in config.sweep_steps]
    if points:
        results["sweep"] = {
            "noises_per_prompt": n,
            "default_success": gaussian["success"][:n].mean().item(),
            "points": [
                _sweep_point(backend, verifier, cond, prompts, noises_KBCHW[:n], steps, scale, gaussian["success"][:n])
                for steps, scale in points
            ],
        }
    results["elapsed_s"] = round(time.time() - start, 1)

    output_dir = Path(config.output_dir)
    write_json(output_dir / "results.json", results)
    rows = _grid_rows(prompts, config.grid_prompts)
    grid = make_grid(images_KB[:, rows], gaussian["success"][:, rows], [prompts[i] for i in rows])
    atomic_write(output_dir / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
    print(to_markdown(results))
    return results


def summarize(details_KB: dict[str, torch.Tensor], two_object_B: torch.Tensor) -> dict:
    """Success (overall, one- and two-object), per-criterion rates, spread across noises, best-of-K."""
    success = details_KB["success"].bool()
    per_prompt = success.float().mean(dim=0)
    return {
        "success": success.float().mean().item(),
        "success_one_object": success[:, ~two_object_B].float().mean().item(),
        "success_two_object": success[:, two_object_B].float().mean().item(),
        "criteria": {name: details_KB[name].mean().item() for name in CRITERIA},
        "prompts_mixed": int(((per_prompt > 0) & (per_prompt < 1)).sum()),
        "prompts_always": int((per_prompt == 1).sum()),
        "prompts_never": int((per_prompt == 0).sum()),
        "best_of_k": success.any(dim=0).float().mean().item(),
        "best_of_k_two_object": success[:, two_object_B].any(dim=0).float().mean().item(),
        "within_prompt_variance_share": _within_share(success.float()),
        **(
            {"failures_two_object_share": _share(~success[:, two_object_B], ~success),
             "failures_binding_share": _share(details_KB["binding_failure"].bool(), ~success)}
            if "binding_failure" in details_KB else {}
        ),
    }


def _share(part: torch.Tensor, whole: torch.Tensor) -> float:
    """How many of the True entries of `whole` are also True in `part` (part ⊆ whole)."""
    return part.sum().item() / max(1, whole.sum().item())


def _within_share(success_KB: torch.Tensor) -> float:
    """Share of the outcome variance that lies within prompts (across noises)."""
    total = success_KB.var(unbiased=False).item()
    within = success_KB.var(dim=0, unbiased=False).mean().item()
    return within / total if total > 0 else 0.0


def paired_flips(before: torch.Tensor, after: torch.Tensor) -> tuple[int, int]:
    """(fixed, broken): pairs that fail before and pass after, and the reverse (0/1 or bool outcomes)."""
    before, after = before.bool(), after.bool()
    return int((~before & after).sum()), int((before & ~after).sum())


def sign_test(fixed: int, broken: int) -> float:
    """Two-sided exact sign-test p-value of `fixed` vs `broken` discordant pairs (McNemar, exact)."""
    n = fixed + broken
    if n == 0:
        return 1.0
    k = min(fixed, broken)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _sweep_point(
    backend: ShapesBackend, verifier: ShapesVerifier, cond, prompts: list[str], latents_KBCHW: torch.Tensor,
    steps: int, scale: float, default_success_KB: torch.Tensor,
) -> dict:
    """Success of the same noises at another step count or guidance, and its paired change from the
    default's: a t interval over per-prompt mean differences (`evaluate.stats.mean_ci`)."""
    point = ShapesBackend(
        backend.device, backend.dtype, num_inference_steps=steps, guidance_scale=scale,
        batch_size=backend.batch_size, pipe=backend.pipe,
    )
    details = [verifier.evaluate(point.generate(latents, cond), prompts).details for latents in latents_KBCHW]
    stacked = {key: torch.stack([d[key] for d in details]).float() for key in ("success", *CRITERIA)}
    change, low, high = mean_ci(stacked["success"] - default_success_KB.float())
    fixed, broken = paired_flips(default_success_KB, stacked["success"])
    return {
        "steps": steps, "guidance_scale": scale, "success": stacked["success"].mean().item(),
        **{name: stacked[name].mean().item() for name in CRITERIA},
        "per_noise_seed": stacked["success"].mean(dim=1).tolist(),
        "change_vs_default": change, "change_ci95": [low, high], "fixed": fixed, "broken": broken,
    }


def _grid_rows(prompts: list[str], count: int) -> list[int]:
    singles = [i for i, p in enumerate(prompts) if " and " not in p]
    pairs = [i for i, p in enumerate(prompts) if " and " in p]
    half = count // 2
    pick = lambda idx, n: [idx[j] for j in np.linspace(0, len(idx) - 1, n).round().astype(int)]  # noqa: E731
    return pick(singles, half) + pick(pairs, count - half)


def make_grid(images_KBCHW: torch.Tensor, success_KB: torch.Tensor, prompts: list[str], scale: int = 3) -> Image.Image:
    """Rows = prompts (text on the left), columns = noises; a green frame marks verifier success."""
    k, b = images_KBCHW.shape[:2]
    tile = images_KBCHW.shape[-1] * scale
    pad, text_width = 4, 330
    canvas = Image.new("RGB", (text_width + k * (tile + pad) + pad, b * (tile + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row in range(b):
        y = pad + row * (tile + pad)
        draw.text((4, y + tile // 2 - 6), prompts[row], fill=(0, 0, 0))
        for col in range(k):
            x = text_width + pad + col * (tile + pad)
            array = (images_KBCHW[col, row].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(array).resize((tile, tile), Image.NEAREST), (x, y))
            colour = (0, 200, 0) if success_KB[col, row] else (220, 0, 0)
            draw.rectangle([x - 2, y - 2, x + tile + 1, y + tile + 1], outline=colour, width=2)
    return canvas


def to_markdown(results: dict) -> str:
    """The numbers as a Markdown table."""
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    lines = ["| noise | success | one-object | two-object | colour | shape | position | count | mixed prompts | best-of-K |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("gaussian", "golden"):
        if name not in results:
            continue
        r = results[name]
        c = r["criteria"]
        lines.append(
            f"| {name} | {pct(r['success'])} | {pct(r['success_one_object'])} | {pct(r['success_two_object'])} | "
            f"{pct(c['colour'])} | {pct(c['shape'])} | {pct(c['position'])} | {pct(c['count'])} | "
            f"{r['prompts_mixed']}/{results['num_prompts']} | {pct(r['best_of_k'])} |"
        )
    if "failures_binding_share" in results["gaussian"]:
        r = results["gaussian"]
        lines.append(
            f"\nGaussian failures: {pct(r['failures_two_object_share'])} on two-object prompts; "
            f"{pct(r['failures_binding_share'])} pass the prompt with colours, shapes or sides swapped."
        )
    if "failure_kinds" in results["gaussian"]:
        shares = ", ".join(f"{kind} {pct(share)}" for kind, share in results["gaussian"]["failure_kinds"].items())
        lines.append(f"What the failures got wrong (`failure_kind`): {shares}.")
    if "golden" in results:
        g = results["golden"]
        lines.append(
            f"\nGolden noise (guidance {g['guidance_scale']} then inversion at 1.0): {pct(g['gaussian_success_same_pairs'])} -> "
            f"{pct(g['success'])} on the same pairs; fixed {g['fixed']}, broken {g['broken']}, sign-test p = {g['sign_test_p']:.2g}; "
            f"mean |change| {g['mean_abs_change']:.4f}."
        )
        lines.extend(
            f"- noise seed {r['seed']}: {pct(r['gaussian'])} -> {pct(r['golden'])} (fixed {r['fixed']}, broken {r['broken']})"
            for r in g["per_noise_seed"]
        )
    if "sweep" in results:
        sweep = results["sweep"]
        lines.append(
            f"\nSweep on {sweep['noises_per_prompt']} noise(s) per prompt; the default (steps {results['num_inference_steps']}, "
            f"guidance {results['guidance_scale']}) gives {pct(sweep['default_success'])} on them:"
        )
        lines.extend(
            f"- steps {p['steps']}, guidance {p['guidance_scale']}: success {pct(p['success'])}, "
            f"{100 * p['change_vs_default']:+.1f} points (95% CI {100 * p['change_ci95'][0]:+.1f} to {100 * p['change_ci95'][1]:+.1f}; "
            f"fixed {p['fixed']}, broken {p['broken']})"
            for p in sweep["points"]
        )
    lines.append(f"\n({results['elapsed_s']} s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.worlds.shapes.measure --help`; returns the exit status
    (2 after an error)."""
    return run_config_command(measure, MeasureConfig, "noisear_rl.worlds.shapes.measure", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
