"""CLIP-family rewards on `transformers.CLIPModel`: CLIPScore, PickScore and the LAION aesthetic score.

All of them embed images with torch preprocessing (`preprocess.py`), so they are differentiable
when asked, and texts with the model's tokenizer. Weights load once per process: the loaders
below are cached on (model, dtype, device), so two rewards built on the same CLIP (clipscore and
aesthetic both use OpenAI's ViT-L/14) share one module; moving one of them with `.to()` moves
the shared module too. `clear_weight_cache()` drops the cache.

Every constructor also accepts already-built parts (`clip_model=`, `tokenizer=`, `preprocess=`),
which is how tests use tiny random models and how users plug in a model they hold in memory.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, ClassVar

import torch
from torch import Tensor

from noisear_rl.reward_models.base import RewardModel, RewardOutput
from noisear_rl.hub import load_pretrained, resolve_file
from noisear_rl.reward_models.preprocess import ClipPreprocess
from noisear_rl.reward_models.registry import register_reward

CLIP_MODEL_FILES = ("config.json", "model.safetensors or pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
PROCESSOR_FILE = "preprocessor_config.json"

DtypeLike = torch.dtype | str
DeviceLike = torch.device | str


def as_dtype(dtype: DtypeLike) -> torch.dtype:
    """Accepts a torch dtype or its name ("float16", "bf16" spelled "bfloat16")."""
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'float16' or 'bfloat16'")
    return resolved


@functools.lru_cache(maxsize=4)
def load_clip_model(model: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Any:
    """Loads a frozen `transformers.CLIPModel` from a hub id or a local folder, once per process."""
    from transformers import CLIPModel

    clip = load_pretrained(
        CLIPModel.from_pretrained, model, what="CLIP model", files=CLIP_MODEL_FILES, argument="model"
    )
    return clip.to(device=device, dtype=dtype).eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def load_clip_tokenizer(model: str) -> Any:
    """Loads the tokenizer of a CLIP model (hub id or local folder), once per process."""
    from transformers import AutoTokenizer

    return load_pretrained(
        AutoTokenizer.from_pretrained, model, what="CLIP tokenizer", files=TOKENIZER_FILES, argument="processor"
    )


@functools.lru_cache(maxsize=4)
def load_clip_preprocess(model: str) -> ClipPreprocess:
    """Reads the image transform from a model's `preprocessor_config.json` (hub id or local folder)."""
    path = resolve_file(model, PROCESSOR_FILE, what="CLIP image preprocessing config", argument="processor")
    return ClipPreprocess.from_processor_config(json.loads(path.read_text()))


def clear_weight_cache() -> None:
    """Forgets every cached reward model, tokenizer and transform (frees their memory once unused)."""
    for loader in (load_clip_model, load_clip_tokenizer, load_clip_preprocess, load_aesthetic_mlp):
        loader.cache_clear()
    from noisear_rl.reward_models.hpsv2 import load_hpsv2_model

    load_hpsv2_model.cache_clear()


def resolve_device(device: DeviceLike | None, clip_model: torch.nn.Module | None) -> str:
    """The device to load on: the given one, else that of a given model, else the CPU."""
    if device is not None:
        return str(torch.device(device))
    if clip_model is not None:
        return str(next(clip_model.parameters()).device)
    return "cpu"


