"""Gymnasium environments where each patch of the initial noise is an action.

`NoiseEnv` (one episode) and `NoiseVectorEnv` (N episodes in lockstep, one batched pipeline call)
are registered on `import noisear_rl` under the ids of `registration.ENV_BACKENDS`; both take the
fields of `EnvConfig` as keyword arguments, and share a `NoiseWorld`. `NoiseARPolicy` acts on
their observations with a prior; `collect_rollouts` runs episodes into a `RolloutBatch`.
"""

from noisear_rl.envs.config import EnvConfig
from noisear_rl.envs.noise_env import NoiseEnv
from noisear_rl.envs.policy import NoiseARPolicy
from noisear_rl.envs.rollout import RolloutBatch, collect_rollouts
from noisear_rl.envs.vector import NoiseVectorEnv
from noisear_rl.envs.world import FinishedEpisodes, NoiseWorld

__all__ = [
    "EnvConfig",
    "FinishedEpisodes",
    "NoiseARPolicy",
    "NoiseEnv",
    "NoiseVectorEnv",
    "NoiseWorld",
    "RolloutBatch",
    "collect_rollouts",
]
