"""Seeds derived from tuples of integers, so that every stream of randomness is reproducible."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 32-bit seed derived from non-negative integers (e.g. run seed, iteration, process, stream)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])
