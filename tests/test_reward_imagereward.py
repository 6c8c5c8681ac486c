"""The `imagereward` reward on tiny random BLIP weights: scores, loading, preprocessing, upstream agreement.

`test_agrees_with_upstream_imagereward` needs the `image-reward` package, which does not install
into the project's environment; tests/upstream/README.md builds the throwaway one it runs in.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisear_rl.reward_models import load_reward
from noisear_rl.reward_models.blip import MedConfig, ViTConfig
from noisear_rl.hub import WeightsUnavailableError
from noisear_rl.reward_models.imagereward import (
    CHECKPOINT_FILE,
    MED_CONFIG_FILE,
    ImageRewardModel,
    ImageRewardNet,
    load_prompt_tokenizer,
    preprocess_images,
)

VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] a an the red blue green cat dog car on left right of and ##s".split()
TINY_VIT = ViTConfig(image_size=224, patch_size=16, width=32, depth=2, num_heads=2)
# +2 like the official 30524 = bert-base-uncased + BLIP's [DEC] and [ENC] tokens.
TINY_MED = MedConfig(
    vocab_size=len(VOCAB) + 2,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=40,
)
PROMPTS = ["a red cat", "blue dogs on the left", "the green car and a dog", "a cat"]


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Seeded weights of unit-ish scale everywhere, so scores spread (default inits nearly cancel)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1:
                param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                param.copy_(noise / param[0].numel() ** 0.5)


def official_key_names(vision: ViTConfig, med: MedConfig) -> set[str]:
    """The parameter names of ImageReward's `state_dict()` that scoring uses (BLIP's vit.py/med.py)."""
    names = {"visual_encoder." + key for key in ("cls_token", "pos_embed", "norm.weight", "norm.bias")}
    names |= {f"visual_encoder.patch_embed.proj.{p}" for p in ("weight", "bias")}
    for i in range(vision.depth):
        for module in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            names |= {f"visual_encoder.blocks.{i}.{module}.{p}" for p in ("weight", "bias")}
    names |= {f"text_encoder.embeddings.{m}.weight" for m in ("word_embeddings", "position_embeddings")}
    names |= {f"text_encoder.embeddings.LayerNorm.{p}" for p in ("weight", "bias")}
    for i in range(med.num_hidden_layers):
        for attention in ("attention", "crossattention"):
            for module in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                names |= {f"text_encoder.encoder.layer.{i}.{attention}.{module}.{p}" for p in ("weight", "bias")}
        for module in ("intermediate.dense", "output.dense", "output.LayerNorm"):
            names |= {f"text_encoder.encoder.layer.{i}.{module}.{p}" for p in ("weight", "bias")}
    names = {"blip." + name for name in names}
    return names | {f"mlp.layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return directory


@pytest.fixture(scope="module")
def reward(tokenizer_dir: Path) -> ImageRewardModel:
    model = ImageRewardModel.from_config(TINY_VIT, TINY_MED, tokenizer_dir, seed=0)
    randomize_(model.network, seed=0)
    return model


def random_images(n: int, height: int = 224, width: int = 224, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def save_checkpoint(state: dict[str, torch.Tensor], med: MedConfig, directory: Path) -> Path:
    """Writes a checkpoint laid out like the hub repo: ImageReward.pt and med_config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / CHECKPOINT_FILE)
    config = {**med.__dict__, "architectures": ["BertModel"], "model_type": "bert", "type_vocab_size": 2}
    (directory / MED_CONFIG_FILE).write_text(json.dumps(config))
    return directory


def test_scores_are_finite_batched_and_equal_one_by_one(reward: ImageRewardModel) -> None:
    images = random_images(len(PROMPTS), 200, 300)
    scores = reward(images, PROMPTS)
    assert scores.shape == (len(PROMPTS),) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    singles = torch.stack([reward(images[i : i + 1], [p])[0] for i, p in enumerate(PROMPTS)])
    torch.testing.assert_close(scores, singles, atol=1e-5, rtol=1e-5)


def test_score_depends_on_prompt_and_image(reward: ImageRewardModel) -> None:
    images = random_images(2)
    same_image = reward(images[:1].expand(len(PROMPTS), -1, -1, -1), PROMPTS)
    assert same_image.std() > 1e-2
    same_prompt = reward(images, [PROMPTS[0]] * 2)
    assert (same_prompt[0] - same_prompt[1]).abs() > 1e-4


