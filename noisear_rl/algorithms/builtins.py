"""Imports the modules whose decorators register the built-in algorithms."""

import noisear_rl.algorithms.dpo  # noqa: F401
import noisear_rl.algorithms.nll  # noqa: F401
import noisear_rl.algorithms.ppo  # noqa: F401
import noisear_rl.algorithms.reinforce  # noqa: F401
