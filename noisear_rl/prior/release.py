"""Conversion between the public NoiseAR release's state dict and `NoiseARPrior`'s.

The release names its modules `latent_patch_encoder`, `learnable_start_token_emb` (a buffer),
`self_attn_layers.i` / `cross_attn_layers.i` (`nn.MultiheadAttention`), `*_norm.i`,
`ffn_layers.i`, `prediction_head_mu` / `prediction_head_logvar`, `pos_encoding` (a buffer) and,
for Hunyuan-DiT, `dim_adapter`. Its sub-layers compute `x = norm(x); x = f(x) + x`, which is
`residual_style="release"`.

What the weights do not say is supplied when loading: the head count (required: every released
model uses 1), the sampling temperature (0.5, the release's) and that the start token stays fixed.
`python -m noisear_rl.prior.release model.pth --n-heads 1 --out FOLDER` converts a checkpoint
once into a `save_pretrained` folder that records them.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import tyro
from torch import Tensor

from noisear_rl.cli import DEBUG_HELP, run_command
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
RELEASE_TEMPERATURE = 0.5
"""The release samples `mu + std * z * 0.5` (`NoiseARNet.inference` in its try.py and eval.py)."""
CONVERT_COMMAND = "python -m noisear_rl.prior.release model.pth --n-heads 1 --out FOLDER"


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


def load_release_checkpoint(
    cls: type[NoiseARPrior], path: str | os.PathLike[str], n_heads: int | None = None, **config: Any
) -> NoiseARPrior:
    """Builds a `NoiseARPrior` from a release `.pth` (see `NoiseARPrior.from_release_checkpoint`).

    The prior is returned in eval mode, with the release's sampling temperature (0.5) and a fixed
    start token unless `config` says otherwise.

    Raises:
        ValueError: `n_heads` not given, an unreadable file, keys the release does not have, or
            the ablation variant's deeper heads (`n_prediction_head != 0`).
        FileNotFoundError: No file at `path`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no NoiseAR release checkpoint at {str(path)!r}; download the release's .pth (HKUST-SAIL/NoiseAR) "
            "on a connected machine and pass its local path"
        )
    if n_heads is None:
        raise ValueError(
            f"{str(path)!r}: a NoiseAR release checkpoint does not record its number of attention heads; pass "
            f"n_heads (1 for every released model: from_release_checkpoint(path, n_heads=1), "
            f"'noisear:PATH?n_heads=1'), or convert it once: `{CONVERT_COMMAND}`"
        )
    release = read_release_state_dict(path)
    head_layers = sorted({int(key.split(".")[1]) for key in release if key.startswith("prediction_head_mu.")})
    if head_layers and head_layers != [0, 2]:
        raise ValueError(
            f"{str(path)!r} is the release's ablation variant (n_prediction_head != 0: mean-head layers {head_layers}); "
            "NoiseARPrior has the released Linear-GELU-Linear heads (layers [0, 2]): use a released model.pth"
        )
    state = release_to_prior_state_dict(release)
    try:
        patch_dim = state["patch_embed.0.weight"].shape[1]
        d_model = state["start_token"].shape[0]
        d_ff = state["layers.0.ffn.0.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"{str(path)!r} lacks {error} and is not a NoiseAR release checkpoint") from error
    n_layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    cond_dim = state["cond_proj.weight"].shape[1] if "cond_proj.weight" in state else d_model
    channels = config.pop("latent_channels", 4)
    patch_size = round((patch_dim / channels) ** 0.5)
    if channels * patch_size**2 != patch_dim:
        raise ValueError(f"patch encoder input {patch_dim} is not latent_channels x p^2 with latent_channels={channels}")
    defaults = {
        "latent_height": 128,  # the release hard-codes SDXL's 4x128x128 latent
        "latent_width": 128,
        "temperature": RELEASE_TEMPERATURE,
        "trainable_start_token": False,
    }
    prior = cls(
        latent_channels=channels,
        patch_size=patch_size,
        cond_dim=cond_dim,
        d_model=d_model,
        d_ff=d_ff,
        n_heads=n_heads,
        n_layers=n_layers,
        residual_style="release",
        **{**defaults, **config},
    )
    try:
        missing, unexpected = prior.load_state_dict(state, strict=False)
    except RuntimeError as error:  # size mismatches: another layout than the released one
        first = str(error).strip().splitlines()[-1].strip()
        raise ValueError(f"{str(path)!r} does not fit the NoiseAR release architecture: {first}") from error
    if missing or unexpected:
        raise ValueError(f"release checkpoint does not match the architecture: missing {missing}, unexpected {unexpected}")
    if _POSITIONS in release and release[_POSITIONS].shape[-2] != prior.num_patches + 1:
        raise ValueError(
            f"{str(path)!r}: pos_encoding covers {release[_POSITIONS].shape[-2] - 1} patches, but a "
            f"{prior.config.latent_height}x{prior.config.latent_width} latent has {prior.num_patches} patches of "
            f"{patch_size}x{patch_size}: pass the latent_height and latent_width it was trained for"
        )
    return prior.eval()


def read_release_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The release checkpoint's state dict, read weights-only (a `module.` prefix and a
    `{"state_dict": ...}` wrapper are removed).

    Raises:
        ValueError: The file is not a weights-only state dict.
    """
    try:
        release = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, pickled objects, truncated download
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, pickle.UnpicklingError):
            reason = "it holds pickled objects besides tensors, which could run code when loaded"
        raise ValueError(
            f"cannot read {str(path)!r} as a weights-only NoiseAR state dict (nothing in it was run): {reason}; "
            "pass the release's model.pth"
        ) from error
    if isinstance(release, dict) and isinstance(release.get("state_dict"), dict):
        release = release["state_dict"]
    if not isinstance(release, dict):
        raise ValueError(f"{str(path)!r} holds a {type(release).__name__}, not a NoiseAR state dict")
    return {k.removeprefix("module."): v for k, v in release.items()}


@dataclass
class ConvertConfig:
    """Convert a NoiseAR release `.pth` into a `NoiseARPrior.save_pretrained` folder (config.json
    + safetensors) that records what the weights cannot: the head count and the release's
    sampling temperature. `--prior FOLDER` of the train CLI and `noisear:FOLDER` then load it."""

    checkpoint: Annotated[Path, tyro.conf.Positional]
    """The release's model.pth."""
    out: Path
    """Folder to write (created; an existing prior there is replaced atomically)."""
    n_heads: int
    """Attention heads of the checkpoint's model (1 for every released model)."""
    temperature: float = RELEASE_TEMPERATURE
    """Default sampling temperature stored in the config (the release samples at 0.5)."""
    trainable_start_token: bool = False
    """Make the start token trainable (the release keeps it a fixed buffer)."""


