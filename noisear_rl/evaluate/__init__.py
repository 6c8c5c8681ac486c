"""Compare noise sources on a prompt set: `python -m noisear_rl.evaluate`.

Every source gets the same prompts, the same pipeline and the same seeds: for each seed the prompts
are cut into fixed chunks of --batch-size, and chunk i of seed s hands every source a generator
seeded by (s, i); sources that start from Gaussian noise draw it first, so they all start from the
same noises. Each image is scored by every --reward (a name or composite spec, one metric of the
tables; `--import my_reward.py` makes a reward registered in that file usable); a reward's details
become metrics too (the Shapes verifier's `shapes.success` is the success rate).

A table cell is the mean over prompts x seeds with a 95% confidence interval over the per-prompt
means (each prompt's mean over the seeds), so prompts are the independent unit: a Wilson score
interval for a rate (a metric whose every value is 0 or 1, like `shapes.success`; n = the
prompts), which stays in [0, 1], and a Student t interval for the other metrics and for the paired
differences from the first source. Time per image is measured per source: the noise (the source's call: for
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

    python -m noisear_rl.evaluate --backend shapes --reward shapes --seeds 0 1 2 \\
        --sources gaussian golden:runs/shapes-npnet erasure-injection \\
                  "noisear:runs/shapes-nll/prior" "noisear:runs/dpo?label=noisear+dpo" best-of-n:8 \\
        --output-dir runs/eval
"""

# The package: `config` (the settings and their checks), `run` (the cells), `cache` (cells on disk),
# `stats` (intervals and the summary), `reports` (tables and plots).

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from noisear_rl.cli import DEBUG_HELP, run_command
from noisear_rl.evaluate.cache import Cell, read_cell, write_cell
from noisear_rl.evaluate.config import EvaluateConfig, load_prompts
from noisear_rl.evaluate.reports import bar_plot_png, results_csv, results_markdown, write_outputs
from noisear_rl.evaluate.run import evaluate, metric_columns, run_cell, run_cells
from noisear_rl.evaluate.stats import mean_ci, rate_ci, summarise, t_cdf, t_quantile, wilson_interval

__all__ = [
    "Cell",
    "EvaluateConfig",
    "bar_plot_png",
    "evaluate",
    "load_prompts",
    "main",
    "mean_ci",
    "metric_columns",
    "rate_ci",
    "read_cell",
    "results_csv",
    "results_markdown",
    "run_cell",
    "run_cells",
    "summarise",
    "t_cdf",
    "t_quantile",
    "wilson_interval",
    "write_cell",
    "write_outputs",
]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.evaluate --help`; returns the exit status (2 after an error)."""
    return run_command(_command, argv)


def _command(argv: list[str]) -> None:
    import tyro

    config = tyro.cli(EvaluateConfig, args=argv, prog="python -m noisear_rl.evaluate", description=f"{__doc__}\n{DEBUG_HELP}")
    summary = evaluate(config)
    print((Path(config.output_dir) / "results.md").read_text(), end="")
    print(f"tables, grid and plot in {config.output_dir} ({len(summary['results'])} sources)")
