"""Conversion between the public NoiseAR release's state dict and `NoiseARPrior`'s.

The release names its modules `latent_patch_encoder`, `learnable_start_token_emb` (a buffer),
`self_attn_layers.i` / `cross_attn_layers.i` (`nn.MultiheadAttention`), `*_norm.i`,
`ffn_layers.i`, `prediction_head_mu` / `prediction_head_logvar`, `pos_encoding` (a buffer) and,
for Hunyuan-DiT, `dim_adapter`. Its sub-layers compute `x = norm(x); x = f(x) + x`, which is
`residual_style="release"`.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from noisear_rl.prior.patching import sinusoidal_positions

if TYPE_CHECKING:
    from noisear_rl.prior.model import NoiseARPrior

# (release prefix pattern, our prefix pattern); `{i}` is a layer index.
_PREFIXES = [
    ("latent_patch_encoder.", "patch_embed."),
    ("prediction_head_mu.", "mean_head."),
    ("prediction_head_logvar.", "logvar_head."),
    ("dim_adapter.", "cond_proj."),
    ("self_attn_layers.{i}.", "layers.{i}.self_attn."),
    ("cross_attn_layers.{i}.", "layers.{i}.cross_attn."),
    ("self_attn_norm.{i}.", "layers.{i}.self_attn_norm."),
    ("cross_attn_norm.{i}.", "layers.{i}.cross_attn_norm."),
    ("ffn_norm.{i}.", "layers.{i}.ffn_norm."),
    ("ffn_layers.{i}.", "layers.{i}.ffn."),
]
_START_TOKEN = ("learnable_start_token_emb", "start_token")
_POSITIONS = "pos_encoding"


def _rename(key: str, source_index: int) -> str | None:
    for pair in _PREFIXES:
        source, target = pair[source_index], pair[1 - source_index]
        pattern = "^" + re.escape(source).replace(re.escape("{i}"), r"(\d+)")
        match = re.match(pattern, key)
        if match:
            new_prefix = target.replace("{i}", match.group(1)) if match.groups() else target
            return new_prefix + key[match.end() :]
    return None


def release_to_prior_state_dict(release: dict[str, Tensor]) -> dict[str, Tensor]:
    """Renames a release state dict to `NoiseARPrior` names; drops (after checking) the positions.

    Raises:
        ValueError: A key the release does not have, or positions that are not the sinusoidal table.
    """
    converted: dict[str, Tensor] = {}
    unexpected = []
    for key, value in release.items():
        if key == _START_TOKEN[0]:
            converted[_START_TOKEN[1]] = value
        elif key == _POSITIONS:
            expected = sinusoidal_positions(value.shape[-2], value.shape[-1])
            if not torch.allclose(value.reshape(expected.shape).float(), expected, atol=1e-4):
                raise ValueError("pos_encoding in the checkpoint is not the sinusoidal table NoiseAR uses")
        else:
            new_key = _rename(key, 0)
            if new_key is None:
                unexpected.append(key)
            else:
                converted[new_key] = value
    if unexpected:
        raise ValueError(f"unexpected keys for a NoiseAR release checkpoint: {unexpected[:10]}")
    return converted


def prior_to_release_state_dict(prior: NoiseARPrior) -> dict[str, Tensor]:
    """The release-format state dict of `prior` (inverse of `release_to_prior_state_dict`)."""
    release: dict[str, Tensor] = {}
    for key, value in prior.state_dict().items():
        if key == _START_TOKEN[1]:
            release[_START_TOKEN[0]] = value
            continue
        new_key = _rename(key, 1)
        if new_key is None:
            raise ValueError(f"{key!r} has no counterpart in the release format")
        release[new_key] = value
    release[_POSITIONS] = prior.positions[None].clone()
    return release


def load_release_checkpoint(cls: type[NoiseARPrior], path: str | os.PathLike[str], **config) -> NoiseARPrior:
    """Builds a `NoiseARPrior` from a release `.pth` (see `NoiseARPrior.from_release_checkpoint`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no NoiseAR release checkpoint at {path!r}; download the release's .pth (HKUST-SAIL/NoiseAR) "
            "on a connected machine and pass its local path"
        )
    try:
        release = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, pickled objects, truncated download
        raise ValueError(f"cannot read {path!r} as a weights-only NoiseAR state dict: {error}") from error
    if isinstance(release, dict) and "state_dict" in release and isinstance(release["state_dict"], dict):
        release = release["state_dict"]
    release = {k.removeprefix("module."): v for k, v in release.items()}
    state = release_to_prior_state_dict(release)
    try:
        patch_hidden, patch_dim = state["patch_embed.0.weight"].shape
        d_model = state["start_token"].shape[0]
        d_ff = state["layers.0.ffn.0.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"{path!r} lacks {error} and is not a NoiseAR release checkpoint") from error
    n_layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    cond_dim = state["cond_proj.weight"].shape[1] if "cond_proj.weight" in state else d_model
    channels = config.pop("latent_channels", 4)
    patch_size = round((patch_dim / channels) ** 0.5)
    if channels * patch_size**2 != patch_dim:
        raise ValueError(f"patch encoder input {patch_dim} is not latent_channels x p^2 with latent_channels={channels}")
    prior = cls(
        latent_channels=channels,
        patch_size=patch_size,
        cond_dim=cond_dim,
        d_model=d_model,
        d_ff=d_ff,
        n_layers=n_layers,
        residual_style="release",
        **{"latent_height": 128, "latent_width": 128, **config},
    )
    missing, unexpected = prior.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"release checkpoint does not match the architecture: missing {missing}, unexpected {unexpected}")
    return prior
