"""The statistics of an evaluation: 95% intervals over per-prompt means, and the summary.

Rates (metrics whose every value is 0 or 1: success, the verifier's checks) get Wilson score
intervals, which stay in [0, 1]; other metrics and paired differences get Student t intervals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisear_rl.evaluate.cache import Cell
from noisear_rl.evaluate.config import EvaluateConfig

Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile (two-sided 95%)."""
CI_TEXT = (
    "95% interval over per-prompt means (each prompt averaged over the seeds): a Wilson score interval for "
    "rates (metrics whose every value is 0 or 1), a Student t interval for the other metrics and the differences"
)


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
    units = _units(values_SP)
    mean = float(units.mean())
    if len(units) < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(0.975, len(units) - 1) * float(units.std(unbiased=True)) / math.sqrt(len(units))
    return mean, mean - half, mean + half


def _units(values_SP: Tensor) -> Tensor:
    """The independent units of values [seeds, prompts]: the per-prompt means (the per-seed values
    when there is a single prompt), float64."""
    return values_SP.double().mean(dim=0) if values_SP.shape[1] > 1 else values_SP.double().flatten()


def wilson_interval(rate: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a rate observed over `n` >= 1 trials: inside [0, 1] always,
    and not empty when the rate is 0 or 1 (unlike the t and the normal intervals)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    shrink = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(max(rate * (1 - rate), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_ci(values_SP: Tensor) -> tuple[float, float, float]:
    """(rate, 95% Wilson interval low, high) of 0/1 values [seeds, prompts]: the rate is the mean of
    the per-prompt rates and n the number of prompts (the units of `mean_ci`). With one seed this is
    the textbook interval; with more, each prompt still counts once, so it is conservative (several
    seeds of a prompt are not independent trials)."""
    units = _units(values_SP)
    rate = float(units.mean())
    return (rate, *wilson_interval(rate, len(units)))


def is_rate(values: Tensor) -> bool:
    """Whether every value is 0 or 1 (a success or a 0/1 check), so that its mean is a rate."""
    return bool(((values == 0) | (values == 1)).all())


def summarise(cells: dict[str, list[Cell]], config: EvaluateConfig, num_prompts: int) -> dict[str, Any]:
    """Per source: every metric's mean and 95% CI (Wilson for a rate, t otherwise: "interval"
    says which), its paired difference from the first source (same prompts and seeds, so a t
    interval over per-prompt mean differences), and the time per image."""
    results: dict[str, Any] = {}
    baseline = next(iter(cells))
    every = [cell for seed_cells in cells.values() for cell in seed_cells]
    columns = {column for cell in every for column in cell.values}
    rates = {column for column in columns if all(is_rate(cell.values[column]) for cell in every if column in cell.values)}
    for label, seed_cells in cells.items():
        metrics = {}
        for column in seed_cells[0].values:
            values_SP = torch.stack([cell.values[column] for cell in seed_cells])
            mean, low, high = rate_ci(values_SP) if column in rates else mean_ci(values_SP)
            interval = "wilson" if column in rates else "t"
            metrics[column] = {"mean": mean, "ci95_low": low, "ci95_high": high, "interval": interval}
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
        "ci": CI_TEXT,
        "baseline": baseline,
        "sources": dict(zip(results, config.sources)),
        "results": results,
    }
