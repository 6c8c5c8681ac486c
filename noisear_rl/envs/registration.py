"""Registers the toolkit's environments with Gymnasium (1.x has no entry-point plug-ins)."""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = ("NoiseAR-Shapes-v0", "NoiseAR-ShapesScene-v0", "NoiseAR-SDXL-v0", "NoiseAR-DreamShaper-v0", "NoiseAR-HunyuanDiT-v0")


def register_envs() -> None:
    """Registers every environment id once; calling it again is a no-op."""
    backends = {
        "NoiseAR-Shapes-v0": "shapes",
        "NoiseAR-ShapesScene-v0": "shapes-scene",  # the prior reads the scene's object tokens
        "NoiseAR-SDXL-v0": "sdxl",
        "NoiseAR-DreamShaper-v0": "dreamshaper",
        "NoiseAR-HunyuanDiT-v0": "hunyuan-dit",
    }
    for env_id, backend in backends.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="noisear_rl.envs.noise_env:NoiseEnv",
            vector_entry_point="noisear_rl.envs.vector:NoiseVectorEnv",
            kwargs={"backend": backend},
            disable_env_checker=False,
        )
