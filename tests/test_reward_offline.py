"""Offline, missing weights fail fast with a message naming the hub id, the files and the fix."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from noisear_rl.reward_models import load_reward
from noisear_rl.reward_models.clip_rewards import clear_weight_cache
from noisear_rl.hub import WeightsUnavailableError
from noisear_rl.reward_models.tiny import tiny_clip_model, tiny_clip_tokenizer


@pytest.fixture(autouse=True)
def offline_empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and an empty hub cache, whatever this machine has cached."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    clear_weight_cache()
    yield
    clear_weight_cache()


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        (
            "clipscore",
            {},
            [
                "'openai/clip-vit-large-patch14'",
                "config.json",
                "hf download openai/clip-vit-large-patch14 --local-dir DIR",
                "model=DIR",
            ],
        ),
        ("pickscore", {}, ["'yuvalkirstain/PickScore_v1'", "model=DIR"]),
        ("hpsv2", {}, ["'xswu/HPSv2'", "hf download xswu/HPSv2 HPS_v2_compressed.pt --local-dir DIR", "model=DIR"]),
        ("hpsv2.1", {}, ["'xswu/HPSv2'", "HPS_v2.1_compressed.pt", "model=DIR"]),
        (
            "aesthetic",
            {"clip_model": "tiny"},
            ["'camenduru/improved-aesthetic-predictor'", "sac+logos+ava1-l14-linearMSE.pth", "head=DIR"],
        ),
        (
            "pickscore",
            {"clip_model": "tiny"},
            ["'laion/CLIP-ViT-H-14-laion2B-s32B-b79K'", "tokenizer.json", "processor=DIR"],
        ),
    ],
)
def test_offline_error_names_repo_files_and_fix(name: str, kwargs: dict, expected: list[str]) -> None:
    if kwargs.get("clip_model") == "tiny":
        kwargs = {"clip_model": tiny_clip_model()}
    with pytest.raises(WeightsUnavailableError) as info:
        load_reward(name, **kwargs)
    message = str(info.value)
    for text in [*expected, "offline mode is on", "hf download"]:
        assert text in message, (text, message)
    assert isinstance(info.value, OSError)  # callers that catch OSError keep working


def test_composite_spec_reports_the_missing_component() -> None:
    with pytest.raises(WeightsUnavailableError, match="openai/clip-vit-large-patch14"):
        load_reward("jpeg-compressibility:1.0,clipscore:0.5")


def test_missing_local_paths_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-clip"
    with pytest.raises(WeightsUnavailableError, match=f"'{missing}'.*does not exist"):
        load_reward("clipscore", model=str(missing))
    with pytest.raises(WeightsUnavailableError, match="head.pth.*`head`.*does not exist"):
        load_reward("aesthetic", clip_model=tiny_clip_model(), head=str(tmp_path / "head.pth"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError, match="HPS_v2_compressed.pt.*does not exist"):
        load_reward("hpsv2", model=str(empty), tokenizer=tiny_clip_tokenizer())
