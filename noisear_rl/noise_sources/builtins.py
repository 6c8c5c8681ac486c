"""Imports every built-in noise-source module so their `@register_noise_source` decorators run."""

import noisear_rl.noise_sources.best_of_n  # noqa: F401
import noisear_rl.noise_sources.erasure_injection  # noqa: F401
import noisear_rl.noise_sources.gaussian  # noqa: F401
import noisear_rl.noise_sources.golden  # noqa: F401
import noisear_rl.noise_sources.noisear  # noqa: F401
