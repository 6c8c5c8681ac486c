"""Noise sources: one interface (prompts + condition -> initial noise, batched, seeded), so
`python -m noisear_rl.evaluate` compares them on the same prompts, pipeline and seeds.

Built-ins: `gaussian` (N(0, I)), `golden` (a Golden Noise network, NPNet), `erasure-injection`
(training-free semantic erasure and injection), `noisear` (a NoiseAR prior, pretrained or
RL-tuned), `best-of-n` (an oracle that keeps the best of N Gaussian noises by a reward). Load one
from a spec with `load_noise_source("best-of-n:8", backend=...)`; add one with
`@register_noise_source("name")` on a `NoiseSource` subclass (third-party packages: entry-point
group `noisear_rl.noise_sources`).
"""

from noisear_rl.noise_sources.base import (
    NoiseSource,
    SourceSpec,
    list_noise_sources,
    load_noise_source,
    parse_spec,
    register_noise_source,
    source_label,
)

__all__ = [
    "NoiseSource",
    "SourceSpec",
    "list_noise_sources",
    "load_noise_source",
    "parse_spec",
    "register_noise_source",
    "source_label",
]
