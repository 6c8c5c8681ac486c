"""What the single and the vector environment share: backend, reward, prompts, spaces, scoring."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from noisear_rl.checks import check_device
from noisear_rl.envs.config import EnvConfig
from noisear_rl.envs.prompts import check_prompt, make_prompt_source
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.prior.patching import num_patches, patchify, unpatchify
from noisear_rl.reward_models import check_reward_spec, load_reward_in

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


def condition_array(cond: Condition) -> np.ndarray:
    """`cond.embeds` as a read-only float32 array [N, L, D]: the observations' "cond", made once
    per reset and handed out at every step."""
    array = cond.embeds.float().numpy().copy()
    array.flags.writeable = False
    return array


def uint8_images(images: Tensor) -> np.ndarray:
    """Images [N, 3, H, W] in [0, 1], on any device -> uint8 [N, H, W, 3] on the CPU (`render`)."""
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def noise_frames(noise_NCHW: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Noise [N, C, H, W] as uint8 [N, *size, 3] frames (`render` while an episode runs): its first
    three channels (a missing one black), 0 mid-grey and ±3 std black or white, nearest-upscaled."""
    rgb = noise_NCHW[:, :3].float().cpu()
    rgb = torch.nn.functional.pad(rgb, (0, 0, 0, 0, 0, 3 - rgb.shape[1]), value=-3.0)
    rgb = torch.nn.functional.interpolate((0.5 + rgb / 6).clamp(0, 1), size=size, mode="nearest")
    return uint8_images(rgb)


