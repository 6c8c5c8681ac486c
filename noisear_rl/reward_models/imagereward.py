"""The `imagereward` reward: ImageReward (Xu et al., 2023) on the official checkpoint, without its package.

The `image-reward` package does not install on today's stack (it pins timm 0.6.13 and fairscale,
needs an undeclared `clip` package and transformers helpers that are gone), so this module loads
the official state dict (`THUDM/ImageReward`, file `ImageReward.pt`, plus its `med_config.json`)
with `weights_only=True` into the pure-torch BLIP of `noisear_rl.reward_models.blip`, whose
parameter names are the official ones. Preprocessing is ImageReward's transform done in torch on
[B, 3, H, W] tensors (no PIL round trip, differentiable), and the scores carry ImageReward's
normalisation. `tests/upstream/README.md` shows how the scores were checked against the package.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import BertTokenizer, PreTrainedTokenizerBase

from noisear_rl.reward_models.base import RewardModel, RewardOutput
from noisear_rl.reward_models.blip import BlipImageTextEncoder, MedConfig, ViTConfig
from noisear_rl.reward_models.clip_rewards import DtypeLike, as_dtype
from noisear_rl.hub import (
    WeightsUnavailableError,
    is_local_path,
    missing_weights_message,
    resolve_file,
)
from noisear_rl.reward_models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, resize
from noisear_rl.reward_models.registry import register_reward

HUB_ID = "THUDM/ImageReward"
CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
TOKENIZER_HUB_ID = "google-bert/bert-base-uncased"
MAX_PROMPT_TOKENS = 35  # ImageReward pads and truncates every prompt to 35 tokens
SCORE_MEAN = 0.16717362830052426  # ImageReward's normalisation of the head's output
SCORE_STD = 1.0333394966054072


class RewardHead(nn.Module):
    """ImageReward's MLP on the [CLS] state: five linear layers, no activations (as trained).

    The identities stand where the trained head had dropout, so the official indices
    (`layers.0`, `.2`, `.4`, `.6`, `.7`) match and the reward stays deterministic in train mode.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, 1024),
            nn.Identity(),
            nn.Linear(1024, 128),
            nn.Identity(),
            nn.Linear(128, 64),
            nn.Identity(),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, features_BD: Tensor) -> Tensor:
        return self.layers(features_BD).squeeze(-1)


class ImageRewardNet(nn.Module):
    """BLIP image-grounded text encoder + reward head; state-dict keys are the official ones."""

    def __init__(self, vision_config: ViTConfig, med_config: MedConfig) -> None:
        super().__init__()
        self.vision_config = vision_config
        self.blip = BlipImageTextEncoder(vision_config, med_config)
        self.mlp = RewardHead(med_config.hidden_size)

    def forward(self, pixels_BCHW: Tensor, input_ids_BL: Tensor, attention_mask_BL: Tensor) -> Tensor:
        """Normalised ImageReward scores [B] (float32) for preprocessed pixels and tokenised prompts."""
        states_BLD = self.blip(pixels_BCHW, input_ids_BL, attention_mask_BL)
        raw_B = self.mlp(states_BLD[:, 0]).float()
        return (raw_B - SCORE_MEAN) / SCORE_STD


def preprocess_images(images_BCHW: Tensor, size: int = 224) -> Tensor:
    """ImageReward's image transform on tensors: [B, 3, H, W] in [0, 1] -> normalised [B, 3, size, size].

    Like torchvision's `Resize(size, BICUBIC)` + `CenterCrop(size)` on a PIL image, then OpenAI
    CLIP's mean and std. The short side goes to `size`, the long side to `int(size * long / short)`
    (an image already `size` on its short side is not resampled). PIL resamples the width, then the
    height, rounding each pass to 8 bits; resizing in the same two passes, each clamped to [0, 1],
    keeps its saturation where bicubic overshoots (sharp edges). The crop offset is rounded as
    torchvision rounds it. Differentiable.
    """
    height, width = images_BCHW.shape[-2:]
    short, long = min(height, width), max(height, width)
    resized_long = int(size * long / short)
    new_height, new_width = (size, resized_long) if height <= width else (resized_long, size)
    images_BCHW = resize(resize(images_BCHW, height, new_width), new_height, new_width)
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    images_BCHW = images_BCHW[..., top : top + size, left : left + size]
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=images_BCHW.device, dtype=images_BCHW.dtype)[:, None, None]
    std = torch.tensor(OPENAI_CLIP_STD, device=images_BCHW.device, dtype=images_BCHW.dtype)[:, None, None]
    return (images_BCHW - mean) / std


