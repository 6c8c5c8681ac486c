"""Composite rewards: spec parsing, weighted sums, per-component details, per-prompt normalisation."""

from __future__ import annotations

import pytest
import torch

from noisear_rl.reward_models import RewardModel, RewardOutput, list_rewards, load_reward, register_reward
from noisear_rl.reward_models.composite import CompositeReward, RewardTerm, parse_reward_spec, per_prompt_zscore
from noisear_rl.reward_models.registry import REWARDS

PROMPTS = ["a cat", "a dog", "a cat", "a cat", "a dog", "a fish"]


@pytest.fixture
def toy_rewards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers three small rewards for one test, then restores the registry."""
    list_rewards()  # import the built-ins first, so the copy below holds them
    monkeypatch.setattr(REWARDS, "_entries", dict(REWARDS._entries))

    @register_reward("brightness")
    def brightness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))

    @register_reward("redness")
    class Redness(RewardModel):
        def __init__(self, scale: float = 1.0, device: str | None = None, differentiable: bool = False) -> None:
            super().__init__(differentiable=differentiable)
            self.scale = torch.nn.Parameter(torch.tensor(scale, device=device), requires_grad=False)

        def compute(self, images: torch.Tensor, prompts: list[str]) -> RewardOutput:
            red = images[:, 0].mean(dim=(1, 2))
            return RewardOutput(scores=self.scale * red, details={"red": red, "is_red": red > 0.5})

    @register_reward("prompt-length")
    def prompt_length(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([float(len(p)) for p in prompts])


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(len(PROMPTS), 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_parse_spec() -> None:
    assert parse_reward_spec("imagereward:1.0, pickscore:0.5") == [
        RewardTerm("imagereward", 1.0),
        RewardTerm("pickscore", 0.5),
    ]
    assert parse_reward_spec("shapes") == [RewardTerm("shapes", 1.0)]
    assert parse_reward_spec("a:-2,b:1e-3") == [RewardTerm("a", -2.0), RewardTerm("b", 1e-3)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty reward spec"),
        ("a:1,,b:2", "empty term at position 2"),
        ("a:", "'a' has ':' but no weight"),
        ("a:heavy", "weight 'heavy' of 'a' is not a number"),
        ("a:nan", "must be finite"),
        ("a:1,b:2,a:3", "names 'a' twice"),
        (":2", "has no reward name"),
        ("a:1:2", "weight '1:2' of 'a' is not a number"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reward_spec(spec)


def test_unknown_name_lists_valid_ones(toy_rewards: None) -> None:
    with pytest.raises(KeyError, match="unknown reward 'brightnes'.*valid names:.*brightness"):
        load_reward("brightnes:1.0,redness:2")


def test_weighted_sum_and_details(toy_rewards: None, images: torch.Tensor) -> None:
    reward = load_reward("brightness:2.0,redness:-0.5,prompt-length:0.1")
    assert isinstance(reward, CompositeReward)
    output = reward.evaluate(images, PROMPTS)
    brightness = images.mean(dim=(1, 2, 3))
    red = images[:, 0].mean(dim=(1, 2))
    length = torch.tensor([float(len(p)) for p in PROMPTS])
    torch.testing.assert_close(output.scores, 2.0 * brightness - 0.5 * red + 0.1 * length)
    torch.testing.assert_close(output.details["brightness"], brightness)
    torch.testing.assert_close(output.details["redness"], red)
    torch.testing.assert_close(output.details["redness/red"], red)
    assert torch.equal(output.details["redness/is_red"], red > 0.5)
    torch.testing.assert_close(output.details["prompt-length"], length)
    assert "unnormalized" not in output.details


def test_bare_name_means_weight_one(toy_rewards: None, images: torch.Tensor) -> None:
    torch.testing.assert_close(
        load_reward("brightness,redness")(images, PROMPTS), load_reward("brightness:1,redness:1.0")(images, PROMPTS)
    )


def test_component_kwargs_and_shared_kwargs(toy_rewards: None, images: torch.Tensor) -> None:
    reward = CompositeReward.from_spec(
        "redness:1.0,brightness", component_kwargs={"redness": {"scale": 3.0}}, device="cpu"
    )
    torch.testing.assert_close(reward.evaluate(images, PROMPTS).details["redness"], 3.0 * images[:, 0].mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="not in the spec"):
        CompositeReward.from_spec("redness", component_kwargs={"brightness": {}})
    with pytest.raises(TypeError, match="component_kwargs"):
        CompositeReward.from_spec("redness,brightness", scale=2.0)  # the function reward takes no scale


def test_per_prompt_normalisation(toy_rewards: None, images: torch.Tensor) -> None:
    reward = CompositeReward.from_spec("brightness:2,redness", normalize="per_prompt")
    output = reward.evaluate(images, PROMPTS)
    total = output.details["unnormalized"]
    torch.testing.assert_close(total, 2 * images.mean(dim=(1, 2, 3)) + images[:, 0].mean(dim=(1, 2)))
    for prompt in set(PROMPTS):
        index = [i for i, p in enumerate(PROMPTS) if p == prompt]
        group = output.scores[index]
        if len(index) == 1:
            assert group.item() == 0.0  # nothing to compare a single sample with
        else:
            torch.testing.assert_close(group.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
            torch.testing.assert_close(group.std(unbiased=False), torch.tensor(1.0))
            raw = total[index]
            torch.testing.assert_close(group, (raw - raw.mean()) / raw.std(unbiased=False))
    with pytest.raises(ValueError, match="unknown normalize"):
        CompositeReward.from_spec("brightness", normalize="global")  # type: ignore[arg-type]


def test_zscore_clamps_the_std_of_equal_scores() -> None:
    scores = torch.tensor([1.0, 1.0, 1.0, 5.0])
    normalized = per_prompt_zscore(scores, ["p", "p", "p", "q"])
    assert torch.isfinite(normalized).all() and torch.equal(normalized, torch.zeros(4))


def test_gradients_flow_through_differentiable_components(toy_rewards: None, images: torch.Tensor) -> None:
    pixels = images.clone().requires_grad_(True)
    frozen = load_reward("brightness:1,redness:2")(pixels, PROMPTS)
    assert not frozen.requires_grad
    live = load_reward("brightness:1,redness:2", differentiable=True)(pixels, PROMPTS)
    live.sum().backward()
    expected = torch.full_like(images, 1 / images[0].numel())
    expected[:, 0] += 2 / images[0, 0].numel()
    torch.testing.assert_close(pixels.grad, expected)


def test_composite_moves_with_to(toy_rewards: None) -> None:
    reward = load_reward("redness:1,brightness:1", device="cpu")
    assert reward.device == torch.device("cpu")
    assert [r.device for r in reward.rewards] == [torch.device("cpu")] * 2
    assert "spec='redness:1,brightness:1'" in repr(reward)
