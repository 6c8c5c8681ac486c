"""The NoiseAR prior: an autoregressive Gaussian over the patches of a diffusion model's initial noise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from noisear_rl.hub import is_local_path
from noisear_rl.prior.decoding import DecodeState, IncrementalDecoding
from noisear_rl.prior.gaussian import gaussian_log_prob, sample_gaussian
from noisear_rl.prior.layers import DecoderLayer, PromptShift, ResidualStyle
from noisear_rl.prior.patching import num_patches, patchify, sinusoidal_positions, unpatchify

__all__ = ["DecodeState", "NoiseARPrior"]  # DecodeState lives in `decoding`, imported here as before


class NoiseARPrior(IncrementalDecoding, ModelMixin, ConfigMixin):
    """p(x_T | prompt) factorised over p x p patches of the initial latent in raster order.

    A start token plus patch embeddings with sinusoidal positions pass through `n_layers`
    decoder layers (causal self-attention, cross-attention to the condition sequence, FFN); the
    output at position t parameterises a diagonal Gaussian over patch t through separate mean and
    log-variance heads. The heads' last layers start near zero, so an untrained prior is close to
    N(0, I). Architecture defaults match the public NoiseAR release for SDXL. Sampling, and
    decoding one patch at a time with a KV cache (`start`, `advance`), come from
    `IncrementalDecoding` (`noisear_rl.prior.decoding`).

    With `prompt_shift_width > 0` the mean of every patch also gets a `PromptShift`: a term read
    from the condition by a learned query per patch, which depends on the prompt and the patch's
    position only (not on the earlier patches), times a scalar gain. It starts at zero; RL can
    update its maps alone (`trainable="prompt-shift"` in the rollout algorithms) or, once NLL has
    fitted it, its gain (`trainable="shift-gain"`), or the gain and the sampling temperature
    explored per episode (`trainable="gain-temperature"`, their default; `SamplingKnobs`).

    `temperature` is part of the config so that a prior samples as it was meant to by default:
    the public release multiplies every std by 0.5 when sampling, and
    `from_release_checkpoint` stores that; `sample` and `log_prob` use it unless given another.

    Args:
        latent_channels: C of the initial latent.
        latent_height: H of the initial latent.
        latent_width: W of the initial latent.
        patch_size: p; H and W must be divisible by it.
        cond_dim: Width of the condition sequence; a Linear maps it to d_model when they differ.
        d_model: Transformer width.
        d_ff: Feed-forward hidden width.
        n_heads: Attention heads.
        n_layers: Decoder layers.
        dropout: Dropout in attention and feed-forward blocks (training only).
        residual_style: "release" (`x = norm(x); x = f(x) + x`, as the public release) or "pre_norm".
        head_init_scale: The heads' last layers start uniform in [-scale, scale] with zero bias.
        prompt_shift_width: Width of the prompt-shift pathway (0: none, as the public release).
        prompt_shift_resolution: "element": the shift has a value per element of a patch; "patch":
            one per channel of each patch (the noise's patch means, its lowest frequencies).
        temperature: Default std multiplier of `sample` and `log_prob` (1.0; the release samples
            at 0.5, which `from_release_checkpoint` stores here).
        trainable_start_token: True: the start token is a parameter; False: a fixed buffer (the
            release registers its `learnable_start_token_emb` as a buffer, so it never trained).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        latent_height: int = 128,
        latent_width: int = 128,
        patch_size: int = 32,
        cond_dim: int = 2048,
        d_model: int = 2048,
        d_ff: int = 4096,
        n_heads: int = 1,
        n_layers: int = 1,
        dropout: float = 0.15,
        residual_style: ResidualStyle = "release",
        head_init_scale: float = 1e-3,
        prompt_shift_width: int = 0,
        prompt_shift_resolution: Literal["element", "patch"] = "element",
        temperature: float = 1.0,
        trainable_start_token: bool = True,
    ) -> None:
        super().__init__()
        if latent_height % patch_size or latent_width % patch_size:
            raise ValueError(
                f"latent {latent_height}x{latent_width} is not divisible into {patch_size}x{patch_size} patches"
            )
        if residual_style not in ("release", "pre_norm"):
            raise ValueError(f"residual_style must be 'release' or 'pre_norm', got {residual_style!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        patch_dim = latent_channels * patch_size * patch_size
        self.patch_embed = nn.Sequential(
            nn.Linear(patch_dim, patch_dim // 2), nn.SiLU(), nn.Linear(patch_dim // 2, d_model)
        )
        start_token = torch.randn(d_model) * 0.1
        if trainable_start_token:
            self.start_token = nn.Parameter(start_token)
        else:
            self.register_buffer("start_token", start_token)
        self.cond_proj = nn.Linear(cond_dim, d_model) if cond_dim != d_model else nn.Identity()
        self.layers = nn.ModuleList(
            [DecoderLayer(d_model, d_ff, n_heads, dropout, residual_style) for _ in range(n_layers)]
        )
        self.mean_head = self._head(d_model, patch_dim, head_init_scale)
        self.logvar_head = self._head(d_model, patch_dim, head_init_scale)
        n = num_patches(latent_height, latent_width, patch_size)
        if prompt_shift_width < 0:
            raise ValueError(f"prompt_shift_width must be >= 0, got {prompt_shift_width}")
        _check_shift_resolution(prompt_shift_resolution)
        self.prompt_shift = self._prompt_shift(prompt_shift_width, prompt_shift_resolution) if prompt_shift_width else None
        self.register_buffer("positions", sinusoidal_positions(n + 1, d_model), persistent=False)

    def _prompt_shift(self, width: int, resolution: str) -> PromptShift:
        c = self.config
        channels = c.latent_channels if resolution == "patch" else None
        n = num_patches(c.latent_height, c.latent_width, c.patch_size)
        return PromptShift(n, c.cond_dim, width, c.latent_channels * c.patch_size**2, channels)

    def add_prompt_shift(self, width: int = 64, resolution: Literal["element", "patch"] = "patch") -> None:
        """Gives a prior without a prompt shift a zero-initialised one (its distribution does not
        change), recorded in its config so that `save_pretrained` keeps it; what RL's default
        `trainable="prompt-shift"` does to a prior that has none (the public release's, say)."""
        if self.prompt_shift is not None:
            raise ValueError("this prior already has a prompt shift")
        if width < 1:
            raise ValueError(f"a prompt shift needs width >= 1, got {width}")
        _check_shift_resolution(resolution)
        reference = self.start_token
        with torch.random.fork_rng(devices=[]):  # the same prior always gets the same shift
            torch.manual_seed(0)
            self.prompt_shift = self._prompt_shift(width, resolution).to(reference.device, reference.dtype)
        self.register_to_config(prompt_shift_width=width, prompt_shift_resolution=resolution)

    @staticmethod
    def _head(d_model: int, out_dim: int, init_scale: float) -> nn.Sequential:
        head = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, out_dim))
        nn.init.uniform_(head[-1].weight, -init_scale, init_scale)
        nn.init.zeros_(head[-1].bias)
        return head

    # ----------------------------------------------------------------------------------- shapes
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the noise this prior models."""
        c = self.config
        return (c.latent_channels, c.latent_height, c.latent_width)

    @property
    def num_patches(self) -> int:
        """T, the number of patches (= actions per episode)."""
        c = self.config
        return num_patches(c.latent_height, c.latent_width, c.patch_size)

    @property
    def patch_dim(self) -> int:
        """C * p * p, the number of elements in one patch."""
        return self.config.latent_channels * self.config.patch_size**2

    def patchify(self, noise_BCHW: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, T, C*p*p] in this prior's patch order."""
        return patchify(noise_BCHW, self.config.patch_size)

    def unpatchify(self, patches_BTD: Tensor) -> Tensor:
        """[B, T, C*p*p] -> [B, C, H, W]."""
        return unpatchify(patches_BTD, self.config.patch_size, *self.latent_shape)

    # ------------------------------------------------------------------------------- validation
    def _check_cond(self, cond: Tensor, cond_mask: Tensor | None, batch_size: int | None = None) -> None:
        if not isinstance(cond, Tensor) or cond.ndim != 3 or cond.shape[-1] != self.config.cond_dim:
            shape = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(f"cond must be a tensor [B, L, {self.config.cond_dim}], got {shape}")
        if batch_size is not None and cond.shape[0] != batch_size:
            raise ValueError(f"cond has batch {cond.shape[0]} but noise has batch {batch_size}")
        if not torch.isfinite(cond).all():
            raise ValueError("cond contains NaN or inf")
        if cond_mask is not None and cond_mask.shape != cond.shape[:2]:
            raise ValueError(f"cond_mask must be [B, L] = {tuple(cond.shape[:2])}, got {tuple(cond_mask.shape)}")

    def _check_noise(self, noise: Tensor) -> None:
        if not isinstance(noise, Tensor) or noise.ndim != 4 or tuple(noise.shape[1:]) != self.latent_shape:
            shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(f"noise must be [B, {', '.join(map(str, self.latent_shape))}], got {shape}")
        if not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or inf")

    # -------------------------------------------------------------------------------- internals
    def _encode_cond(
        self, cond: Tensor, cond_mask: Tensor | None, shift_gain: Tensor | None = None
    ) -> tuple[tuple[tuple[Tensor, Tensor], ...], Tensor | None, Tensor | None]:
        """The condition's keys/values per layer, its attention mask, and the prompt shift
        [B, T, D] of every patch's mean (None without the pathway; `shift_gain` [B]: a gain per
        row instead of the shift's own)."""
        cond = cond.to(self.dtype)
        mask = None if cond_mask is None else cond_mask.bool()[:, None, None, :]
        mean_shift = None if self.prompt_shift is None else self.prompt_shift(cond, mask, shift_gain)
        projected = self.cond_proj(cond)
        cross_kv = tuple(layer.cross_attn.project_key_value(projected) for layer in self.layers)
        return cross_kv, mask, mean_shift

    def _tokens(self, patches_BtD: Tensor, start_position: int) -> Tensor:
        """Input tokens for positions start_position.. : embeddings of the given patches (which
        occupy the positions after the start token) plus their positions."""
        emb = self.patch_embed(patches_BtD.to(self.dtype))
        return emb + self.positions[start_position : start_position + emb.shape[1]].to(emb.dtype)

    def _start_tokens(self, batch_size: int) -> Tensor:
        return (self.start_token + self.positions[0]).expand(batch_size, 1, -1)

    def _run(
        self,
        x_BLD: Tensor,
        cross_kv: tuple[tuple[Tensor, Tensor], ...],
        cross_mask: Tensor | None,
        self_kv: tuple[tuple[Tensor, Tensor], ...] | None,
    ) -> tuple[Tensor, Tensor, tuple[tuple[Tensor, Tensor], ...]]:
        new_kv = []
        for i, layer in enumerate(self.layers):
            x_BLD, kv = layer(x_BLD, cross_kv[i], cross_mask, None if self_kv is None else self_kv[i])
            new_kv.append(kv)
        return self.mean_head(x_BLD), self.logvar_head(x_BLD), tuple(new_kv)

    # ---------------------------------------------------------------------------- teacher forced
    def patch_params(self, noise: Tensor, cond: Tensor, cond_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced Gaussian parameters of every patch in one pass: (mean, logvar) [B, T, C*p*p]."""
        self._check_noise(noise)
        self._check_cond(cond, cond_mask, noise.shape[0])
        patches = self.patchify(noise)
        x = torch.cat([self._start_tokens(noise.shape[0]), self._tokens(patches[:, :-1], 1)], dim=1)
        cross_kv, mask, mean_shift = self._encode_cond(cond, cond_mask)
        mean, logvar, _ = self._run(x, cross_kv, mask, None)
        return (mean if mean_shift is None else mean + mean_shift), logvar

    def forward(self, noise: Tensor, cond: Tensor, cond_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced per-element mean and (unclamped) log-variance, both [B, C, H, W]."""
        mean, logvar = self.patch_params(noise, cond, cond_mask)
        return self.unpatchify(mean), self.unpatchify(logvar)

    def log_prob(
        self,
        noise: Tensor,
        cond: Tensor,
        cond_mask: Tensor | None = None,
        per_patch: bool = False,
        temperature: float | None = None,
    ) -> Tensor:
        """Exact log-density of `noise` given `cond`: [B], or [B, T] per patch with `per_patch=True`.

        `temperature` scales every predicted std, as in `sample` (None: `config.temperature`), so
        a sample's log-prob can be recomputed under the distribution it was drawn from.
        """
        mean, logvar = self.patch_params(noise, cond, cond_mask)
        per_patch_logp = self.patch_log_prob(noise, mean, logvar, temperature)
        return per_patch_logp if per_patch else per_patch_logp.sum(-1)

    def patch_log_prob(self, noise: Tensor, mean: Tensor, logvar: Tensor, temperature: float | None = None) -> Tensor:
        """Per-patch log-density [B, T] of `noise` under patch Gaussians `patch_params` gave for it
        (for callers that also need the Gaussians, without a second forward pass); `temperature`
        None is `config.temperature`."""
        return gaussian_log_prob(self.patchify(noise), mean, logvar, self.sampling_temperature(temperature)).sum(-1)

    def sampling_temperature(self, temperature: float | None = None) -> float:
        """`temperature`, or the config's default std multiplier when None."""
        return float(self.config.temperature if temperature is None else temperature)

    def nll_loss(
        self,
        noise: Tensor,
        cond: Tensor,
        cond_mask: Tensor | None = None,
        recon_weight: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The paper's objective: per-element NLL plus `recon_weight` x MSE between a reparameterised
        sample (teacher-forced) and the ground-truth noise. Both terms are means over elements."""
        mean, logvar = self.patch_params(noise, cond, cond_mask)
        target = self.patchify(noise)
        nll = -gaussian_log_prob(target, mean, logvar).mean()
        if recon_weight == 0:
            return nll
        sample, _ = sample_gaussian(mean, logvar, generator)
        # sample_gaussian detaches nothing: gradients flow through mean and std (reparameterisation).
        return nll + recon_weight * (sample - target.float()).square().mean()

    # ------------------------------------------------------------------------------- checkpoints
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any) -> NoiseARPrior:
        """Loads a `save_pretrained` folder (config.json + safetensors), or a hub repo, and checks it.

        A string that is not written as a hub id ("owner/name") and names no folder here is a
        missing local folder: nothing is looked up on the hub.

        Raises:
            FileNotFoundError: A local folder that does not exist or holds no config.json.
            ValueError: A folder that cannot be loaded (corrupt files, a config this class cannot
                build, missing or misshapen weights) or holds non-finite weights; the message
                names the folder.
        """
        source = os.fspath(pretrained_model_name_or_path)
        fix = "pass a folder written by NoiseARPrior.save_pretrained (config.json + diffusion_pytorch_model.safetensors)"
        local = is_local_path(source)
        if local:
            folder = Path(source).expanduser() / kwargs.get("subfolder", "")
            if not folder.is_dir():
                raise FileNotFoundError(f"no NoiseAR prior at {source!r}: no such folder; {fix}")
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"no NoiseAR prior at {source!r}: config.json missing; {fix}")
        try:
            prior = super().from_pretrained(source, **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as error:
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            if not local:
                raise FileNotFoundError(
                    f"no NoiseAR prior at {source!r}: no such folder here, and loading it as a Hugging Face Hub "
                    f"repo id failed ({reason}); {fix}"
                ) from error
            raise ValueError(
                f"the NoiseAR prior at {source!r} cannot be loaded ({reason}); it is corrupt or not a NoiseAR "
                f"prior: replace it with a good copy, or {fix}"
            ) from error
        if prior.prompt_shift is not None and prior.prompt_shift.gain.is_meta:
            # Checkpoints written before the shift had a gain: their shift is the gain-1 one.
            prior.prompt_shift.gain = torch.nn.Parameter(torch.ones((), dtype=prior.start_token.dtype))
        prior.check_weights(source)
        return prior

    def check_weights(self, source: str | os.PathLike[str]) -> None:
        """Raises a ValueError naming `source` (where the weights came from) unless every parameter
        and buffer holds finite values (none left unloaded)."""
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            if tensor.is_meta:
                raise ValueError(f"the NoiseAR prior at {os.fspath(source)!r} has no weights for {name!r}; it is corrupt")
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ValueError(
                    f"the NoiseAR prior at {os.fspath(source)!r} has non-finite weights in {name!r} (NaN or inf: "
                    "its training diverged or the file is damaged); use another prior or retrain it"
                )

    @classmethod
    def from_release_checkpoint(cls, path: str, n_heads: int | None = None, **config) -> NoiseARPrior:
        """Loads a `.pth` state dict of the public NoiseAR release (weights-only loading).

        The prior comes back in eval mode and samples as the release does: `temperature=0.5` (the
        release's `mu + std * z * 0.5`) and a fixed start token (`trainable_start_token=False`,
        the release's buffer); pass either in `config` to change it.

        Args:
            path: The release's `model.pth`.
            n_heads: Attention heads, which the weights do not record (every released model uses
                1); required, so that a checkpoint trained with more heads cannot load with the
                wrong count and silently give wrong means.
            **config: The rest of the config (latent shape, dropout, temperature, ...); sizes are
                read from the weights. See `noisear_rl.prior.release` for the name mapping.
        """
        from noisear_rl.prior.release import load_release_checkpoint

        prior = load_release_checkpoint(cls, path, n_heads=n_heads, **config)
        prior.check_weights(path)
        return prior


def _check_shift_resolution(resolution: str) -> None:
    if resolution not in ("element", "patch"):
        raise ValueError(f"prompt_shift_resolution must be 'element' or 'patch', got {resolution!r}")
