"""Stable-Baselines3 trains on the noise environments unchanged, given a finite `action_bound`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import noisear_rl  # noqa: F401  registers the environments

sb3 = pytest.importorskip(
    "stable_baselines3", reason="stable-baselines3 is not installed (it is in the dev extras: pip install -e '.[dev]')"
)

SHAPES = dict(num_inference_steps=2, action_bound=4.0)  # the shipped Shapes world, 2 denoising steps


def test_ppo_trains_a_few_hundred_steps() -> None:
    env = gym.make("NoiseAR-Shapes-v1", **SHAPES)
    model = sb3.PPO("MultiInputPolicy", env, n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256  # 16 episodes of 16 patches
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == (192,) and np.abs(action).max() <= 4.0


def test_sac_constructs_and_steps() -> None:
    env = gym.make("NoiseAR-Shapes-v1", **SHAPES)
    model = sb3.SAC("MultiInputPolicy", env, buffer_size=64, learning_starts=16, batch_size=8, seed=0, device="cpu")
    model.learn(total_timesteps=24)
    assert model.num_timesteps == 24 and model.replay_buffer.size() == 24


def test_the_unbounded_env_is_what_sb3_refuses() -> None:
    with pytest.raises(AssertionError, match="finite"):
        sb3.PPO("MultiInputPolicy", gym.make("NoiseAR-Shapes-v1", num_inference_steps=2), device="cpu")
