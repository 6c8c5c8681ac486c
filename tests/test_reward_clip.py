"""CLIP-family rewards (clipscore, pickscore, aesthetic, hpsv2) on tiny random CLIP models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from noisear_rl.reward_models import load_reward
from noisear_rl.reward_models.clip_rewards import (
    AestheticMLP,
    AestheticScore,
    CLIPScore,
    PickScore,
    clear_weight_cache,
)
from noisear_rl.reward_models.hpsv2 import HPSv2, HPSv21
from noisear_rl.reward_models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipPreprocess
from noisear_rl.reward_models.tiny import tiny_aesthetic_mlp, tiny_clip_model, tiny_clip_tokenizer

PROMPTS = ["a red circle on the left", "two blue squares", "a red circle on the left", "a green triangle"]


def build(name: str, seed: int = 0, **kwargs):
    """The reward `name` on a tiny random CLIP (seeded), as a user would build it with parts."""
    clip = tiny_clip_model(seed)
    if name == "aesthetic":
        return AestheticScore(clip_model=clip, mlp=tiny_aesthetic_mlp(seed), **kwargs)
    cls = {"clipscore": CLIPScore, "pickscore": PickScore, "hpsv2": HPSv2, "hpsv2.1": HPSv21}[name]
    return cls(clip_model=clip, tokenizer=tiny_clip_tokenizer(), **kwargs)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(len(PROMPTS), 3, 48, 40, generator=torch.Generator().manual_seed(1))


def reference_embeddings(clip, images: torch.Tensor, prompts: list[str], preprocess: ClipPreprocess):
    """Unit embeddings through CLIPModel's own feature methods, prompt by prompt (no dedup, no batching)."""
    tokenizer = tiny_clip_tokenizer()
    image_embeds, text_embeds = [], []
    for image, prompt in zip(images, prompts):
        vision = clip.vision_model(pixel_values=preprocess(image[None])).pooler_output
        image_embeds.append(clip.visual_projection(vision))
        tokens = tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        text = clip.text_model(**tokens).pooler_output
        text_embeds.append(clip.text_projection(text))
    image_embeds, text_embeds = torch.cat(image_embeds), torch.cat(text_embeds)
    return (
        image_embeds / image_embeds.norm(dim=-1, keepdim=True),
        text_embeds / text_embeds.norm(dim=-1, keepdim=True),
    )


@pytest.mark.parametrize("name", ["clipscore", "pickscore", "hpsv2", "aesthetic"])
def test_batch_equals_one_by_one(name: str, images: torch.Tensor) -> None:
    reward = build(name)
    batched = reward.evaluate(images, PROMPTS)
    singles = [reward.evaluate(images[i : i + 1], [prompt]) for i, prompt in enumerate(PROMPTS)]
    torch.testing.assert_close(batched.scores, torch.cat([s.scores for s in singles]), atol=1e-5, rtol=1e-5)
    for key, value in batched.details.items():
        torch.testing.assert_close(value, torch.cat([s.details[key] for s in singles]), atol=1e-5, rtol=1e-5)
    assert batched.scores.shape == (len(PROMPTS),) and batched.scores.dtype == torch.float32


def test_scores_follow_the_official_formulas(images: torch.Tensor) -> None:
    clip = tiny_clip_model(0)
    crop = ClipPreprocess.square(32)
    image_embeds, text_embeds = reference_embeddings(clip, images, PROMPTS, crop)
    cosine = (image_embeds * text_embeds).sum(-1)
    assert cosine.abs().min() > 1e-3  # a real check: the formulas below are not all zero

    clipscore = build("clipscore").evaluate(images, PROMPTS)
    torch.testing.assert_close(clipscore.details["cosine"], cosine, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clipscore.scores, 2.5 * cosine.clamp_min(0), atol=1e-5, rtol=1e-5)

    pickscore = build("pickscore").evaluate(images, PROMPTS)
    torch.testing.assert_close(pickscore.scores, clip.logit_scale.exp() * cosine, atol=1e-4, rtol=1e-5)

    aesthetic = build("aesthetic")(images, PROMPTS)
    torch.testing.assert_close(aesthetic, tiny_aesthetic_mlp(0)(image_embeds), atol=1e-5, rtol=1e-5)

    # HPSv2 pads instead of cropping: on these non-square images its score differs from the
    # cropped cosine, and equals the cosine under the padding transform.
    hps = build("hpsv2")(images, PROMPTS)
    padded_image_embeds, _ = reference_embeddings(clip, images, PROMPTS, ClipPreprocess.square(32, mode="pad"))
    torch.testing.assert_close(hps, (padded_image_embeds * text_embeds).sum(-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hps, cosine, atol=1e-3)


def test_hpsv2_versions() -> None:
    assert build("hpsv2").version == "v2.0"
    assert build("hpsv2.1").version == "v2.1"
    with pytest.raises(ValueError, match="v2.0, v2.1"):
        build("hpsv2", version="v3")


def test_different_prompts_give_different_scores(images: torch.Tensor) -> None:
    reward = build("pickscore")
    same_images = images[:1].expand(2, -1, -1, -1)
    scores = reward(same_images, ["a red circle", "a photo of the moon at night"])
    assert (scores[0] - scores[1]).abs() > 1e-4


@pytest.mark.parametrize("name", ["clipscore", "pickscore", "hpsv2", "aesthetic"])
def test_no_grad_by_default_and_gradients_when_differentiable(name: str, images: torch.Tensor) -> None:
    pixels = images.clone().requires_grad_(True)
    assert not build(name)(pixels, PROMPTS).requires_grad

    reward = build(name, differentiable=True)
    scores = reward.evaluate(pixels, PROMPTS)
    target = scores.details["cosine"] if name == "clipscore" else scores.scores  # clipscore clamps at 0
    target.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in reward.parameters())  # the reward model stays frozen