def convert(config: ConvertConfig) -> NoiseARPrior:
    """Loads `config.checkpoint` and saves it as a `NoiseARPrior` folder at `config.out`."""
    from noisear_rl.io import check_model_folder, save_pretrained_atomically
    from noisear_rl.prior.model import NoiseARPrior

    check_model_folder(config.out)
    prior = NoiseARPrior.from_release_checkpoint(
        str(config.checkpoint), n_heads=config.n_heads, temperature=config.temperature,
        trainable_start_token=config.trainable_start_token,
    )
    save_pretrained_atomically(prior, config.out)
    return prior


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m noisear_rl.prior.release model.pth --n-heads 1 --out FOLDER`; returns the
    exit status (2 after an error)."""
    def command(arguments: list[str]) -> None:
        config = tyro.cli(ConvertConfig, args=arguments, prog="python -m noisear_rl.prior.release",
                          description=f"{ConvertConfig.__doc__}\n{DEBUG_HELP}")
        prior = convert(config)
        print(f"wrote {config.out} ({sum(p.numel() for p in prior.parameters()) / 1e6:.1f}M parameters, "
              f"n_heads={prior.config.n_heads}, temperature={prior.config.temperature})")

    return run_command(command, argv)


if __name__ == "__main__":
    sys.exit(main())
