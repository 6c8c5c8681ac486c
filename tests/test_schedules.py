"""The shared learning-rate schedule."""

from __future__ import annotations

import pytest

from noisear_rl.schedules import warmup_cosine


def test_warmup_then_cosine_to_the_final_fraction():
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)  # half-way through the decay
    assert warmup_cosine(20, 4, 20, final_fraction=0.1) == pytest.approx(0.1)
    assert warmup_cosine(50, 4, 20, final_fraction=0.1) == pytest.approx(0.1)