def load_imagereward_network(
    model: str | os.PathLike[str] = HUB_ID,
    med_config: str | os.PathLike[str] | dict[str, Any] | MedConfig | None = None,
    vision_config: ViTConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> ImageRewardNet:
    """Builds the ImageReward network from an official-format checkpoint (frozen, eval mode, on CPU).

    Args:
        model: A hub id ("THUDM/ImageReward"), a directory holding `ImageReward.pt` (and
            `med_config.json`), or the path of the checkpoint file itself.
        med_config: The text-encoder config (path, dict or `MedConfig`); by default the
            `med_config.json` beside the checkpoint, or the hub repo's.
        vision_config: The ViT; by default BLIP's ViT-L/16 at 224 px, which ImageReward uses.
        dtype: Floating-point dtype of the weights.

    Raises:
        WeightsUnavailableError: The checkpoint or config is neither local nor obtainable from the
            hub; the message names the hub id and files and says how to provide a local copy.
        KeyError: The checkpoint lacks parameters of the network (not an ImageReward checkpoint).
    """
    checkpoint_path, med = _resolve_checkpoint(model, med_config)
    state = load_imagereward_state_dict(str(checkpoint_path), dtype)
    with torch.device("meta"):
        network = ImageRewardNet(vision_config or ViTConfig(), med)
    expected = network.state_dict().keys()
    missing = [key for key in expected if key not in state]
    if missing:
        raise KeyError(
            f"{checkpoint_path} is not an ImageReward checkpoint for this configuration: {len(missing)} "
            f"parameters are missing, e.g. {missing[:3]}"
        )
    # Keys the network does not use (BLIP's vision_proj/text_proj, position_ids) are left out, as
    # the official loader's strict=False does; `assign` shares the cached tensors, no copy.
    network.load_state_dict({key: state[key] for key in expected}, strict=True, assign=True)
    return network.eval().requires_grad_(False)


@functools.lru_cache(maxsize=2)
def load_imagereward_state_dict(path: str, dtype: torch.dtype) -> dict[str, Tensor]:
    """Reads a checkpoint once per process and dtype (tensors only: `weights_only=True`).

    Networks built from it share its tensors; `load_imagereward_state_dict.cache_clear()` frees them.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}


def _resolve_checkpoint(
    model: str | os.PathLike[str], med_config: str | os.PathLike[str] | dict[str, Any] | MedConfig | None
) -> tuple[Path, MedConfig]:
    """Finds the checkpoint file and reads the med config, locally or through the hub cache."""
    try:
        checkpoint = resolve_file(model, CHECKPOINT_FILE, what="ImageReward checkpoint", argument="model")
    except WeightsUnavailableError as err:
        if is_local_path(model):
            raise
        # The download hint names both files: a folder holding only the checkpoint would fail next.
        files = [CHECKPOINT_FILE, MED_CONFIG_FILE]
        message = missing_weights_message(
            "ImageReward checkpoint", os.fspath(model), files, "model", repr(err.__cause__)
        )
        raise WeightsUnavailableError(message) from err
    if isinstance(med_config, MedConfig):
        return checkpoint, med_config
    if isinstance(med_config, dict):
        return checkpoint, MedConfig.from_dict(med_config)
    if med_config is None:  # the one beside a local checkpoint, else the hub repo's
        med_config = checkpoint.parent if is_local_path(model) else model
    config_path = resolve_file(med_config, MED_CONFIG_FILE, what="ImageReward med_config", argument="med_config")
    return checkpoint, MedConfig.from_json_file(config_path)


def load_prompt_tokenizer(
    tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase | None,
) -> PreTrainedTokenizerBase:
    """ImageReward's tokenizer (bert-base-uncased) from a hub id or a local directory holding vocab.txt."""
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    source = tokenizer or TOKENIZER_HUB_ID
    vocab = resolve_file(source, "vocab.txt", what="bert-base-uncased tokenizer of ImageReward", argument="tokenizer")
    # Checked here because transformers 5 silently builds an empty vocabulary when vocab.txt is absent.
    if vocab.name != "vocab.txt":
        raise WeightsUnavailableError(f"tokenizer={str(source)!r}: pass a directory holding vocab.txt, not a file")
    return BertTokenizer.from_pretrained(str(vocab.parent), do_lower_case=True)


@register_reward("imagereward")
class ImageRewardModel(RewardModel):
    """ImageReward: human-preference score of an image for a prompt (about N(0, 1) on real images).

    Args:
        model: Hub id, checkpoint directory or checkpoint file; see `load_imagereward_network`.
        device: Where the reward computes.
        dtype: Weight dtype or its name (float16/bfloat16 halve memory on GPUs).
        differentiable: Keep the graph from images to scores (for reward-gradient methods).
        med_config: Text-encoder config; by default the `med_config.json` of the checkpoint.
        tokenizer: A tokenizer, or the hub id / local directory of bert-base-uncased.
        vision_config: The ViT; by default ViT-L/16 at 224 px (the official model).
        network: A ready network (random-weight tests; `from_config`); skips loading `model`.

    The weights are read once per process and dtype and shared between instances.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = HUB_ID,
        device: str | torch.device = "cpu",
        dtype: DtypeLike = torch.float32,
        differentiable: bool = False,
        med_config: str | os.PathLike[str] | dict[str, Any] | MedConfig | None = None,
        tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase | None = None,
        vision_config: ViTConfig | None = None,
        network: ImageRewardNet | None = None,
    ) -> None:
        super().__init__(differentiable=differentiable)
        if network is None:
            network = load_imagereward_network(model, med_config, vision_config, as_dtype(dtype))
        self.network = network.to(device=device, dtype=as_dtype(dtype)).eval().requires_grad_(False)
        self.tokenizer = load_prompt_tokenizer(tokenizer)
        vocab_size = self.network.blip.text_encoder.config.vocab_size
        if len(self.tokenizer) > vocab_size:
            raise ValueError(f"the tokenizer has {len(self.tokenizer)} tokens but the text encoder only {vocab_size}")

    @classmethod
    def from_config(
        cls,
        vision_config: ViTConfig,
        med_config: MedConfig,
        tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase,
        seed: int = 0,
        **kwargs: Any,
    ) -> ImageRewardModel:
        """A model with random weights (PyTorch's default init under `seed`), for tests; no download."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = ImageRewardNet(vision_config, med_config)
        return cls(network=network, tokenizer=tokenizer, **kwargs)

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_PROMPT_TOKENS, return_tensors="pt"
        )
        dtype = self.network.mlp.layers[0].weight.dtype
        pixels = preprocess_images(images, self.network.vision_config.image_size).to(dtype)
        scores = self.network(pixels, tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device))
        return RewardOutput(scores=scores)
