"""The noise MDP as a Gymnasium environment: each patch of the initial noise is an action."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from noisear_rl.envs.config import EnvConfig
from noisear_rl.envs.world import NoiseWorld, condition_array
from noisear_rl.pipelines.base import Condition, DiffusionBackend


class NoiseEnv(gym.Env):
    """One prompt per episode; T patch actions; the last one denoises the noise and scores it.

    Observation: {"cond": [L, D] the prompt's condition (encoded once per prompt), "patches":
    [T, C*p*p] the patches chosen so far (zeros after), "num_done": how many}. Action: the next
    patch [C*p*p] of unit-variance noise (`Box(-inf, inf)`; with `action_bound=b`, `Box(-b, b)`, larger
    values clipped: see `EnvConfig.action_bound`). Reward: 0 until the last patch; then the composite
    reward of the image denoised by the frozen pipeline, and the episode terminates. `info` carries the
    prompt, the reward details and components, and with `return_image=True` the image [3, H, W].

    `reset(seed=..., options={"prompt": "..."})` uses the given prompt, else (no "prompt" in the
    options) draws one from the prompt source with the env's seeded generator. A given prompt must
    be a non-empty string, and for an embedded world a prompt of its language (checked here, so a
    bad prompt fails in `reset`, not at the last step).

    Errors leave the env usable: a failed `reset` or a failed last step ends the episode (`step`
    then says to call `reset()`), and a rejected action changes nothing.

    Args:
        config: The settings (default: `EnvConfig()`).
        **kwargs: `EnvConfig` fields replacing those of `config` (what `gym.make` passes).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}

    def __init__(self, config: EnvConfig | None = None, **kwargs: Any) -> None:
        config = EnvConfig.of(config, kwargs)
        if config.render_mode is not None and config.render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {config.render_mode!r}")
        self.world = NoiseWorld(config)
        self.render_mode = config.render_mode
        self.return_image = config.return_image
        self.observation_space = self.world.observation_space()
        self.action_space = self.world.action_space()
        self.prompt: str | None = None
        self.cond: Condition | None = None
        self._cond_obs: np.ndarray | None = None
        self._patches = np.zeros((self.world.num_patches, self.world.patch_dim), np.float32)
        self._num_done = 0
        self._terminated = True
        self._image: torch.Tensor | None = None

    @property
    def backend(self) -> DiffusionBackend:
        return self.world.backend

    def _observation(self) -> dict[str, Any]:
        assert self.cond is not None
        if self._cond_obs is None:  # converted once per reset; every step returns its own copy (Gymnasium's rule)
            self._cond_obs = condition_array(self.cond)[0]
        return {
            "cond": self._cond_obs.copy(),
            "patches": self._patches.copy(),
            "num_done": self._num_done,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        self._terminated = True  # until this reset succeeds, there is no episode to step
        super().reset(seed=seed)
        options = self.world.check_options(options, "prompt")
        if "prompt" in options:
            prompt = self.world.check_prompt(options["prompt"], "options['prompt']")
        else:
            prompt = self.world.sample_prompts(1, self.np_random)[0]
        self.cond = self.world.encode([prompt])
        self._cond_obs = None
        self.prompt = prompt
        self._patches[:] = 0
        self._num_done = 0
        self._terminated = False
        self._image = None
        return self._observation(), {"prompt": prompt}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._terminated:
            raise RuntimeError("the episode has ended (or never started): call reset() first")
        patch = self.world.check_actions(action, batch_size=None)
        self._patches[self._num_done] = patch
        self._num_done += 1
        info: dict[str, Any] = {"prompt": self.prompt}
        if self._num_done < self.world.num_patches:
            return self._observation(), 0.0, False, False, info
        assert self.cond is not None and self.prompt is not None
        self._terminated = True  # the episode ends here, scored or not
        noise = self.world.patches_to_noise(self._patches[None])
        scored = self.world.score(noise, self.cond, [self.prompt], seed=int(self.np_random.integers(2**31)))
        self._image = scored.images[0]
        info.update({k: v[0].item() for k, v in scored.details.items()})
        if self.return_image:
            info["image"] = scored.images[0].cpu().numpy()
        return self._observation(), float(scored.rewards[0]), True, False, info

    @property
    def noise(self) -> torch.Tensor:
        """The noise [C, H, W] assembled from the patches chosen so far (zeros for the rest)."""
        return self.world.patches_to_noise(self._patches[None])[0]

    def render(self) -> np.ndarray | None:
        """A uint8 [H, W, 3] frame at the image's size (with `render_mode="rgb_array"`; None, with a
        warning, without one): the noise chosen so far while the episode runs (mid-grey before the
        first step: see `noisear_rl.envs.world.noise_frames`), the denoised image once it ended."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; create the env with render_mode='rgb_array'")
            return None
        return self.world.frames(self._patches[None], None if self._image is None else self._image[None])[0]
