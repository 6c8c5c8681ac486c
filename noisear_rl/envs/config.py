"""`EnvConfig`: the one list of settings of the noise environments and their world.

`NoiseEnv(**kwargs)`, `NoiseVectorEnv(num_envs, **kwargs)`, `gym.make(env_id, **kwargs)` and
`gym.make_vec(env_id, num_envs, ...)` all take these fields as keyword arguments (or a built
`EnvConfig` as `config=`); `NoiseWorld` takes the config itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from noisear_rl.pipelines.base import DiffusionBackend
from noisear_rl.reward_models import RewardModel

DEFAULT_PROMPT_CACHE_SIZE = 4096
"""Encoded prompts a world keeps (least recently used dropped first): all of an embedded world's
prompts (the Shapes world has 1152, a few MB), and for SDXL (~0.6 MB a prompt in float16, with
its negative branch) about 2.5 GB of CPU memory at most."""


@dataclass(frozen=True)
class EnvConfig:
    """Settings of a noise environment: which frozen pipeline, reward and prompts make its MDP."""

    backend: str | DiffusionBackend = "shapes"
    """A backend name ("shapes", "sdxl", "dreamshaper", "hunyuan-dit", "tiny-sdxl", ...) or an
    already-built `DiffusionBackend`."""
    model: str | None = None
    """Hub id or local folder of the diffusion weights (None: the backend's default)."""
    device: str = "cpu"
    """Where the backend and the reward run."""
    dtype: str | torch.dtype = "float32"
    """"float32", "float16" or "bfloat16" (or a torch dtype) of the backend, and of the reward's
    networks when it is built by name and takes a dtype (ImageReward, the CLIP rewards)."""
    num_inference_steps: int | None = None
    """Denoising steps (None: the backend's default)."""
    guidance_scale: float | None = None
    """Classifier-free guidance (None: the backend's default)."""
    batch_size: int | None = None
    """Largest batch the backend denoises at once (None: its default: 4 for the SDXL-size diffusers
    backends, so a vector env of 16 runs four pipeline calls of 4; 256 for the Shapes world)."""
    reward: str | RewardModel | None = None
    """A reward name or composite spec ("shapes", "imagereward:1.0,pickscore:0.5"), or a
    `RewardModel`. None: an embedded world's own (`WorldInfo.reward`), else "imagereward"."""
    prompts: str | Sequence[str] | None = None
    """A list of prompts or a prompt file; None: the backend's default source."""
    patch_size: int | None = None
    """Side of one action patch (None: an embedded world's own, else 32)."""
    prompt_cache_size: int = DEFAULT_PROMPT_CACHE_SIZE
    """Encoded prompts kept on the CPU, least recently used dropped first (0: none kept)."""
    return_image: bool = False
    """The environments put the image ([3, H, W] in [0, 1]) of a finished episode in its info."""
    render_mode: str | None = None
    """None or "rgb_array": `render()` returns uint8 [H, W, 3] frames at the image's size: the noise
    chosen so far while an episode runs (unchosen patches grey), the denoised image once it ends."""
    action_bound: float | None = None
    """None: the action space is `Box(-inf, inf)`, exact Gaussian semantics (the toolkit's own
    algorithms). A float b: `Box(-b, b)`, and actions beyond ±b are clipped to it (what libraries
    that need finite bounds, Stable-Baselines3 PPO and SAC, take); the noise is then the clipped
    actions, so a Gaussian policy's log-prob of its unclipped action is no longer the log-density
    of the noise. 4.0 clips a standard normal value with probability 6e-5."""

    def __post_init__(self) -> None:
        if self.prompt_cache_size < 0:
            raise ValueError(f"prompt_cache_size must be >= 0, got {self.prompt_cache_size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.action_bound is not None and not 0 < self.action_bound < math.inf:
            raise ValueError(f"action_bound must be a positive finite number or None (unbounded), got {self.action_bound}")

    @classmethod
    def of(cls, config: EnvConfig | None, kwargs: dict[str, Any]) -> EnvConfig:
        """`config` (default: all defaults) with the fields in `kwargs` replaced.

        Raises:
            TypeError: A keyword that is not a field; the message lists the fields.
        """
        unknown = sorted(set(kwargs) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown environment arguments {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        return replace(config if config is not None else cls(), **kwargs)

    @property
    def torch_dtype(self) -> torch.dtype:
        """`dtype` as a torch dtype."""
        return getattr(torch, self.dtype) if isinstance(self.dtype, str) else self.dtype
