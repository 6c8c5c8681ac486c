"""Decoding a NoiseAR prior patch by patch: the KV-cached state, `start`/`advance`, and `sample`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from noisear_rl.prior.gaussian import sample_gaussian

if TYPE_CHECKING:
    from noisear_rl.prior.model import NoiseARPrior


@dataclass(frozen=True)
class DecodeState:
    """Everything incremental decoding carries from one patch to the next.

    Attributes:
        cross_kv: Per layer, keys/values of the condition (computed once per episode).
        cross_mask: [B, 1, 1, L] bool mask of valid condition tokens, or None.
        self_kv: Per layer, self-attention keys/values of the tokens seen so far.
        num_done: Patches appended so far.
        mean: [B, patch_dim] mean of the next patch (None once every patch is appended).
        logvar: [B, patch_dim] log-variance of the next patch (None once done).
        mean_shift: [B, T, patch_dim] the prompt shift of every patch's mean (computed once per
            episode), or None for a prior without one.
    """

    cross_kv: tuple[tuple[Tensor, Tensor], ...]
    cross_mask: Tensor | None
    self_kv: tuple[tuple[Tensor, Tensor], ...]
    num_done: int
    mean: Tensor | None
    logvar: Tensor | None
    mean_shift: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.cross_kv[0][0].shape[0]


class IncrementalDecoding:
    """The decoding half of `NoiseARPrior`, a base class of it: it uses the prior's condition
    encoding (`_check_cond`, `_encode_cond`), its token and layer passes (`_start_tokens`,
    `_tokens`, `_run`), its shapes and its default temperature."""

    def start(self: NoiseARPrior, cond: Tensor, cond_mask: Tensor | None = None, shift_gain: Tensor | None = None) -> DecodeState:
        """Begins decoding: encodes the condition once and predicts the first patch's Gaussian.
        `shift_gain` [B]: each row's prompt-shift gain instead of the prior's own (a prior with a
        prompt shift only; an episode's drawn knobs, `SamplingKnobs`)."""
        self._check_cond(cond, cond_mask)
        if shift_gain is not None and (self.prompt_shift is None or shift_gain.shape != (cond.shape[0],)):
            raise ValueError(f"shift_gain must be [{cond.shape[0]}] for a prior with a prompt shift")
        cross_kv, mask, mean_shift = self._encode_cond(cond, cond_mask, shift_gain)
        mean, logvar, self_kv = self._run(self._start_tokens(cond.shape[0]), cross_kv, mask, None)
        return DecodeState(cross_kv, mask, self_kv, 0, shifted_mean(mean[:, -1], mean_shift, 0), logvar[:, -1], mean_shift)

    def advance(self: NoiseARPrior, state: DecodeState, patch_BD: Tensor) -> DecodeState:
        """Appends the chosen patch [B, C*p*p]; returns the state holding the next patch's Gaussian.

        After the last patch the returned state has `mean = logvar = None`.
        """
        if state.mean is None:
            raise ValueError(f"all {self.num_patches} patches are already decoded")
        if patch_BD.shape != (state.batch_size, self.patch_dim):
            raise ValueError(f"patch must be [{state.batch_size}, {self.patch_dim}], got {tuple(patch_BD.shape)}")
        if not torch.isfinite(patch_BD).all():
            raise ValueError("patch contains NaN or inf")
        num_done = state.num_done + 1
        if num_done == self.num_patches:
            return replace(state, num_done=num_done, mean=None, logvar=None)
        x = self._tokens(patch_BD[:, None, :], num_done)
        mean, logvar, self_kv = self._run(x, state.cross_kv, state.cross_mask, state.self_kv)
        mean = shifted_mean(mean[:, -1], state.mean_shift, num_done)
        return DecodeState(state.cross_kv, state.cross_mask, self_kv, num_done, mean, logvar[:, -1], state.mean_shift)

    def _next_params_recomputed(self: NoiseARPrior, patches_BtD: Tensor, cond: Tensor, cond_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """The next patch's Gaussian from a full causal pass over the prefix (no cache)."""
        x = torch.cat([self._start_tokens(cond.shape[0]), self._tokens(patches_BtD, 1)], dim=1)
        cross_kv, mask, mean_shift = self._encode_cond(cond, cond_mask)
        mean, logvar, _ = self._run(x, cross_kv, mask, None)
        return shifted_mean(mean[:, -1], mean_shift, patches_BtD.shape[1]), logvar[:, -1]

    @torch.no_grad()
    def sample(
        self: NoiseARPrior,
        cond: Tensor,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        use_cache: bool = True,
        return_log_prob: bool = False,
        cond_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Samples noise [B, C, H, W] patch by patch (float32, on cond's device).

        Args:
            cond: [B, L, cond_dim] condition.
            generator: Source of the standard normals (one [B, C*p*p] draw per patch, in order).
            temperature: Multiplies every predicted std (None: `config.temperature`, which is 0.5
                for a release checkpoint, as the release samples).
            use_cache: Reuse keys/values (cost linear in T); False recomputes the prefix every step.
            return_log_prob: Also return the [B] log-density of the sample under the sampling distribution.
            cond_mask: Optional [B, L] mask of valid condition tokens.
        """
        self._check_cond(cond, cond_mask)
        temperature = self.sampling_temperature(temperature)
        patches, log_probs = [], []
        state = self.start(cond, cond_mask) if use_cache else None
        mean, logvar = (state.mean, state.logvar) if state else self._next_params_recomputed(
            cond.new_zeros(cond.shape[0], 0, self.patch_dim), cond, cond_mask
        )
        for t in range(self.num_patches):
            patch, logp = sample_gaussian(mean, logvar, generator, temperature)
            patches.append(patch)
            log_probs.append(logp)
            if t + 1 == self.num_patches:
                break
            if state is not None:
                state = self.advance(state, patch)
                mean, logvar = state.mean, state.logvar
            else:
                mean, logvar = self._next_params_recomputed(torch.stack(patches, 1), cond, cond_mask)
        noise = self.unpatchify(torch.stack(patches, dim=1))
        return (noise, torch.stack(log_probs, 1).sum(1)) if return_log_prob else noise


def shifted_mean(mean_BD: Tensor, mean_shift_BTD: Tensor | None, patch: int) -> Tensor:
    """The mean of patch `patch` plus its prompt shift (when the prior has one)."""
    return mean_BD if mean_shift_BTD is None else mean_BD + mean_shift_BTD[:, patch]