def test_state_dict_round_trip_with_official_key_names(
    reward: ImageRewardModel, tokenizer_dir: Path, tmp_path: Path
) -> None:
    state = reward.network.state_dict()
    assert set(state) == official_key_names(TINY_VIT, TINY_MED)
    # Upstream checkpoints also hold BLIP parts the score never uses; loading ignores them.
    extra = {
        "blip.vision_proj.weight": torch.zeros(256, TINY_VIT.width),
        "blip.text_proj.weight": torch.zeros(256, TINY_MED.hidden_size),
        "blip.text_encoder.embeddings.position_ids": torch.arange(TINY_MED.max_position_embeddings)[None],
    }
    directory = save_checkpoint({**state, **extra}, TINY_MED, tmp_path / "ckpt")
    images = random_images(3, 256, 240, seed=1)
    expected = reward(images, PROMPTS[:3])
    for model in (directory, directory / CHECKPOINT_FILE):
        loaded = load_reward("imagereward", model=str(model), tokenizer=tokenizer_dir, vision_config=TINY_VIT)
        assert isinstance(loaded, ImageRewardModel)
        torch.testing.assert_close(loaded(images, PROMPTS[:3]), expected, atol=1e-6, rtol=0)
        assert not any(p.requires_grad for p in loaded.parameters())
    # Weights are read once per process: a second instance shares the first one's tensors.
    first = ImageRewardModel(model=directory, tokenizer=tokenizer_dir, vision_config=TINY_VIT)
    second = ImageRewardModel(model=directory, tokenizer=tokenizer_dir, vision_config=TINY_VIT)
    assert first.network.mlp.layers[0].weight.data_ptr() == second.network.mlp.layers[0].weight.data_ptr()


def test_checkpoint_missing_a_parameter_is_rejected(
    reward: ImageRewardModel, tokenizer_dir: Path, tmp_path: Path
) -> None:
    state = dict(reward.network.state_dict())
    del state["blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"]
    directory = save_checkpoint(state, TINY_MED, tmp_path / "broken")
    with pytest.raises(KeyError, match="crossattention.self.key.weight"):
        ImageRewardModel(model=directory, tokenizer=tokenizer_dir, vision_config=TINY_VIT)


def test_offline_without_weights_fails_with_instructions(
    tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsUnavailableError) as hub_error:
        ImageRewardModel(model="THUDM/ImageReward", tokenizer=tokenizer_dir)
    for needed in ("'THUDM/ImageReward'", "ImageReward.pt", "med_config.json", "hf download", "model=DIR"):
        assert needed in str(hub_error.value)
    with pytest.raises(WeightsUnavailableError, match=r"ImageReward\.pt.*does not exist"):
        ImageRewardModel(model=tmp_path / "missing" / CHECKPOINT_FILE, tokenizer=tokenizer_dir)
    with pytest.raises(WeightsUnavailableError) as tokenizer_error:
        load_prompt_tokenizer(None)
    for needed in ("'google-bert/bert-base-uncased'", "vocab.txt", "hf download", "tokenizer=DIR"):
        assert needed in str(tokenizer_error.value)
    with pytest.raises(WeightsUnavailableError, match=r"vocab\.txt.*does not exist"):
        load_prompt_tokenizer(tmp_path)


def test_local_checkpoint_without_med_config_is_rejected(
    reward: ImageRewardModel, tokenizer_dir: Path, tmp_path: Path
) -> None:
    directory = save_checkpoint(reward.network.state_dict(), TINY_MED, tmp_path / "ckpt")
    (directory / MED_CONFIG_FILE).unlink()
    with pytest.raises(WeightsUnavailableError, match=r"med_config\.json.*does not exist"):
        ImageRewardModel(model=directory, tokenizer=tokenizer_dir, vision_config=TINY_VIT)
    loaded = ImageRewardModel(model=directory, med_config=TINY_MED, tokenizer=tokenizer_dir, vision_config=TINY_VIT)
    images = random_images(1)
    torch.testing.assert_close(loaded(images, PROMPTS[:1]), reward(images, PROMPTS[:1]), atol=1e-6, rtol=0)


def test_preprocess_matches_pil_bicubic_resize_and_centre_crop() -> None:
    """ImageReward resizes PIL images (bicubic, short side 224) and centre-crops; the tensor path agrees."""
    rng = np.random.default_rng(0)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    for height, width in ((150, 250), (400, 300), (64, 64)):  # up/down-sampling, landscape/portrait
        noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)  # worst case: overshoot everywhere
        ours = preprocess_images(torch.from_numpy(noise).permute(2, 0, 1)[None].float() / 255)
        short, long = min(height, width), max(height, width)
        size = (224, int(224 * long / short)) if width <= height else (int(224 * long / short), 224)
        resized = Image.fromarray(noise).resize(size, Image.BICUBIC)
        left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
        pil = torch.from_numpy(np.array(resized.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1) / 255
        assert ours.shape == (1, 3, 224, 224)
        # PIL rounds each of its two passes to 8 bits; the tensor path does not.
        assert ((ours[0] - preprocess_images(pil[None])[0]) * std).abs().max() < 1.5 / 255


def test_gradients_reach_the_images_only_when_differentiable(tokenizer_dir: Path) -> None:
    images = random_images(2, 100, 120).requires_grad_()
    frozen = ImageRewardModel.from_config(TINY_VIT, TINY_MED, tokenizer_dir)
    assert not frozen(images, PROMPTS[:2]).requires_grad
    differentiable = ImageRewardModel.from_config(TINY_VIT, TINY_MED, tokenizer_dir, differentiable=True)
    differentiable(images, PROMPTS[:2]).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in differentiable.parameters())