@dataclass
class FinishedEpisodes:
    """The end of a batch of episodes (leading dim N; tensors on the CPU but the images).

    Attributes:
        prompts: The N prompts.
        cond: Their condition.
        noise: [N, C, H, W] the chosen initial noises.
        images: [N, 3, H, W] the denoised images in [0, 1], float32, where the backend made them
            (they move to the CPU only when an env hands them out).
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
        config: The settings (`EnvConfig`; `return_image` and `render_mode` are the environments').
    """

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        check_device(config.device, "device")
        reward = config.reward
        if isinstance(reward, str):
            check_reward_spec(reward)  # before the backend loads
        self.backend = load_backend_once(
            config.backend, model=config.model, device=config.device, dtype=config.torch_dtype,
            num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
            batch_size=config.batch_size,
        )
        # An embedded world has its own prompts, reward and patch size, however its backend was given.
        world = self.backend.world
        if reward is None:
            reward = world.reward if world else "imagereward"
        self.reward = (load_reward_in(reward, config.dtype, device=config.device) if isinstance(reward, str)
                       else reward.to(config.device))
        self.sample_prompts = make_prompt_source(world, config.prompts)
        self.patch_size = config.patch_size or (world.patch_size if world else DEFAULT_PATCH_SIZE)
        channels, height, width = self.backend.latent_shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide the latent {height}x{width}")
        self.num_patches = num_patches(height, width, self.patch_size)
        self.patch_dim = channels * self.patch_size**2
        self._cond_cache: OrderedDict[str, Condition] = OrderedDict()
        self.image_size: tuple[int, int] = (  # the frames' size: the images', once one is made
            int(getattr(self.backend, "height", height)), int(getattr(self.backend, "width", width)))
        self.cond_length = self.encode(self.sample_prompts(1, np.random.default_rng(0))).embeds.shape[1]

    # ------------------------------------------------------------------------------------ spaces
    def observation_space(self) -> spaces.Dict:
        """Condition [L, D], patches chosen so far [T, C*p*p] (zeros after `num_done`), `num_done`."""
        return spaces.Dict(
            {
                "cond": spaces.Box(-np.inf, np.inf, (self.cond_length, self.backend.cond_dim), np.float32),
                "patches": spaces.Box(-self.action_limit, self.action_limit, (self.num_patches, self.patch_dim), np.float32),
                "num_done": spaces.Discrete(self.num_patches + 1),
            }
        )

    def action_space(self) -> spaces.Box:
        """One patch of unit-variance noise, flattened channel-major (c, i, j): `Box(-inf, inf)`, or
        `Box(-b, b)` with `config.action_bound` b."""
        bound = np.inf if self.config.action_bound is None else self.config.action_bound
        return spaces.Box(-bound, bound, (self.patch_dim,), np.float32)

    @property
    def action_limit(self) -> float:
        """The largest magnitude a chosen noise value can have: `config.action_bound`, else `ACTION_LIMIT`."""
        return float(ACTION_LIMIT if self.config.action_bound is None else self.config.action_bound)

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
        """Encodes prompts (on the CPU), each once while it stays among the
        `config.prompt_cache_size` most recently used."""
        found: dict[str, Condition] = {}
        for prompt in dict.fromkeys(prompts):
            if prompt in self._cond_cache:
                self._cond_cache.move_to_end(prompt)
                found[prompt] = self._cond_cache[prompt]
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if missing:
            encoded = self.backend.encode(missing).to("cpu")
            for i, prompt in enumerate(missing):
                found[prompt] = encoded[i]
                if self.config.prompt_cache_size:  # cat copies: a dropped prompt frees its own memory
                    self._cond_cache[prompt] = Condition.cat([encoded[i]])
            while len(self._cond_cache) > self.config.prompt_cache_size:
                self._cond_cache.popitem(last=False)
        return Condition.cat([found[p] for p in prompts])

    # ------------------------------------------------------------------------------------ actions
    def check_actions(self, actions: Any, batch_size: int | None) -> np.ndarray:
        """Validates actions ([P] or [N, P] float, finite, within ±`ACTION_LIMIT`) and returns
        them as float32, clipped to ±`config.action_bound` when it is set.

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
        array = array.astype(np.float32, copy=False)
        bound = self.config.action_bound
        return array if bound is None else np.clip(array, -bound, bound)

    def patches_to_noise(self, patches_NTP: np.ndarray | Tensor) -> Tensor:
        """[N, T, C*p*p] -> unit-variance noise [N, C, H, W] (float32 tensor)."""
        return unpatchify(torch.as_tensor(patches_NTP, dtype=torch.float32), self.patch_size, *self.backend.latent_shape)

    def frames(self, patches_NTP: np.ndarray, images: Tensor | None) -> np.ndarray:
        """What `render` shows, uint8 [N, H, W, 3] at the image size: the `images` of finished
        episodes, else the noise assembled from the patches chosen so far (see `noise_frames`)."""
        if images is not None:
            return uint8_images(images)
        return noise_frames(self.patches_to_noise(patches_NTP), self.image_size)

    def noise_to_patches(self, noise_NCHW: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, T, C*p*p] in action order."""
        return patchify(noise_NCHW, self.patch_size)

    # ----------------------------------------------------------------------------------- scoring
    def score(self, noise: Tensor, cond: Condition, prompts: list[str], seed: int) -> FinishedEpisodes:
        """Denoises all noises in one batched backend call and scores the images in one reward call
        (the images stay on the backend's device; rewards and details come to the CPU)."""
        device = self.backend.device
        generator = torch.Generator(device=device).manual_seed(seed)
        images = self.backend.generate(noise.to(device), cond.to(device), generator=generator)
        self.image_size = (int(images.shape[-2]), int(images.shape[-1]))
        output = self.reward.evaluate(images, prompts)
        if not torch.isfinite(output.scores).all():
            raise ValueError(f"the reward is NaN or inf for some of the prompts {prompts[:4]}; check the reward model")
        details = {k: v.detach().float().cpu() for k, v in output.details.items() if v.shape[:1] == (len(prompts),)}
        rewards = output.scores.detach().float().cpu()
        return FinishedEpisodes(prompts, cond, noise.cpu(), images.detach().float(), rewards, details)
