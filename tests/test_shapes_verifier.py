"""The `shapes` verifier: exact on ground-truth renders, strict on wrong ones, graded in [0, 1]."""

from __future__ import annotations

import random

import pytest
import torch

from noisear_rl.worlds.shapes import COLOURS, POSITIONS, SHAPES, ShapeObject, parse_prompt, render_batch, sample_prompts, scene_to_prompt
from noisear_rl.reward_models import load_reward
from noisear_rl.worlds.shapes.verifier import CRITERIA


@pytest.fixture(scope="module")
def renders() -> tuple[list[str], torch.Tensor]:
    prompts = sample_prompts(240, seed=11)
    return prompts, render_batch(prompts, seed=11)


def _mutate(prompt: str, kind: str, rng: random.Random) -> str:
    """The prompt with one object's colour, shape or position changed (still a valid scene)."""
    scene = list(parse_prompt(prompt))
    i = rng.randrange(len(scene))
    obj = scene[i]
    if kind == "colour":
        used = {o.colour for o in scene}
        obj = ShapeObject(rng.choice([c for c in COLOURS if c not in used]), obj.shape, obj.position)
    elif kind == "shape":
        obj = ShapeObject(obj.colour, rng.choice([s for s in SHAPES if s != obj.shape]), obj.position)
    else:
        obj = ShapeObject(obj.colour, obj.shape, rng.choice([p for p in POSITIONS if p != obj.position]))
    scene[i] = obj
    return scene_to_prompt(scene)


def test_clean_renders_pass_every_check(renders) -> None:
    prompts, images = renders
    out = load_reward("shapes").evaluate(images, prompts)
    assert torch.equal(out.scores, torch.ones(len(prompts)))
    assert set(CRITERIA) | {"success"} <= set(out.details)
    assert all(out.details[name].min() == 1 for name in (*CRITERIA, "success"))


def test_scoring_objects_already_read_is_the_reward(renders) -> None:
    """`score_drawn(read(images))` is what the reward computes, on passing and failing prompts."""
    prompts, images = renders
    rng = random.Random(1)
    prompts = [p if i % 2 else _mutate(p, rng.choice(["colour", "shape", "position"]), rng) for i, p in enumerate(prompts)]
    verifier = load_reward("shapes")
    direct, judged = verifier.evaluate(images, prompts), verifier.score_drawn(verifier.read(images), prompts)
    assert torch.equal(direct.scores, judged.scores) and 0 < direct.details["success"].mean() < 1
    assert all(torch.equal(direct.details[k], judged.details[k]) for k in direct.details)


@pytest.mark.parametrize("kind", ["colour", "shape", "position"])
def test_wrong_attribute_fails_with_a_graded_score(renders, kind: str) -> None:
    prompts, images = renders
    rng = random.Random(0)
    wrong = [_mutate(p, kind, rng) for p in prompts]
    out = load_reward("shapes").evaluate(images, wrong)
    assert out.details["success"].max() == 0 and out.details[kind].max() == 0
    assert (out.scores < 1).all() and (out.scores >= 0).all()
    assert out.scores.mean() > 0.3  # the other checks still pass: the score is graded


def test_extra_or_missing_objects_fail_the_count(renders) -> None:
    prompts, images = renders
    pairs = [(p, img) for p, img in zip(prompts, images) if " and " in p]
    first_only = [p.split(" and ")[0] for p, _ in pairs]
    out = load_reward("shapes").evaluate(torch.stack([img for _, img in pairs]), first_only)
    assert out.details["count"].max() == 0 and out.details["success"].max() == 0
    blank = load_reward("shapes").evaluate(torch.zeros(2, 3, 32, 32), prompts[:2])
    assert torch.equal(blank.scores, torch.zeros(2))


def test_tolerates_mild_pixel_noise(renders) -> None:
    prompts, images = renders
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert load_reward("shapes").evaluate(noisy, prompts).details["success"].mean() >= 0.97


def test_score_is_one_exactly_when_successful(renders) -> None:
    prompts, images = renders
    shuffled = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]
    out = load_reward("shapes").evaluate(shuffled, prompts)
    assert torch.equal(out.scores == 1, out.details["success"].bool())
    assert 0 < out.details["success"].mean() < 0.5


def test_unknown_words_raise_listing_the_vocabulary(renders) -> None:
    _, images = renders
    with pytest.raises(ValueError, match="vocabulary"):
        load_reward("shapes")(images[:1], ["a red hexagon on the left"])