def import_upstream_or_skip() -> tuple[object, object, object]:
    """The `image-reward` package's model, BLIP and ViT modules, or a skip saying why not."""
    try:
        return tuple(
            importlib.import_module(f"ImageReward.{name}")
            for name in ("ImageReward", "models.BLIP.blip_pretrain", "models.BLIP.vit")
        )
    except Exception as err:  # absent, or present but broken on this stack
        pytest.skip(
            f"the upstream `image-reward` package cannot be imported here ({err!r}); see tests/upstream/README.md"
        )


def test_agrees_with_upstream_imagereward(tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream, blip_pretrain, vit = import_upstream_or_skip()
    from transformers import BertTokenizer

    def tiny_vit(*args: object, **kwargs: object) -> tuple[torch.nn.Module, int]:
        encoder = vit.VisionTransformer(
            img_size=224, patch_size=16, embed_dim=TINY_VIT.width, depth=TINY_VIT.depth, num_heads=TINY_VIT.num_heads
        )
        return encoder, TINY_VIT.width

    def local_tokenizer() -> BertTokenizer:  # upstream's init_tokenizer, on the local vocabulary
        tokenizer = BertTokenizer.from_pretrained(str(tokenizer_dir))
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
        return tokenizer

    monkeypatch.setattr(blip_pretrain, "create_vit", tiny_vit)
    monkeypatch.setattr(blip_pretrain, "init_tokenizer", local_tokenizer)
    med_path = tmp_path / MED_CONFIG_FILE
    med_path.write_text(json.dumps({**TINY_MED.__dict__, "model_type": "bert"}))
    model = upstream.ImageReward(med_config=str(med_path), device="cpu")
    model.mlp = upstream.MLP(TINY_MED.hidden_size)  # upstream hard-codes the 768-wide head
    randomize_(model, seed=1)
    model.eval()
    directory = save_checkpoint(model.state_dict(), TINY_MED, tmp_path / "ckpt")
    ours = ImageRewardModel(model=directory, tokenizer=tokenizer_dir, vision_config=TINY_VIT)

    with torch.no_grad():
        # The network on the same pixels and tokens.
        pixels = torch.randn(len(PROMPTS), 3, 224, 224, generator=torch.Generator().manual_seed(2))
        tokens = model.blip.tokenizer(
            PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
        )
        theirs = model.score_gard(tokens.input_ids, tokens.attention_mask, pixels)[:, 0]
        torch.testing.assert_close(
            ours.network(pixels, tokens.input_ids, tokens.attention_mask), theirs, atol=1e-5, rtol=0
        )
        assert theirs.std() > 0.02  # scores spread far beyond the tolerance: the check can fail

        # The full path at 224x224, where upstream's PIL resize is the identity: PIL images vs tensors.
        images_u8 = (random_images(len(PROMPTS), seed=3) * 255).round().to(torch.uint8)
        pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images_u8]
        theirs = torch.tensor([model.score(p, image) for p, image in zip(PROMPTS, pil_images, strict=True)])
        torch.testing.assert_close(ours(images_u8.float() / 255, PROMPTS), theirs, atol=1e-5, rtol=0)
        ranked = torch.tensor(model.inference_rank(PROMPTS[0], pil_images)[1])
        torch.testing.assert_close(
            ours(images_u8.float() / 255, [PROMPTS[0]] * len(PROMPTS)), ranked, atol=1e-5, rtol=0
        )

        # Other sizes: PIL resamples to 8 bits, the tensor path in float; scores stay close.
        for height, width in ((160, 256), (300, 240)):
            coarse = (random_images(len(PROMPTS), 16, 16, seed=4) * 255).round().to(torch.uint8)
            smooth = [
                Image.fromarray(c.permute(1, 2, 0).numpy()).resize((width, height), Image.BILINEAR) for c in coarse
            ]
            theirs = torch.tensor([model.score(p, image) for p, image in zip(PROMPTS, smooth, strict=True)])
            tensors = (
                torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in smooth]).float() / 255
            )
            difference = (ours(tensors, PROMPTS) - theirs).abs().max()
            assert difference < 0.05 * theirs.std(), (height, width, difference, theirs)


def test_full_size_key_names_and_shapes_match_upstream(
    tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default (ViT-L, BLIP med config) network loads every tensor of upstream's full-size state dict."""
    upstream, blip_pretrain, _ = import_upstream_or_skip()
    from transformers import BertTokenizer

    monkeypatch.setattr(blip_pretrain, "init_tokenizer", lambda: BertTokenizer.from_pretrained(str(tokenizer_dir)))
    (tmp_path / MED_CONFIG_FILE).write_text(json.dumps({**MedConfig().__dict__, "model_type": "bert"}))
    theirs = upstream.ImageReward(med_config=str(tmp_path / MED_CONFIG_FILE)).state_dict()
    with torch.device("meta"):
        ours = ImageRewardNet(ViTConfig(), MedConfig()).state_dict()
    assert {key: value.shape for key, value in ours.items()} == {key: theirs[key].shape for key in ours}
    unused = {"blip.text_encoder.embeddings.position_ids"} | {
        f"blip.{m}_proj.{p}" for m in ("vision", "text") for p in ("weight", "bias")
    }
    assert set(theirs) - set(ours) == unused
