"""Registers the toolkit's environments with Gymnasium (1.x has no entry-point plug-ins)."""

from __future__ import annotations

import gymnasium as gym

ENV_BACKENDS: dict[str, str] = {
    "NoiseAR-Shapes-v1": "shapes",  # the embedded world (v1: rebuilt so guidance and golden noise help)
    "NoiseAR-SDXL-v0": "sdxl",
    "NoiseAR-DreamShaper-v0": "dreamshaper",
    "NoiseAR-HunyuanDiT-v0": "hunyuan-dit",
}
"""Every environment id and the backend it runs: the one list of the toolkit's environments."""
ENV_IDS = tuple(ENV_BACKENDS)


def register_envs() -> None:
    """Registers every environment id once; calling it again is a no-op."""
    for env_id, backend in ENV_BACKENDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="noisear_rl.envs.noise_env:NoiseEnv",
            vector_entry_point="noisear_rl.envs.vector:NoiseVectorEnv",
            kwargs={"backend": backend},
            # Gymnasium's passive checker breaks an env whose first reset raised: its next first
            # step fails inside the checker (TypeError). The tests run `check_env` instead.
            disable_env_checker=True,
        )


def env_backend(env_id: str) -> str | None:
    """The backend name a registered environment id runs (None when its spec names none).

    Raises:
        ValueError: `env_id` is not registered; the message lists the toolkit's ids.
    """
    if env_id not in gym.registry:
        raise ValueError(
            f"unknown environment {env_id!r}; the toolkit's environments are {', '.join(ENV_IDS)}; for one of your "
            "own, gym.register it in a module imported first (command line: --import MODULE_OR_FILE)"
        )
    backend = gym.spec(env_id).kwargs.get("backend")
    return backend if isinstance(backend, str) else None