class CLIPRewardModel(RewardModel):
    """The shared part of CLIP-family rewards: loading, and unit-norm image and text embeddings.

    Subclasses set the default checkpoints and implement `compute`.

    Args:
        model: Hub id or local folder of the transformers CLIP model (default: `default_model`).
        processor: Hub id or local folder of the tokenizer and `preprocessor_config.json`
            (default: `default_processor`, else `model`).
        device: Where to compute; defaults to the CPU (or the device of a given `clip_model`).
        dtype: The CLIP model's dtype (a torch dtype or its name).
        differentiable: Keep the graph from the images to the score (see `RewardModel`).
        clip_model: An already-built `transformers.CLIPModel`, used instead of loading `model`
            (moved to `device`/`dtype` and frozen).
        tokenizer: An already-built tokenizer, used instead of loading `processor`'s.
        preprocess: The image transform; by default `processor`'s config, or for a given
            `clip_model` the square transform of its image size with OpenAI's mean and std.
    """

    default_model: ClassVar[str] = "openai/clip-vit-large-patch14"
    default_processor: ClassVar[str | None] = None
    uses_text: ClassVar[bool] = True

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        processor: str | os.PathLike[str] | None = None,
        *,
        device: DeviceLike | None = None,
        dtype: DtypeLike = torch.float32,
        differentiable: bool = False,
        clip_model: Any = None,
        tokenizer: Any = None,
        preprocess: ClipPreprocess | None = None,
    ) -> None:
        super().__init__(differentiable=differentiable)
        model_name = os.fspath(model or self.default_model)
        processor_name = os.fspath(processor or self.default_processor or model_name)
        device_name = resolve_device(device, clip_model)
        if clip_model is None:
            clip_model = self.load_clip(model_name, as_dtype(dtype), device_name)
            preprocess = preprocess or self.load_preprocess(processor_name, clip_model)
        else:
            clip_model = clip_model.to(device=device_name, dtype=as_dtype(dtype)).eval().requires_grad_(False)
            preprocess = preprocess or self.square_preprocess(clip_model)
        if tokenizer is None and self.uses_text:
            tokenizer = load_clip_tokenizer(processor_name)
        self.clip = clip_model
        self.tokenizer = tokenizer
        self.preprocess = preprocess

    def load_clip(self, model: str, dtype: torch.dtype, device: str) -> Any:
        """Loads the (cached) CLIP model; HPSv2 overrides this to convert its checkpoint."""
        return load_clip_model(model, dtype, device)

    def load_preprocess(self, processor: str, clip_model: Any) -> ClipPreprocess:
        """The transform of a loaded model: its processor's `preprocessor_config.json`."""
        return load_clip_preprocess(processor)

    def square_preprocess(self, clip_model: Any) -> ClipPreprocess:
        """The transform of a given model: a square of its image size, OpenAI mean and std."""
        return ClipPreprocess.square(clip_model.config.vision_config.image_size)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the CLIP model computes in."""
        return next(self.clip.parameters()).dtype

    def embed_images(self, images_BCHW: Tensor) -> Tensor:
        """Unit-norm float32 image embeddings [B, D]."""
        pixels = self.preprocess(images_BCHW).to(self.dtype)
        pooled = self.clip.vision_model(pixel_values=pixels).pooler_output
        embeds = self.clip.visual_projection(pooled).float()
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def embed_texts(self, prompts: list[str]) -> Tensor:
        """Unit-norm float32 text embeddings [B, D]; each distinct prompt is encoded once."""
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__} was built without a tokenizer")
        unique = list(dict.fromkeys(prompts))
        tokens = self.tokenizer(
            unique,
            padding="max_length",
            truncation=True,
            max_length=self.clip.config.text_config.max_position_embeddings,
            return_tensors="pt",
        ).to(self.device)
        pooled = self.clip.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
        embeds = self.clip.text_projection(pooled).float()
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        position = {prompt: i for i, prompt in enumerate(unique)}
        return embeds[torch.tensor([position[p] for p in prompts], device=embeds.device)]

    def cosine(self, images_BCHW: Tensor, prompts: list[str]) -> Tensor:
        """Cosine similarity [B] of each image with its prompt."""
        return (self.embed_images(images_BCHW) * self.embed_texts(prompts)).sum(dim=-1)


@register_reward("clipscore")
class CLIPScore(CLIPRewardModel):
    """CLIPScore (Hessel et al. 2021): `weight * max(cos(image, prompt), 0)` with OpenAI's ViT-L/14.

    With the default weight 2.5 this is the paper's CLIP-S (about 0.8 for a matching pair; papers
    often print it x100). Details: "cosine", the raw cosine similarity.

    Args:
        model: Hub id or local folder of a transformers CLIP model (tokenizer and preprocessor
            config in the same folder).
        weight: The rescaling w of CLIP-S.
        **kwargs: `processor`, `device`, `dtype`, `differentiable`, `clip_model`, `tokenizer`,
            `preprocess`, as for `CLIPRewardModel`.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, weight: float = 2.5, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.weight = weight

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        cosine = self.cosine(images, prompts)
        return RewardOutput(scores=self.weight * cosine.clamp_min(0.0), details={"cosine": cosine})


@register_reward("pickscore")
class PickScore(CLIPRewardModel):
    """PickScore (Kirstain et al. 2023): `exp(logit_scale) * cos(image, prompt)` (about 20-23).

    Arguments as for `CLIPRewardModel`; `model` defaults to the PickScore checkpoint and
    `processor` to the tokenizer and image-processor config the official code uses (LAION's
    CLIP-ViT-H-14). Details: "cosine".
    """

    default_model = "yuvalkirstain/PickScore_v1"
    default_processor = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        cosine = self.cosine(images, prompts)
        return RewardOutput(scores=self.clip.logit_scale.exp().float() * cosine, details={"cosine": cosine})


class AestheticMLP(torch.nn.Module):
    """The LAION improved-aesthetic-predictor head: a linear MLP (no activations) on unit CLIP embeddings.

    Its state-dict keys (`layers.0.weight` ... `layers.7.bias`) are those of the official
    `sac+logos+ava1-l14-linearMSE.pth`.
    """

    def __init__(self, input_dim: int = 768) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_dim, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embeds_BD: Tensor) -> Tensor:
        return self.layers(embeds_BD).squeeze(-1)


AESTHETIC_HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"


@functools.lru_cache(maxsize=2)
def load_aesthetic_mlp(head: str, filename: str = AESTHETIC_HEAD_FILE, device: str = "cpu") -> AestheticMLP:
    """Loads the aesthetic MLP from a hub repo, a local folder or a local .pth/.safetensors file."""
    path = resolve_file(head, filename, what="LAION aesthetic MLP", argument="head")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = state_dict.get("state_dict", state_dict)
    mlp = AestheticMLP(input_dim=state_dict["layers.0.weight"].shape[1])
    mlp.load_state_dict(state_dict)
    return mlp.to(device).eval().requires_grad_(False)


@register_reward("aesthetic")
class AestheticScore(CLIPRewardModel):
    """The LAION aesthetic score (about 1-10): the improved-aesthetic-predictor MLP on CLIP ViT-L/14.

    Args:
        model: Hub id or local folder of the CLIP model (OpenAI ViT-L/14, as the MLP was trained on).
        head: Hub repo, local folder or local file (.pth or .safetensors) of the MLP weights.
        head_file: The MLP's file name inside `head` when it is a repo or folder.
        mlp: An already-built `AestheticMLP`, used instead of loading `head`.
        **kwargs: `device`, `dtype`, `differentiable`, `clip_model`, `preprocess`, as for
            `CLIPRewardModel` (no tokenizer: the score ignores the prompt).
    """

    uses_text = False

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        head: str | os.PathLike[str] = "camenduru/improved-aesthetic-predictor",
        head_file: str = AESTHETIC_HEAD_FILE,
        *,
        mlp: AestheticMLP | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if mlp is None:
            mlp = load_aesthetic_mlp(os.fspath(head), head_file, str(self.device))
        self.mlp = mlp.to(self.device).eval().requires_grad_(False)

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        return RewardOutput(scores=self.mlp(self.embed_images(images)))