def test_device_and_dtype(images: torch.Tensor) -> None:
    reward = build("pickscore", device="cpu", dtype="float64")
    assert reward.device == torch.device("cpu") and reward.dtype == torch.float64
    scores = reward(images.double(), PROMPTS)  # any float dtype in, float32 scores out
    assert scores.dtype == torch.float32
    reference = build("pickscore")(images, PROMPTS)
    torch.testing.assert_close(scores, reference, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown dtype"):
        build("pickscore", dtype="float13")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["clipscore", "pickscore", "hpsv2", "aesthetic"])
def test_cuda_matches_cpu(name: str, images: torch.Tensor) -> None:
    cpu = build(name)(images, PROMPTS)
    reward = build(name, device="cuda")
    assert reward.device.type == "cuda"
    torch.testing.assert_close(reward(images, PROMPTS).cpu(), cpu, atol=1e-4, rtol=1e-4)  # CPU images moved


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Writes a tiny CLIP as a hub-style folder: weights, tokenizer, preprocessor config."""
    tiny_clip_model(seed).save_pretrained(folder)
    tiny_clip_tokenizer().save_pretrained(folder)
    processor = {
        "size": {"shortest_edge": 32},
        "crop_size": {"height": 32, "width": 32},
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture
def fresh_cache():
    clear_weight_cache()
    yield
    clear_weight_cache()


def test_load_from_local_folders_once_per_process(tmp_path: Path, images: torch.Tensor, fresh_cache) -> None:
    folder = save_tiny_clip(tmp_path / "clip")
    first = load_reward("clipscore", model=str(folder))
    again = load_reward("clipscore", model=str(folder))
    assert first.clip is again.clip  # loaded once, shared

    torch.save(tiny_aesthetic_mlp(3).state_dict(), tmp_path / "head.pth")
    aesthetic = load_reward("aesthetic", model=str(folder), head=str(tmp_path / "head.pth"))
    assert aesthetic.clip is first.clip  # aesthetic and clipscore share one CLIP

    pickscore = load_reward("pickscore", model=str(folder), processor=str(folder))
    expected = build("pickscore")(images, PROMPTS)
    torch.testing.assert_close(pickscore(images, PROMPTS), expected, atol=1e-5, rtol=1e-5)
    expected_aesthetic = tiny_aesthetic_mlp(3)(first.embed_images(images))
    torch.testing.assert_close(aesthetic(images, PROMPTS), expected_aesthetic, atol=1e-5, rtol=1e-5)


def test_aesthetic_head_loads_the_official_key_layout(tmp_path: Path) -> None:
    official: dict[str, torch.Tensor] = {}
    sizes = [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    for index, (fan_in, fan_out) in zip([0, 2, 4, 6, 7], sizes):
        official[f"layers.{index}.weight"] = torch.randn(fan_out, fan_in)
        official[f"layers.{index}.bias"] = torch.randn(fan_out)
    mlp = AestheticMLP()
    mlp.load_state_dict(official)  # strict: the official checkpoint's keys and shapes
    embeds = torch.randn(3, 768)
    expected = embeds
    for index in [0, 2, 4, 6, 7]:  # no activations: a chain of linear maps
        expected = expected @ official[f"layers.{index}.weight"].T + official[f"layers.{index}.bias"]
    torch.testing.assert_close(mlp.eval()(embeds), expected.squeeze(-1), atol=1e-3, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("clipscore", 0.0, 2.5),
        ("pickscore", 5.0, 35.0),
        ("hpsv2", -1.0, 1.0),
        ("hpsv2.1", -1.0, 1.0),
        ("aesthetic", 0.0, 10.0),
    ],
)
def test_real_weights_score_in_range_and_prefer_the_matching_caption(name: str, low: float, high: float) -> None:
    """With the official checkpoints (in the hub cache or downloadable): plausible scores."""
    from noisear_rl.hub import WeightsUnavailableError

    try:
        reward = load_reward(name)
    except WeightsUnavailableError as err:
        pytest.skip(str(err))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 512), torch.linspace(-1, 1, 512), indexing="ij")
    disc = (xx**2 + yy**2 < 0.4).float()
    image = torch.stack([torch.ones_like(disc), 1 - disc, 1 - disc])  # a red disc on white
    scores = reward(
        image[None].expand(2, -1, -1, -1), ["a red circle on a white background", "a crowded city street at night"]
    )
    assert low <= scores.min() and scores.max() <= high, scores
    if name != "aesthetic":  # the aesthetic score ignores the prompt
        assert scores[0] > scores[1], scores
