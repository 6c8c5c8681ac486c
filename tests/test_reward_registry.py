"""The reward registry: decorators, plain functions, built-in names, lazy entry-point plug-ins."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from noisear_rl.reward_models import RewardModel, RewardOutput, list_rewards, load_reward, register_reward
from noisear_rl.reward_models.registry import REWARDS, FunctionReward

BUILTINS = ["aesthetic", "clipscore", "hpsv2", "hpsv2.1", "jpeg-compressibility", "jpeg-incompressibility", "pickscore"]


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    list_rewards()  # import the built-ins first, so the copy below holds them
    monkeypatch.setattr(REWARDS, "_entries", dict(REWARDS._entries))


def test_builtins_are_registered() -> None:
    assert set(BUILTINS) <= set(list_rewards())


def test_register_class_and_function(clean_registry: None) -> None:
    @register_reward("test-mean")
    class MeanReward(RewardModel):
        def compute(self, images: torch.Tensor, prompts: list[str]) -> RewardOutput:
            return RewardOutput(scores=images.mean(dim=(1, 2, 3)))

    @register_reward("test-max")
    def max_reward(images: torch.Tensor, prompts: list[str], offset: float = 0.0) -> torch.Tensor:
        return images.amax(dim=(1, 2, 3)) + offset

    images = torch.rand(3, 3, 4, 4)
    assert isinstance(load_reward("test-mean"), MeanReward)
    torch.testing.assert_close(load_reward("test-mean")(images, ["a"] * 3), images.mean(dim=(1, 2, 3)))
    function_reward = load_reward("test-max", offset=1.0, device="cpu")
    assert isinstance(function_reward, FunctionReward) and function_reward.device == torch.device("cpu")
    torch.testing.assert_close(function_reward(images, ["a"] * 3), images.amax(dim=(1, 2, 3)) + 1.0)
    assert {"test-mean", "test-max"} <= set(list_rewards())
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test-max")(lambda images, prompts: images.sum())


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="unknown reward model 'pickscor'; valid names: .*pickscore"):
        load_reward("pickscor")


def test_wrong_inputs_are_rejected_clearly() -> None:
    reward = load_reward("jpeg-compressibility")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reward(torch.full((1, 3, 8, 8), 2.0), ["a"])
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        reward(torch.rand(2, 3, 8, 8), ["a"])
    with pytest.raises(ValueError, match="NaN"):
        reward(torch.full((1, 3, 8, 8), float("nan")), ["a"])


def test_entry_point_plugins_load_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: None) -> None:
    """A third-party distribution adds a reward through the `noisear_rl.reward_models` group."""
    (tmp_path / "noisear_plugin_demo.py").write_text(
        textwrap.dedent(
            """
            import torch

            def darkness(images, prompts):
                return 1.0 - images.mean(dim=(1, 2, 3))
            """
        )
    )
    dist_info = tmp_path / "noisear_plugin_demo-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: noisear-plugin-demo\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[noisear_rl.reward_models]\ndarkness = noisear_plugin_demo:darkness\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "noisear_plugin_demo", raising=False)

    assert "darkness" in list_rewards()
    assert "noisear_plugin_demo" not in sys.modules  # listed without importing the plug-in
    images = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(load_reward("darkness")(images, ["a", "b"]), 1.0 - images.mean(dim=(1, 2, 3)))
    assert "noisear_plugin_demo" in sys.modules
    combined = load_reward("darkness:1,jpeg-compressibility:0")(images, ["a", "b"])
    torch.testing.assert_close(combined, 1.0 - images.mean(dim=(1, 2, 3)))
