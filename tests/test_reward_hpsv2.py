"""HPSv2: the open_clip -> transformers conversion, loading official-format checkpoints, and
numerical agreement with open_clip (the upstream implementation) on random weights.

The agreement tests need `open_clip` and/or the `hpsv2` package (each skipped without it). Both
import torchvision; on a CPU machine with torch 2.13 the only torchvision build is CUDA-only, so
run them in a throwaway venv with `PYTHONPATH=tests/upstream/shims` (declares the missing
torchvision operators); docs/rewards.md gives the commands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noisear_rl.reward_models import load_reward
from noisear_rl.reward_models.clip_rewards import clear_weight_cache
from noisear_rl.reward_models.hpsv2 import (
    HPSv2,
    clip_model_from_open_clip,
    open_clip_to_transformers,
    save_converted_hpsv2,
)
from noisear_rl.reward_models.tiny import tiny_clip_model, tiny_clip_tokenizer

PROMPTS = ["a red circle on the left", "two blue squares", "a green triangle above a yellow star"]


def to_open_clip_state_dict(clip) -> dict[str, torch.Tensor]:
    """The inverse mapping, written independently of the converter: transformers -> open_clip keys."""
    sd = clip.state_dict()
    out = {
        "logit_scale": sd["logit_scale"],
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T,
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
        "visual.proj": sd["visual_projection.weight"].T,
    }
    towers = [
        ("text_model.encoder.layers.", "transformer.resblocks."),
        ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
    ]
    for hf, oc in towers:
        for i in range(2):
            a, b = f"{hf}{i}.", f"{oc}{i}."
            for kind, name in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
                out[f"{b}attn.{name}"] = torch.cat([sd[f"{a}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for kind in ("weight", "bias"):
                out[f"{b}attn.out_proj.{kind}"] = sd[f"{a}self_attn.out_proj.{kind}"]
                out[f"{b}ln_1.{kind}"] = sd[f"{a}layer_norm1.{kind}"]
                out[f"{b}ln_2.{kind}"] = sd[f"{a}layer_norm2.{kind}"]
                out[f"{b}mlp.c_fc.{kind}"] = sd[f"{a}mlp.fc1.{kind}"]
                out[f"{b}mlp.c_proj.{kind}"] = sd[f"{a}mlp.fc2.{kind}"]
    return out


def test_conversion_round_trips_and_infers_the_config() -> None:
    clip = tiny_clip_model(seed=3)
    config, converted = open_clip_to_transformers(to_open_clip_state_dict(clip), vision_heads=2, text_heads=2)
    original = clip.state_dict()
    assert set(converted) == {k for k in original if not k.endswith("position_ids")}
    for key, value in converted.items():
        assert torch.equal(value, original[key]), key
    for tower in ("text_config", "vision_config"):
        ours, theirs = getattr(config, tower), getattr(clip.config, tower)
        for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act"):
            assert getattr(ours, field) == getattr(theirs, field), (tower, field)
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (32, 8)
    assert config.projection_dim == 16 and config.text_config.eos_token_id == 513


def test_conversion_rejects_other_architectures() -> None:
    state_dict = to_open_clip_state_dict(tiny_clip_model())
    state_dict["visual.attn_pool.query"] = torch.zeros(1)
    with pytest.raises(ValueError, match="visual.attn_pool.query"):
        open_clip_to_transformers(state_dict, vision_heads=2, text_heads=2)


def test_loads_an_official_format_checkpoint(tmp_path: Path) -> None:
    """`{"state_dict": ...}` in fp16 with DDP's `module.` prefix, as the hub's .pt files may hold."""
    clip = tiny_clip_model(seed=5, num_heads=16)  # HPSv2's ViT-H-14 head counts, at hidden size 32
    state_dict = {f"module.{k}": v.half() for k, v in to_open_clip_state_dict(clip).items()}
    torch.save({"state_dict": state_dict}, tmp_path / "HPS_v2_compressed.pt")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = HPSv2(clip_model=clip.half().float(), tokenizer=tiny_clip_tokenizer())(images, PROMPTS)
    clear_weight_cache()
    try:
        from_folder = load_reward("hpsv2", model=str(tmp_path), tokenizer=tiny_clip_tokenizer())
        from_file = load_reward("hpsv2", model=str(tmp_path / "HPS_v2_compressed.pt"), tokenizer=tiny_clip_tokenizer())
        torch.testing.assert_close(from_folder(images, PROMPTS), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(from_file(images, PROMPTS), expected, atol=1e-5, rtol=1e-5)
        save_converted_hpsv2(tmp_path / "HPS_v2_compressed.pt", tmp_path / "converted")
        converted = load_reward("hpsv2", model=str(tmp_path / "converted"), tokenizer=tiny_clip_tokenizer())
        torch.testing.assert_close(converted(images, PROMPTS), expected, atol=1e-5, rtol=1e-5)
    finally:
        clear_weight_cache()


def random_open_clip(module, seed: int):
    """A tiny open_clip CLIP whose every parameter is random (LayerNorms and biases included)."""
    torch.manual_seed(seed)
    model = module.CLIP(
        embed_dim=16,
        vision_cfg=module.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=module.CLIPTextCfg(context_length=77, vocab_size=514, width=32, heads=2, layers=2),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.5 if name.endswith(("proj", "projection", "embedding", "class_embedding")) else 0.2
            base = 1.0 if "ln" in name and name.endswith("weight") else 0.0
            parameter.copy_(base + scale * torch.randn_like(parameter))
        model.logit_scale.fill_(2.0)
    return model.eval()


@pytest.mark.parametrize("upstream_module", ["open_clip.model", "hpsv2.src.open_clip.model"])
def test_matches_open_clip_on_random_weights(upstream_module: str) -> None:
    """Against open_clip and against the copy of open_clip the `hpsv2` package ships and scores with."""
    module = pytest.importorskip(upstream_module, reason=f"{upstream_module} not installed (see module docstring)")
    upstream = random_open_clip(module, seed=11)
    clip = clip_model_from_open_clip(upstream.state_dict(), vision_heads=2, text_heads=2)
    tokenizer = tiny_clip_tokenizer()
    reward = HPSv2(clip_model=clip, tokenizer=tokenizer)

    images = torch.rand(3, 3, 48, 32, generator=torch.Generator().manual_seed(1))
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    after_eot = torch.cumsum(ids == 513, dim=1) > 1
    open_clip_ids = ids.masked_fill(after_eot, 0)  # open_clip pads with 0 after the end-of-text token
    with torch.no_grad():
        image_features = upstream.encode_image(reward.preprocess(images), normalize=True)
        text_features = upstream.encode_text(open_clip_ids, normalize=True)
    torch.testing.assert_close(reward.embed_images(images), image_features, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reward.embed_texts(PROMPTS), text_features, atol=1e-5, rtol=1e-4)
    expected = torch.diagonal(image_features @ text_features.T)  # hpsv2.score's formula
    torch.testing.assert_close(reward(images, PROMPTS), expected, atol=1e-5, rtol=1e-4)
    assert expected.std() > 1e-3  # the scores differ between samples: a meaningful comparison


def test_tokenizer_matches_open_clip_on_the_real_vocabulary() -> None:
    """A transformers CLIP tokenizer built from open_clip's BPE file tokenizes prompts identically."""
    open_clip_tokenizer = pytest.importorskip(
        "open_clip.tokenizer", reason="open_clip not installed (see module docstring)"
    )
    import gzip

    from transformers import CLIPTokenizer

    merges_text = gzip.open(open_clip_tokenizer.default_bpe()).read().decode("utf-8").split("\n")
    merges = merges_text[1 : 49152 - 256 - 2 + 1]
    symbols = list(open_clip_tokenizer.bytes_to_unicode().values())
    vocab = (
        symbols
        + [s + "</w>" for s in symbols]
        + ["".join(m.split()) for m in merges]
        + ["<|startoftext|>", "<|endoftext|>"]
    )
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges])
    prompts = [
        "A photo of an astronaut riding a horse on Mars, 4k, trending on ArtStation",
        "two  red   circles and a blue square!!",
        "Ein Hund im Schnee — café au lait, naïve",
        "word " * 100,
    ]
    theirs = open_clip_tokenizer.tokenize(prompts, context_length=77)
    ours = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    for a, b in zip(ours, theirs):
        end = int((b == 49407).nonzero()[0]) + 1
        assert a[:end].tolist() == b[:end].tolist()


@pytest.mark.parametrize(("height", "width"), [(40, 64), (64, 24), (32, 32)])
def test_preprocessing_matches_hpsv2_transform(height: int, width: int) -> None:
    """Upstream's eval transform (ToTensor, ResizeMaxSize, Normalize) on a PIL image vs ours."""
    transform = pytest.importorskip(
        "hpsv2.src.open_clip.transform", reason="hpsv2 not installed (see module docstring)"
    )
    from PIL import Image

    pixels = (torch.rand(height, width, 3, generator=torch.Generator().manual_seed(height)) * 255).to(torch.uint8)
    upstream = transform.image_transform(32, is_train=False, resize_longest_max=True)(Image.fromarray(pixels.numpy()))
    ours = HPSv2(clip_model=tiny_clip_model(), tokenizer=tiny_clip_tokenizer()).preprocess(
        pixels.permute(2, 0, 1)[None] / 255.0
    )
    torch.testing.assert_close(ours[0], upstream, atol=1e-5, rtol=1e-5)
