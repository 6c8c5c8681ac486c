"""Stable-Baselines3 PPO on the noise MDP of the embedded Shapes world (CPU, offline).

    pip install stable-baselines3
    python examples/sb3_ppo.py --total-timesteps 16384

Each episode is one prompt: 16 actions, each a patch [3 x 8 x 8] of the initial noise, and the
reward of the image the frozen pipeline makes from it (the world's exact verifier). SB3 needs a
finite action space, so the env is made with `action_bound` (a finite `Box(-b, b)`; larger
actions are clipped). PPO's Gaussian policy starts with std 1 around a mean near 0, so its first
actions are already close to the unit-variance noise the pipeline expects. SAC works the same way
(`SAC("MultiInputPolicy", env)`; its tanh squashes actions into the box).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import noisear_rl  # noqa: F401  registers the environments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-timesteps", type=int, default=16384, help="environment steps (16 per episode)")
    parser.add_argument("--n-steps", type=int, default=512, help="steps per PPO rollout")
    parser.add_argument("--batch-size", type=int, default=128, help="PPO minibatch size")
    parser.add_argument("--n-epochs", type=int, default=4, help="PPO epochs per rollout")
    parser.add_argument("--action-bound", type=float, default=4.0, help="actions are clipped to [-b, b]")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps (default: the world's)")
    parser.add_argument("--eval-episodes", type=int, default=16, help="episodes of the trained policy to report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="where to save the trained SB3 model (a .zip)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Trains PPO, then reports the mean reward and success of its deterministic policy."""
    args = parse_args(argv)
    env = gym.make("NoiseAR-Shapes-v1", action_bound=args.action_bound, num_inference_steps=args.num_inference_steps)
    model = PPO("MultiInputPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                seed=args.seed, verbose=1)
    model.learn(total_timesteps=args.total_timesteps)
    if args.save:
        model.save(args.save)

    rewards, successes = [], []
    obs, _ = env.reset(seed=args.seed + 1)
    while len(rewards) < args.eval_episodes:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            rewards.append(reward)
            successes.append(info["success"])
            obs, _ = env.reset()
    result = {"reward": float(np.mean(rewards)), "success": float(np.mean(successes))}
    print(f"PPO after {model.num_timesteps} steps, {args.eval_episodes} episodes: "
          f"reward {result['reward']:.3f}, success {result['success']:.3f}")
    return result


if __name__ == "__main__":
    main()
