"""What the single and the vector environment share: backend, reward, prompts, spaces, scoring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.prior.patching import num_patches, patchify, unpatchify
from noisear_rl.reward_models import RewardModel, load_reward

DEFAULT_PATCH_SIZE = {"shapes": 8}  # the SDXL family and Hunyuan-DiT: 32, as the release


@lru_cache(maxsize=4)
def _load_backend_once(name: str, frozen_kwargs: tuple[tuple[str, Any], ...]) -> DiffusionBackend:
    from noisear_rl.pipelines.factory import load_backend

    return load_backend(name, **dict(frozen_kwargs))


def load_backend_once(name: str | DiffusionBackend, **kwargs: Any) -> DiffusionBackend:
    """Loads a backend once per process for the same arguments (environments are re-created by
    `gym.make`, `check_env` and vector envs; a diffusion model must not load each time)."""
    if isinstance(name, DiffusionBackend):
        return name
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return _load_backend_once(name, tuple(sorted(kwargs.items())))
    except TypeError:  # unhashable arguments: load without caching
        from noisear_rl.pipelines.factory import load_backend

        return load_backend(name, **kwargs)


@dataclass
class FinishedEpisodes:
    """The end of a batch of episodes (tensors on CPU, leading dim N).

    Attributes:
        prompts: The N prompts.
        cond: Their condition.
        noise: [N, C, H, W] the chosen initial noises.
        images: [N, 3, H, W] the denoised images in [0, 1].
        rewards: [N] the (composite) rewards.
        details: The reward's per-sample details and components, each [N].
    """

    prompts: list[str]
    cond: Condition
    noise: Tensor
    images: Tensor
    rewards: Tensor
    details: dict[str, Tensor]


class NoiseWorld:
    """A frozen diffusion backend, a reward and a prompt source, seen as the noise MDP.

    Args:
        backend: A backend name ("shapes", "sdxl", "dreamshaper", "hunyuan-dit", "tiny-sdxl", ...)
            or an already-built `DiffusionBackend`.
        model: Hub id or local folder of the diffusion weights (None: the backend's default).
        device: Where the backend runs.
        dtype: "float32", "float16" or "bfloat16" (or a torch dtype).
        num_inference_steps: Denoising steps (None: the backend's default).
        guidance_scale: Classifier-free guidance (None: the backend's default).
        reward: A reward name or composite spec ("shapes", "imagereward:1.0,pickscore:0.5"), or a
            `RewardModel`. Default: "shapes" for the Shapes world, else "imagereward".
        prompts: A list of prompts or a prompt file; None: the backend's default source.
        patch_size: Side of one action patch (None: 8 for Shapes, 32 otherwise).
    """

    def __init__(
        self,
        backend: str | DiffusionBackend = "shapes",
        model: str | None = None,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        reward: str | RewardModel | None = None,
        prompts: str | Sequence[str] | None = None,
        patch_size: int | None = None,
    ) -> None:
        from noisear_rl.envs.prompts import make_prompt_source

        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.backend = load_backend_once(
            backend, model=model, device=device, dtype=torch_dtype,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        )
        # An embedded world has its own prompts, reward and patch size, however its backend was given.
        name = self.backend.world or (backend if isinstance(backend, str) else type(self.backend).__name__)
        if reward is None:
            reward = "shapes" if name == "shapes" else "imagereward"
        self.reward = load_reward(reward, device=device) if isinstance(reward, str) else reward.to(device)
        self.sample_prompts = make_prompt_source(name, prompts)
        self.patch_size = patch_size or DEFAULT_PATCH_SIZE.get(name, 32)
        channels, height, width = self.backend.latent_shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide the latent {height}x{width}")
        self.num_patches = num_patches(height, width, self.patch_size)
        self.patch_dim = channels * self.patch_size**2
        self._cond_cache: dict[str, Condition] = {}
        self.cond_length = self.encode(self.sample_prompts(1, np.random.default_rng(0))).embeds.shape[1]

    # ------------------------------------------------------------------------------------ spaces
    def observation_space(self) -> spaces.Dict:
        """Condition [L, D], patches chosen so far [T, C*p*p] (zeros after `num_done`), `num_done`."""
        return spaces.Dict(
            {
                "cond": spaces.Box(-np.inf, np.inf, (self.cond_length, self.backend.cond_dim), np.float32),
                "patches": spaces.Box(-np.inf, np.inf, (self.num_patches, self.patch_dim), np.float32),
                "num_done": spaces.Discrete(self.num_patches + 1),
            }
        )

    def action_space(self) -> spaces.Box:
        """One patch of unit-variance noise, flattened channel-major (c, i, j)."""
        return spaces.Box(-np.inf, np.inf, (self.patch_dim,), np.float32)

    # ------------------------------------------------------------------------------------ prompts
    def encode(self, prompts: list[str]) -> Condition:
        """Encodes prompts, each once per world (cached on CPU)."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cond_cache))
        if missing:
            encoded = self.backend.encode(missing).to("cpu")
            for i, prompt in enumerate(missing):
                self._cond_cache[prompt] = encoded[i]
        return Condition.cat([self._cond_cache[p] for p in prompts])

    # ------------------------------------------------------------------------------------ actions
    def check_actions(self, actions: Any, batch_size: int | None) -> np.ndarray:
        """Validates actions ([P] or [N, P] float, finite) and returns them as float32.

        Raises:
            ValueError: Wrong shape, a non-float dtype, NaN or inf. Nothing is changed.
        """
        if isinstance(actions, Tensor):
            actions = actions.detach().cpu().numpy()
        array = np.asarray(actions)
        expected = (self.patch_dim,) if batch_size is None else (batch_size, self.patch_dim)
        if array.shape != expected:
            raise ValueError(f"action must have shape {expected}, got {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"action must be a float array, got dtype {array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError("action contains NaN or inf; the episode is unchanged")
        return array.astype(np.float32, copy=False)

    def patches_to_noise(self, patches_NTP: np.ndarray | Tensor) -> Tensor:
        """[N, T, C*p*p] -> unit-variance noise [N, C, H, W] (float32 tensor)."""
        return unpatchify(torch.as_tensor(patches_NTP, dtype=torch.float32), self.patch_size, *self.backend.latent_shape)

    def noise_to_patches(self, noise_NCHW: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, T, C*p*p] in action order."""
        return patchify(noise_NCHW, self.patch_size)

    # ----------------------------------------------------------------------------------- scoring
    def score(self, noise: Tensor, cond: Condition, prompts: list[str], seed: int) -> FinishedEpisodes:
        """Denoises all noises in one batched backend call and scores the images in one reward call."""
        device = self.backend.device
        generator = torch.Generator(device=device).manual_seed(seed)
        images = self.backend.generate(noise.to(device), cond.to(device), generator=generator)
        output = self.reward.evaluate(images, prompts)
        details = {k: v.detach().float().cpu() for k, v in output.details.items() if v.shape[:1] == (len(prompts),)}
        return FinishedEpisodes(
            prompts, cond, noise.cpu(), images.detach().float().cpu(), output.scores.detach().float().cpu(), details
        )
