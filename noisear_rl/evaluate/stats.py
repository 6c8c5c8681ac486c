"""The statistics of an evaluation: Student t intervals over per-prompt means, and the summary."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisear_rl.evaluate.cache import Cell
from noisear_rl.evaluate.config import EvaluateConfig


def t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with an integer `df` >= 1, in closed form.

    With theta = atan(|x| / sqrt(df)), P(|T| < |x|) is a finite series in cos(theta)
    (Abramowitz & Stegun 26.7.3 for odd df, 26.7.4 for even df); each term is the previous one
    times cos^2(theta) and a ratio of consecutive odd and even numbers.
    """
    theta = math.atan(abs(x) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:  # 2/pi (theta + sin(theta) [cos + 2/3 cos^3 + (2*4)/(3*5) cos^5 + ... up to cos^(df-2)])
        k = np.arange(1, (df - 1) // 2)
        series = math.cos(theta) * np.cumprod(np.concatenate([[1.0], cos2 * 2 * k / (2 * k + 1)])).sum() if df > 1 else 0.0
        inside = 2 / math.pi * (theta + math.sin(theta) * series)
    else:  # sin(theta) [1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... up to cos^(df-2)]
        k = np.arange(1, df // 2)
        inside = math.sin(theta) * np.cumprod(np.concatenate([[1.0], cos2 * (2 * k - 1) / (2 * k)])).sum()
    return 0.5 + math.copysign(float(inside) / 2, x)


def t_quantile(probability: float, df: int) -> float:
    """The Student t quantile: the x with `t_cdf(x, df) == probability`, by bisection (the CDF
    is increasing) to a relative precision of 2^-60."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0 < probability < 1:
        raise ValueError(f"probability must lie in (0, 1), got {probability}")
    if probability < 0.5:
        return -t_quantile(1 - probability, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < probability else (low, middle)
    return (low + high) / 2


def mean_ci(values_SP: Tensor) -> tuple[float, float, float]:
    """(mean, 95% CI low, high) of values [seeds, prompts]: a t interval over the per-prompt means
    (over the per-seed values when there is a single prompt); NaN bounds with one unit."""
    units = values_SP.double().mean(dim=0) if values_SP.shape[1] > 1 else values_SP.double().flatten()
    mean = float(units.mean())
    if len(units) < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(0.975, len(units) - 1) * float(units.std(unbiased=True)) / math.sqrt(len(units))
    return mean, mean - half, mean + half


def summarise(cells: dict[str, list[Cell]], config: EvaluateConfig, num_prompts: int) -> dict[str, Any]:
    """Per source: every metric's mean and 95% CI, its paired difference from the first source
    (same prompts and seeds, so the interval is over per-prompt mean differences), and the time
    per image."""
    results: dict[str, Any] = {}
    baseline = next(iter(cells))
    for label, seed_cells in cells.items():
        metrics = {}
        for column in seed_cells[0].values:
            values_SP = torch.stack([cell.values[column] for cell in seed_cells])
            mean, low, high = mean_ci(values_SP)
            metrics[column] = {"mean": mean, "ci95_low": low, "ci95_high": high}
            if label != baseline and column in cells[baseline][0].values:
                delta = mean_ci(values_SP - torch.stack([cell.values[column] for cell in cells[baseline]]))
                metrics[column] |= dict(zip(("delta", "delta_ci95_low", "delta_ci95_high"), delta))
        images = sum(cell.timing["images"] for cell in seed_cells)
        noise = sum(cell.timing["noise_seconds"] for cell in seed_cells)
        generate = sum(cell.timing["generate_seconds"] for cell in seed_cells)
        results[label] = {
            "metrics": metrics,
            "seconds_per_image": {"noise": noise / images, "noise_and_generation": (noise + generate) / images,
                                  "generation": generate / images},
        }
    return {
        "backend": config.backend,
        "device": config.device,
        "num_prompts": num_prompts,
        "seeds": list(config.seeds),
        "ci": "95% Student t interval over per-prompt means (each prompt averaged over the seeds)",
        "baseline": baseline,
        "sources": dict(zip(results, config.sources)),
        "results": results,
    }
