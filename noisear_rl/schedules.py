"""Learning-rate schedules as pure functions of the step, shared by every trainer."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, final_fraction: float = 0.0) -> float:
    """Multiplier of the peak learning rate: linear warm-up to 1 over `warmup_steps`, then cosine
    decay to `final_fraction` at `total_steps` (held there afterwards)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return final_fraction + (1 - final_fraction) * cosine
