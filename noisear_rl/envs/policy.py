"""The NoiseAR prior as a Gaussian policy over the environment's patch actions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisear_rl.prior.gaussian import sample_gaussian
from noisear_rl.prior.decoding import DecodeState
from noisear_rl.prior.knobs import SamplingKnobs, episode_knobs
from noisear_rl.prior.model import NoiseARPrior


class NoiseARPolicy:
    """Acts on `NoiseEnv` / `NoiseVectorEnv` observations (numpy, or the tensors of
    `NoiseVectorEnv.torch_observation`) with a `NoiseARPrior`.

    It keeps the prior's incremental decoding state between steps, so an episode costs one pass
    over the patches (KV cache), not one pass per step. Drawing the standard normals from the same
    generator in the same order as `prior.sample`, an episode gives the same noise and log-prob as
    `prior.sample(cond, generator=g, temperature=t, return_log_prob=True)`.

    With `knobs`, each episode first draws its own shift gain and temperature from them (the
    draw comes first from the generator, then the patches' normals); `episode_knobs` holds the
    current episodes' draws [N, 2] until the next reset.

    Args:
        prior: The prior; its patch size and latent shape must match the environment's.
        temperature: Multiplies every predicted std (ignored with `knobs`).
        knobs: Draw each episode's (gain, temperature) from this search distribution.
    """

    def __init__(self, prior: NoiseARPrior, temperature: float = 1.0, knobs: SamplingKnobs | None = None) -> None:
        self.prior = prior
        self.temperature = temperature
        self.knobs = knobs
        self.episode_knobs: Tensor | None = None
        self._temperature: float | Tensor = temperature
        self._state: DecodeState | None = None

    @property
    def device(self) -> torch.device:
        """Where the prior runs (`NoiseVectorEnv.torch_observation` puts observations there)."""
        return self.prior.device

    def _as_tensor(self, value: Any) -> Tensor:
        """An observation part (array or tensor) on the prior's device. A read-only array (the
        env's condition) is copied: torch cannot share its memory, and would warn."""
        if not isinstance(value, Tensor):
            array = np.asarray(value)
            value = torch.from_numpy(array if array.flags.writeable else array.copy())
        return value.to(self.prior.device)

    @torch.no_grad()
    def act(self, obs: dict[str, Any], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The next patch and its log-prob, for a single or a batched observation.

        Returns:
            (action [P] or [N, P] float32, log_prob [] or [N]) on the prior's device.
        """
        num_done = int(np.asarray(obs["num_done"]).reshape(-1)[0])
        single = len(obs["cond"].shape) == 2
        if num_done == 0:  # the condition moves to the device once per episode, not at every step
            cond = self._as_tensor(obs["cond"]).float()
            cond = (cond[None] if single else cond).to(self.prior.dtype)
            gain = None
            if self.knobs is not None:
                self.episode_knobs = self.knobs.draw(cond.shape[0], generator)
                gain, self._temperature = episode_knobs(self.episode_knobs)
            self._state = self.prior.start(cond, shift_gain=gain)
        else:
            batch_size = 1 if single else obs["cond"].shape[0]
            if self._state is None or self._state.num_done != num_done - 1 or self._state.batch_size != batch_size:
                raise RuntimeError(
                    "the policy lost track of the episode (it must act on every step from reset); "
                    f"observation has {num_done} patches done"
                )
            # Only the newest patch moves to the device; the earlier ones are in the KV cache.
            newest = self._as_tensor(obs["patches"][..., num_done - 1, :]).float()
            self._state = self.prior.advance(self._state, newest[None] if single else newest)
        assert self._state.mean is not None and self._state.logvar is not None
        action, log_prob = sample_gaussian(self._state.mean, self._state.logvar, generator, self._temperature)
        return (action[0], log_prob[0]) if single else (action, log_prob)
