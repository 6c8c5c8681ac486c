"""Algorithms that optimise the NoiseAR prior: `nll`, `dpo`, `ppo`, `reinforce`.

Pure losses live in `noisear_rl.algorithms.losses`; each algorithm is one file with a config
dataclass and an `Algorithm` subclass registered with `@register_algorithm("name")`; a module
added to this package is found by itself (third-party packages: entry-point group
`noisear_rl.algorithms`). `python -m noisear_rl.train --algo NAME`
runs one.
"""

from noisear_rl.algorithms.base import (
    Algorithm,
    OptimConfig,
    RolloutConfig,
    get_algorithm,
    list_algorithms,
    register_algorithm,
)

__all__ = ["Algorithm", "OptimConfig", "RolloutConfig", "get_algorithm", "list_algorithms", "register_algorithm"]
