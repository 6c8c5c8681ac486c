"""REINFORCE on the noise MDP in one file, CleanRL style: the embedded Shapes world, CPU, offline.

    python examples/cleanrl_reinforce.py --iterations 50

The policy is the shipped NLL-pretrained NoiseAR prior. Each iteration draws prompts, runs
`--rollouts-per-prompt` episodes of each in one vector env (every patch an action; the last step
denoises all noises in one pipeline call and scores them with the world's verifier), and takes one
policy-gradient step: advantage = reward minus the mean reward of the same prompt, loss =
-mean(advantage * log p(noise | prompt)), the exact log-density of the whole noise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch

import noisear_rl
from noisear_rl import NoiseARPrior
from noisear_rl.envs import NoiseARPolicy
from noisear_rl.worlds.shapes import training_prompts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=50, help="policy-gradient steps")
    parser.add_argument("--prompts-per-iteration", type=int, default=8)
    parser.add_argument("--rollouts-per-prompt", type=int, default=4, help="episodes per prompt (the baseline's group)")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps (default: the world's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="folder to save the trained prior in (NoiseARPrior.save_pretrained)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[float]:
    """Trains the prior; returns the mean training reward of every iteration."""
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)  # the policy's standard normals

    # Environment: N = prompts x rollouts episodes in lockstep.
    num_envs = args.prompts_per_iteration * args.rollouts_per_prompt
    envs = gym.make_vec("NoiseAR-Shapes-v1", num_envs=num_envs, vectorization_mode="vector_entry_point",
                        num_inference_steps=args.num_inference_steps)
    prompt_pool = training_prompts()

    # Agent: the shipped prior, acting patch by patch (KV-cached) through NoiseARPolicy.
    prior = NoiseARPrior.from_pretrained(noisear_rl.shipped_prior("shapes")).eval()
    temperature = prior.sampling_temperature()
    policy = NoiseARPolicy(prior, temperature)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=args.learning_rate)

    mean_rewards = []
    for iteration in range(args.iterations):
        start = time.perf_counter()
        # Rollout: one episode per (prompt, rollout); the last step returns the rewards and the noises.
        prompts = rng.choice(prompt_pool, args.prompts_per_iteration, replace=False).tolist()
        obs, _ = envs.reset(seed=args.seed if iteration == 0 else None,
                            options={"prompts": [p for p in prompts for _ in range(args.rollouts_per_prompt)]})
        terminated = np.zeros(num_envs, dtype=bool)
        while not terminated.all():
            action, _ = policy.act(obs, generator)
            obs, rewards, terminated, _, infos = envs.step(action.numpy())

        # Advantages: the reward minus the mean of the same prompt's rollouts, scaled by their std.
        rewards_PR = torch.as_tensor(rewards, dtype=torch.float32).view(args.prompts_per_iteration, -1)
        advantages = rewards_PR - rewards_PR.mean(dim=1, keepdim=True)
        advantages = (advantages / (advantages.std() + 1e-6)).flatten()

        # Policy gradient through the exact log-density of each whole noise.
        noise = torch.as_tensor(infos["noise"])
        cond = torch.tensor(obs["cond"])  # the finished episodes' condition [N, L, D]
        log_prob = prior.log_prob(noise, cond, temperature=temperature)
        loss = -(advantages * log_prob).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), args.max_grad_norm)
        optimizer.step()

        mean_rewards.append(float(rewards.mean()))
        print(f"iteration {iteration + 1}/{args.iterations}: reward {mean_rewards[-1]:.3f}, "
              f"success {float(infos['success'].mean()):.3f}, loss {loss.item():.4g}, {time.perf_counter() - start:.1f}s")

    if args.save:
        prior.save_pretrained(args.save)
    envs.close()
    return mean_rewards


if __name__ == "__main__":
    main()