def test_failure_kind_names_what_a_render_got_wrong() -> None:
    """`failures.failure_kind` on renders of known mistakes for "a red circle on the left and a blue
    square on the right": swaps and leaks are binding, a third attribute or object is not."""
    from noisear_rl.worlds.shapes.failures import binding_failures, failure_kinds

    prompt = "a red circle on the left and a blue square on the right"
    red, blue = parse_prompt(prompt)
    drawn = {
        "success": (red, blue),
        "binding": (ShapeObject("blue", "circle", "left"), ShapeObject("red", "square", "right")),  # colours swapped
        "binding ": (red, ShapeObject("blue", "circle", "right")),  # the circle's shape leaks
        "binding  ": (ShapeObject("blue", "circle", "left"), blue),  # the blue leaks: both objects blue
        "binding, wrong count": (red, ShapeObject("blue", "circle", "right"), ShapeObject("yellow", "triangle", "top")),
        "other attribute": (red, ShapeObject("blue", "triangle", "right")),
        "other attribute ": (ShapeObject("green", "circle", "left"), blue),
        "count": (red, blue, ShapeObject("yellow", "triangle", "top")),
        "one object": (ShapeObject("blue", "circle", "left"),),
    }
    images = render_batch(list(drawn.values()), seed=3)
    prompts = [prompt] * (len(drawn) - 1) + ["a red circle on the left"]
    read = load_reward("shapes").read(images)
    assert failure_kinds(read, prompts) == [name.strip() for name in drawn]
    swapped = binding_failures(read, prompts)
    assert swapped.tolist() == [name == "binding" for name in drawn]  # only the full swap passes a swapped prompt


def test_measure_reports_each_noise_seed_and_what_failures_got_wrong(tmp_path) -> None:
    """`measure` on a tiny random world: its pooled golden-step counts are the sums of the per-seed
    ones, the failure kinds' shares sum to one, and it writes results.json and grid.png."""
    import json

    from noisear_rl.worlds.shapes import build_tiny_shapes_pipeline
    from noisear_rl.worlds.shapes.failures import FAILURE_KINDS
    from noisear_rl.worlds.shapes.measure import MeasureConfig, measure

    build_tiny_shapes_pipeline(seed=0).save_pretrained(tmp_path / "world")
    config = MeasureConfig(output_dir=tmp_path / "out", model_path=tmp_path / "world", num_noises=2, golden_noises=2,
                           max_prompts=6, grid_prompts=2, seed=5)
    results = measure(config)
    golden = results["golden"]
    assert [r["seed"] for r in golden["per_noise_seed"]] == [5, 6]
    assert sum(r["fixed"] for r in golden["per_noise_seed"]) == golden["fixed"]
    assert sum(r["broken"] for r in golden["per_noise_seed"]) == golden["broken"]
    assert sum(r["golden"] for r in golden["per_noise_seed"]) / 2 == pytest.approx(golden["success"])
    shares = results["gaussian"]["failure_kinds"]
    assert list(shares) == list(FAILURE_KINDS) and sum(shares.values()) == pytest.approx(1.0)  # a random world fails
    assert json.loads((tmp_path / "out" / "results.json").read_text())["num_prompts"] == 6
    assert (tmp_path / "out" / "grid.png").is_file()


def test_measure_sweep_compares_each_point_with_the_default_on_the_same_noises(tmp_path) -> None:
    """A sweep point at the default settings reproduces the default exactly (change 0, no flips);
    another point's change is its success minus the default's on the same noises, inside its CI."""
    from noisear_rl.worlds.shapes import build_tiny_shapes_pipeline
    from noisear_rl.worlds.shapes.measure import MeasureConfig, measure

    pipe = build_tiny_shapes_pipeline(seed=0)
    pipe.save_pretrained(tmp_path / "world")
    default = pipe.config.default_guidance_scale
    config = MeasureConfig(output_dir=tmp_path / "out", model_path=tmp_path / "world", num_noises=3, golden_noises=0,
                           max_prompts=8, grid_prompts=2, sweep_guidance=(default, 3.0), sweep_noises=2)
    sweep = measure(config)["sweep"]
    same, other = sweep["points"]
    assert sweep["noises_per_prompt"] == 2 and len(other["per_noise_seed"]) == 2
    assert same["success"] == pytest.approx(sweep["default_success"])
    assert (same["change_vs_default"], same["fixed"], same["broken"]) == (0.0, 0, 0)
    assert other["change_vs_default"] == pytest.approx(other["success"] - sweep["default_success"])
    assert other["change_ci95"][0] <= other["change_vs_default"] <= other["change_ci95"][1]
    assert other["fixed"] - other["broken"] == round(other["change_vs_default"] * 2 * 8)
