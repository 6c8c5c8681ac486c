"""The evaluation's reports: results.json, results.csv, results.md (two tables), grid.png, bars.png."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisear_rl.evaluate.cache import Cell
from noisear_rl.io import atomic_write, write_json


def write_outputs(
    output_dir: Path, summary: dict[str, Any], cells: dict[str, list[Cell]], grid_prompts: list[str],
    grid_rows: list[int] | None = None,
) -> None:
    """results.json, results.csv, results.md, grid.png and bars.png, each written atomically.

    grid.png shows the first seed's image of each grid prompt (their indices in the prompt set are
    `grid_rows`) for every source; where a metric has a success column (`shapes.success`), each
    image gets a green (passed) or red (failed) border.
    """
    write_json(output_dir / "results.json", summary)
    atomic_write(output_dir / "results.csv", lambda tmp: tmp.write_text(results_csv(summary)))
    atomic_write(output_dir / "results.md", lambda tmp: tmp.write_text(results_markdown(summary)))
    if grid_prompts:
        from noisear_rl.grids import image_grid, success_column

        labels = list(cells)
        images = torch.stack([cells[label][0].grid_images[row] for row in range(len(grid_prompts)) for label in labels])
        captions = [f"{label}: {prompt}" for prompt in grid_prompts for label in labels]
        column = success_column(list(cells[labels[0]][0].values)) if grid_rows is not None else None
        success = None
        if column is not None and grid_rows is not None:
            success = [float(values[row]) if (values := cells[label][0].values.get(column)) is not None else None
                       for row in grid_rows for label in labels]
        scale = max(1, 128 // max(images.shape[-2:]))
        grid = image_grid(images.float() / 255, captions, columns=len(labels), scale=scale, success=success)
        atomic_write(output_dir / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
    atomic_write(output_dir / "bars.png", lambda tmp: tmp.write_bytes(bar_plot_png(summary)))


def _metric_names(summary: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for result in summary["results"].values():
        names += [name for name in result["metrics"] if name not in names]
    return names


def results_csv(summary: dict[str, Any]) -> str:
    """One row per (source, metric) with the paired difference from the baseline source, plus
    the timing rows (no intervals); "interval" says which the metric's is ("wilson" or "t")."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = ("mean", "ci95_low", "ci95_high", "delta", "delta_ci95_low", "delta_ci95_high")
    writer.writerow(["source", "spec", "metric", *keys, "baseline", "num_prompts", "num_seeds", "interval"])
    n, seeds = summary["num_prompts"], len(summary["seeds"])
    for label, result in summary["results"].items():
        spec = summary["sources"][label]
        for metric, value in result["metrics"].items():
            numbers = [f"{value[k]:.6g}" if k in value else "" for k in keys]
            writer.writerow([label, spec, metric, *numbers, summary["baseline"], n, seeds, value.get("interval", "t")])
        for kind, seconds in result["seconds_per_image"].items():
            writer.writerow([label, spec, f"seconds_per_image.{kind}", f"{seconds:.6g}", *[""] * 5, "", n, seeds, ""])
    return buffer.getvalue()


def results_markdown(summary: dict[str, Any]) -> str:
    """Two tables, sources as rows: per metric `mean ± half-width` (t interval) or `rate [low, high]`
    (Wilson interval), with the seconds per image; and the paired differences from the baseline."""
    metrics = _metric_names(summary)
    baseline = summary["baseline"]
    lines = [
        f"Backend `{summary['backend']}` on {summary['device']}; {summary['num_prompts']} prompts x "
        f"{len(summary['seeds'])} seeds ({', '.join(map(str, summary['seeds']))}); mean ± half-width, or "
        f"rate [low, high], of the {summary['ci']}. s/img: seconds per image for the noise alone, and for the "
        "noise plus the image.",
        "",
        "| source | " + " | ".join(metrics) + " | noise s/img | noise+image s/img |",
        "|---" * (len(metrics) + 3) + "|",
    ]
    for label, result in summary["results"].items():
        cells = [_interval(result["metrics"].get(metric), "") for metric in metrics]
        seconds = result["seconds_per_image"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seconds['noise']:.4f} | {seconds['noise_and_generation']:.4f} |")
    if len(summary["results"]) > 1:
        lines += [
            "",
            f"Difference from `{baseline}` on the same prompts and seeds (paired: the interval is over the "
            "per-prompt mean differences):",
            "",
            "| source | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        for label, result in summary["results"].items():
            if label != baseline:
                cells = [_interval(result["metrics"].get(metric), "delta", signed=True) for metric in metrics]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _interval(value: dict[str, float] | None, prefix: str, signed: bool = False) -> str:
    """`mean ± half-width` of `value[prefix]` and its interval, `rate [low, high]` for a Wilson
    interval (not symmetric about the rate) ("" when absent)."""
    key = prefix or "mean"
    if value is None or key not in value:
        return ""
    low, high = value[f"{prefix}_ci95_low" if prefix else "ci95_low"], value[f"{prefix}_ci95_high" if prefix else "ci95_high"]
    text = f"{value[key]:+.3f}" if signed else f"{value[key]:.3f}"
    if math.isnan(low):
        return text
    if not prefix and value.get("interval") == "wilson":
        return f"{text} [{low:.3f}, {high:.3f}]"
    return f"{text} ± {(high - low) / 2:.3f}"


def bar_plot_png(summary: dict[str, Any]) -> bytes:
    """One panel per metric: a bar per source with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = _metric_names(summary)
    labels = list(summary["results"])
    columns = min(3, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")(np.arange(len(labels)) % 10)
    for axis, metric in zip(axes.flat, metrics):
        values = [summary["results"][label]["metrics"].get(metric) for label in labels]
        means = [v["mean"] if v else float("nan") for v in values]
        errors = np.array([[v["mean"] - v["ci95_low"], v["ci95_high"] - v["mean"]] if v else [0, 0] for v in values]).T
        axis.bar(range(len(labels)), means, yerr=np.nan_to_num(errors), color=colours, capsize=3)
        axis.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        axis.set_title(metric, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.axis("off")
    title = f"{summary['backend']}: mean and 95% CI ({summary['num_prompts']} prompts x {len(summary['seeds'])} seeds)"
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
