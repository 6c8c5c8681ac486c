"""A natively batched vector version of `NoiseEnv`: N episodes in lockstep, one pipeline call."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from noisear_rl.envs.config import EnvConfig
from noisear_rl.envs.world import NoiseWorld, condition_array
from noisear_rl.pipelines.base import Condition, DiffusionBackend


class NoiseVectorEnv(VectorEnv):
    """N noise episodes stepped in lockstep (every episode has T steps).

    All N noises are denoised in one batched pipeline call and scored in one reward call when
    the last patch arrives. Autoreset follows Gymnasium's default NEXT_STEP mode: the step after
    the episodes end resets them (its actions are ignored, its rewards are 0).

    `reset(seed=..., options={"prompts": [...N prompts...]})` uses the given prompts (each checked
    as `NoiseEnv.reset` checks its prompt), else (no "prompts" in the options) draws N from the
    prompt source. A failed `reset` or a failed last step ends the episodes: `step` then says to
    call `reset()`; a rejected action changes nothing.

    Every info holds "prompt", the N prompts of the episodes running (a tuple of str; also
    `self.prompts`, their condition `self.cond`). The last step's infos also hold what the episodes
    produced, as arrays with leading dim N: the reward details and components, "noise" ([N, C, H, W]
    the initial noises), and with `return_image=True` "image" ([N, 3, H, W] in [0, 1]).
    `gymnasium.wrappers.vector.NumpyToTorch` converts the arrays and keeps the prompts as they are
    (the env teaches Gymnasium's converter to leave a str alone: it garbles one otherwise).
    Observations are numpy arrays (Gymnasium wrappers); a torch policy reads them as tensors on its
    device with `torch_observation(device)` instead. `render()` returns one frame per episode, as
    `NoiseEnv.render` does.

    Args:
        num_envs: N, the episodes run in lockstep.
        config: The settings (default: `EnvConfig()`).
        **kwargs: `EnvConfig` fields replacing those of `config` (what `gym.make_vec` passes).
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, config: EnvConfig | None = None, **kwargs: Any) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        config = EnvConfig.of(config, kwargs)
        _keep_strings_in_array_conversion()
        self.world = NoiseWorld(config)
        self.num_envs = num_envs
        self.render_mode = config.render_mode
        self.return_image = config.return_image
        self.single_observation_space = self.world.observation_space()
        self.single_action_space = self.world.action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.prompts: list[str] = []
        self.cond: Condition | None = None
        self._cond_obs: np.ndarray | None = None
        self._cond_tensor: Tensor | None = None
        self._patches = np.zeros((num_envs, self.world.num_patches, self.world.patch_dim), np.float32)
        self._num_done = 0
        self._started = False
        self._autoreset = False
        self._images: Tensor | None = None

    @property
    def backend(self) -> DiffusionBackend:
        return self.world.backend

    def _observation(self) -> dict[str, np.ndarray]:
        assert self.cond is not None
        if self._cond_obs is None:  # converted once per reset, handed out read-only at every step
            self._cond_obs = condition_array(self.cond)
        return {
            "cond": self._cond_obs,
            "patches": self._patches.copy(),
            "num_done": np.full(self.num_envs, self._num_done, dtype=np.int64),
        }

    def torch_observation(self, device: torch.device | str) -> dict[str, Any]:
        """The current observation for a torch policy, without numpy round trips.

        Returns:
            {"cond": [N, L, D] float32 on `device` (moved once per reset), "patches": [N, T, C*p*p]
            a CPU tensor viewing the env's buffer (valid until the next step; a policy moves only
            the newest patch), "num_done": int}.
        """
        assert self.cond is not None, "call reset() first"
        device = torch.device(device)
        if self._cond_tensor is None or self._cond_tensor.device != device:
            self._cond_tensor = self.cond.embeds.to(device, torch.float32)
        return {"cond": self._cond_tensor, "patches": torch.from_numpy(self._patches), "num_done": self._num_done}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._started = False  # until this reset succeeds, there are no episodes to step
        super().reset(seed=seed)
        options = self.world.check_options(options, "prompts")
        if "prompts" in options:
            given = options["prompts"]
            if not isinstance(given, (list, tuple)) or len(given) != self.num_envs:
                raise ValueError(
                    f"options['prompts'] must be a list of {self.num_envs} prompts, got {type(given).__name__} "
                    f"{given!r:.80}; leave 'prompts' out of the options to draw random prompts"
                )
            prompts = [self.world.check_prompt(p, f"options['prompts'][{i}]") for i, p in enumerate(given)]
        else:
            prompts = self.world.sample_prompts(self.num_envs, self.np_random)
        self.cond = self.world.encode(prompts)
        self._cond_obs = self._cond_tensor = None
        self.prompts = prompts
        self._patches[:] = 0
        self._num_done = 0
        self._started = True
        self._autoreset = False
        self._images = None
        return self._observation(), {"prompt": tuple(prompts)}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        zeros = np.zeros(self.num_envs, dtype=np.float64)
        false = np.zeros(self.num_envs, dtype=bool)
        if self._autoreset:
            obs, info = self.reset()
            return obs, zeros, false, false.copy(), info
        patches = self.world.check_actions(actions, batch_size=self.num_envs)
        self._patches[:, self._num_done] = patches
        self._num_done += 1
        infos: dict[str, Any] = {"prompt": tuple(self.prompts)}
        if self._num_done < self.world.num_patches:
            return self._observation(), zeros, false, false.copy(), infos
        assert self.cond is not None
        self._started = False  # the episodes end here: if scoring fails, there is nothing left to step
        noise = self.world.patches_to_noise(self._patches.copy())  # never a view of the buffer reset zeroes
        scored = self.world.score(noise, self.cond, self.prompts, seed=int(self.np_random.integers(2**31)))
        self._images = scored.images
        self._started = True
        self._autoreset = True
        infos.update({key: value.numpy() for key, value in scored.details.items()})
        infos["noise"] = scored.noise.numpy()
        if self.return_image:
            infos["image"] = scored.images.cpu().numpy()
        done = np.ones(self.num_envs, dtype=bool)
        return self._observation(), scored.rewards.double().numpy(), done, false.copy(), infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One uint8 [H, W, 3] frame per episode (with `render_mode="rgb_array"`; None, with a
        warning, without one): the noises chosen so far, or the images once the episodes ended."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; create the env with render_mode='rgb_array'")
            return None
        return tuple(self.world.frames(self._patches, self._images))


def _keep_strings_in_array_conversion() -> None:
    """Registers str with Gymnasium's array converter (what `NumpyToTorch` applies to infos) as
    left unchanged: it treats a str as an iterable of str and returns garbage for the prompts."""
    try:
        from gymnasium.wrappers.array_conversion import array_conversion as convert
    except ImportError:  # gymnasium 1.0
        from gymnasium.wrappers.numpy_to_torch import numpy_to_torch as convert
    if str not in convert.registry:
        convert.register(str, lambda value, *args, **kwargs: value)
