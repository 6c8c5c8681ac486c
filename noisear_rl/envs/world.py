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

from noisear_rl.checks import check_device
from noisear_rl.envs.prompts import check_prompt, make_prompt_source
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.prior.patching import num_patches, patchify, unpatchify
from noisear_rl.reward_models import RewardModel, check_reward_spec, load_reward

DEFAULT_PATCH_SIZE = 32  # the SDXL family and Hunyuan-DiT, as the release; embedded worlds set their own
ACTION_LIMIT = 1e3
"""Largest magnitude an action value may have: an action is a patch of unit-variance noise, so a
larger value is a bug upstream (a diverged policy), which would only surface as a NaN image."""


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
            `RewardModel`. Default: an embedded world's own (`WorldInfo.reward`), else "imagereward".
        prompts: A list of prompts or a prompt file; None: the backend's default source.
        patch_size: Side of one action patch (None: an embedded world's own, else 32).
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
        check_device(device, "device")
        if isinstance(reward, str):
            check_reward_spec(reward)  # before the backend loads
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.backend = load_backend_once(
            backend, model=model, device=device, dtype=torch_dtype,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        )
        # An embedded world has its own prompts, reward and patch size, however its backend was given.
        world = self.backend.world
        if reward is None:
            reward = world.reward if world else "imagereward"
        self.reward = load_reward(reward, device=device) if isinstance(reward, str) else reward.to(device)
        self.sample_prompts = make_prompt_source(world, prompts)
        self.patch_size = patch_size or (world.patch_size if world else DEFAULT_PATCH_SIZE)
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
    @staticmethod
    def check_options(options: Any, key: str) -> dict[str, Any]:
        """`reset`'s options as a dict (None: {}); raises unless it is a dict whose only key is `key`."""
        if options is None:
            return {}
        if not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict like {{{key!r}: ...}} or None, got {type(options).__name__}")
        unknown = sorted(map(repr, set(options) - {key}))
        if unknown:
            raise ValueError(f"unknown reset options [{', '.join(unknown)}]; valid: [{key!r}]")
        return options

    def check_prompt(self, prompt: Any, where: str) -> str:
        """`prompt` if the backend can take it (`noisear_rl.envs.prompts.check_prompt`: a non-empty
        string of the embedded world's language); else an error naming `where` it was given."""
        try:
            return check_prompt(prompt, self.backend.world)
        except (TypeError, ValueError) as error:
            if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
                raise ValueError(
                    f"{where} is {prompt!r}: give a prompt, or leave it out of the options to draw a random one"
                ) from None
            raise type(error)(f"{where}: {error}") from None

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
        """Validates actions ([P] or [N, P] float, finite, within ±`ACTION_LIMIT`) and returns
        them as float32.

        Raises:
            ValueError: Not an array of that shape, a non-float dtype, NaN or inf, or a value
                beyond the limit. Nothing is changed.
        """
        if isinstance(actions, Tensor):
            actions = actions.detach().cpu()
            actions = (actions.float() if actions.is_floating_point() else actions).numpy()  # numpy has no bfloat16
        try:
            array = np.asarray(actions)
        except (ValueError, TypeError) as error:
            raise ValueError(f"action must be a float array, got {type(actions).__name__} ({error})") from None
        expected = (self.patch_dim,) if batch_size is None else (batch_size, self.patch_dim)
        if array.shape != expected:
            raise ValueError(f"action must have shape {expected}, got {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"action must be a float array, got dtype {array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError("action contains NaN or inf; the episode is unchanged")
        largest = float(np.abs(array).max(initial=0.0))
        if largest > ACTION_LIMIT:
            raise ValueError(
                f"action values must lie within ±{ACTION_LIMIT:g} (a patch of unit-variance noise), got one of "
                f"magnitude {largest:.3g}; the episode is unchanged"
            )
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
        if not torch.isfinite(output.scores).all():
            raise ValueError(f"the reward is NaN or inf for some of the prompts {prompts[:4]}; check the reward model")
        details = {k: v.detach().float().cpu() for k, v in output.details.items() if v.shape[:1] == (len(prompts),)}
        return FinishedEpisodes(
            prompts, cond, noise.cpu(), images.detach().float().cpu(), output.scores.detach().float().cpu(), details
        )
