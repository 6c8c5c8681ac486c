"""The Shapes world's dataset: prompts, parsing, the renderer and the text encoder's vocabulary."""

from __future__ import annotations

import pytest
import torch

from noisear_rl.worlds.shapes import (
    COLOURS,
    POSITIONS,
    VOCABULARY,
    ShapesTextEncoder,
    evaluation_prompts,
    parse_prompt,
    render,
    render_batch,
    sample_prompts,
    scene_to_prompt,
    training_prompts,
)
from noisear_rl.worlds.shapes.world import OPPOSITE, all_scenes


def test_sample_prompts_is_deterministic_and_mixes_one_and_two_objects() -> None:
    prompts = sample_prompts(500, seed=3)
    assert prompts == sample_prompts(500, seed=3)
    assert prompts != sample_prompts(500, seed=4)
    two = sum(" and " in p for p in prompts) / len(prompts)
    assert 0.5 < two < 0.7
    assert set(prompts) <= set(training_prompts())  # nothing drawn by default is an evaluation prompt


def test_every_scene_round_trips_through_its_prompt() -> None:
    scenes = all_scenes()
    assert len(scenes) == 72 + 1080
    for scene in scenes:
        assert parse_prompt(scene_to_prompt(scene)) == scene
    for a, b in (s for s in scenes if len(s) == 2):
        assert b.position == OPPOSITE[a.position] and a.colour != b.colour


def test_evaluation_prompts_are_fixed_distinct_and_mostly_two_objects() -> None:
    prompts = evaluation_prompts()
    assert prompts == evaluation_prompts()
    assert len(prompts) == 564 and len(set(prompts)) == len(prompts)
    assert sum(" and " in p for p in prompts) == 540
    assert sum(" and " not in p for p in prompts) == 24


def test_training_and_evaluation_splits_are_disjoint_and_cover_the_world() -> None:
    training, evaluation = training_prompts(), evaluation_prompts()
    assert len(training) == 588 and sum(" and " in p for p in training) == 540
    assert not set(training) & set(evaluation)
    assert set(training) | set(evaluation) == {scene_to_prompt(s) for s in all_scenes()}


def test_todays_sixteen_word_prompts_stay_valid() -> None:
    from noisear_rl.worlds.shapes import check_prompt

    for prompt in ("a red circle on the left and a blue square on the right", "a yellow triangle on the top"):
        check_prompt(prompt)
    assert {"magenta", "cyan"} <= set(COLOURS)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("!!!", "at least one object"),
        ("a red circle", "exactly one colour"),
        ("red", "exactly one colour"),
        ("on the", "exactly one colour"),
        ("a red circle on the left and", "exactly one colour"),
        ("a red circle on the left and a red square on the right", "different colours"),
        ("a red circle on the left and a blue square on the top", "opposite"),
        ("a purple circle on the left", "vocabulary"),
    ],
)
def test_check_prompt_rejects_what_is_not_in_the_language(prompt: str, message: str) -> None:
    from noisear_rl.worlds.shapes import check_prompt

    with pytest.raises(ValueError, match=message):
        check_prompt(prompt)


def test_parsing_is_case_and_punctuation_tolerant() -> None:
    assert parse_prompt("A Red circle, on the LEFT.") == parse_prompt("a red circle on the left")


def test_unknown_word_raises_and_lists_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="vocabulary") as info:
        parse_prompt("a purple circle on the left")
    assert "purple" in str(info.value) and all(word in str(info.value) for word in VOCABULARY)
    with pytest.raises(ValueError, match="exactly one colour"):
        parse_prompt("a red circle")


def test_render_draws_the_requested_colour_at_the_requested_place() -> None:
    for colour, rgb in COLOURS.items():
        for position, (dx, dy) in POSITIONS.items():
            image = render(f"a {colour} square on the {position}", rng=0)
            assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
            x, y = int(16 + dx), int(16 + dy)
            assert torch.allclose(image[:, y, x], torch.tensor(rgb))
            assert image[:, 32 - y - 1, 32 - x - 1].max() == 0  # the opposite side is black


def test_render_batch_is_deterministic_in_the_seed_and_jitters() -> None:
    prompts = ["a blue circle on the top and a red triangle on the bottom"] * 4
    a, b = render_batch(prompts, seed=1), render_batch(prompts, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # jittered size and placement
    assert not torch.equal(a, render_batch(prompts, seed=2))
    assert render("").abs().sum() == 0  # the empty scene is black


def test_text_encoder_tokenizes_the_vocabulary_and_rejects_unknown_words() -> None:
    torch.manual_seed(0)
    encoder = ShapesTextEncoder(hidden_size=16, num_layers=1, num_heads=2)
    ids = encoder.tokenize(["a red circle on the left", "", "A RED circle, on the left!"])
    assert ids.shape == (3, 16) and (ids[:, 0] == 1).all()
    assert torch.equal(ids[0], ids[2]) and (ids[1, 1:] == 0).all()
    assert encoder.encode(["a red circle on the left"]).shape == (1, 16, 16)
    with pytest.raises(ValueError, match="vocabulary"):
        encoder.tokenize(["a red cube on the left"])


def test_attribute_keys_bind_each_attribute_to_its_objects_position() -> None:
    from noisear_rl.worlds.shapes.world import attribute_keys

    assert attribute_keys("a red circle on the left and a blue square on the right") == [
        ("red", "left"), ("circle", "left"), ("blue", "right"), ("square", "right"),
    ]


def test_attribute_means_average_the_rows_of_every_prompt_with_the_key() -> None:
    from noisear_rl.worlds.shapes.world import attribute_means

    prompts = ["a red circle on the left", "a red square on the left and a blue circle on the right", "a blue circle on the top"]
    values = torch.tensor([[1.0], [3.0], [10.0]])
    means, counts = attribute_means(values, prompts)
    assert counts[("red", "left")] == 2 and float(means[("red", "left")]) == 2.0
    assert counts[("circle", "left")] == 1 and float(means[("circle", "left")]) == 1.0
    assert float(means[("blue", "top")]) == 10.0 and ("blue", "left") not in means


def test_scene_tokens_state_each_objects_bindings() -> None:
    from noisear_rl.worlds.shapes.world import ATTRIBUTE_KEYS, scene_tokens

    tokens = scene_tokens(["a red circle on the left and a blue square on the right", "a green triangle on the top", ""])
    assert tokens.shape == (3, 2, len(ATTRIBUTE_KEYS)) == (3, 2, 36)
    on = lambda row, slot: {ATTRIBUTE_KEYS[i] for i in torch.nonzero(tokens[row, slot]).flatten().tolist()}  # noqa: E731
    assert on(0, 0) == {("red", "left"), ("circle", "left")}
    assert on(0, 1) == {("blue", "right"), ("square", "right")}
    assert on(1, 0) == on(1, 1) == {("green", "top"), ("triangle", "top")}  # one object, repeated
    assert tokens[2].sum() == 0
    # The same words with the bindings swapped give other tokens.
    swapped = scene_tokens(["a blue circle on the left and a red square on the right"])
    assert not torch.equal(swapped[0], tokens[0])
    with pytest.raises(ValueError, match="unknown word"):
        scene_tokens(["a red cat on the left"])


def test_swapped_bindings_keep_the_words_and_change_what_goes_where() -> None:
    from noisear_rl.worlds.shapes import check_prompt
    from noisear_rl.worlds.shapes.world import SWAPS, attribute_keys, swap_binding, tokenize_words

    prompt = "a red circle on the left and a blue square on the right"
    swapped = {swap: scene_to_prompt(swap_binding(parse_prompt(prompt), swap)) for swap in SWAPS}
    assert swapped == {
        "colours": "a blue circle on the left and a red square on the right",
        "shapes": "a red square on the left and a blue circle on the right",
        "sides": "a red circle on the right and a blue square on the left",
    }
    for other in swapped.values():
        check_prompt(other)
        assert sorted(tokenize_words(other)) == sorted(tokenize_words(prompt))
        assert set(attribute_keys(other)) != set(attribute_keys(prompt))
    with pytest.raises(ValueError, match="two-object"):
        swap_binding(parse_prompt("a red circle on the left"), "colours")


def test_training_captions_swap_the_requested_share_of_two_object_scenes() -> None:
    import numpy as np

    from noisear_rl.worlds.shapes.train import captions
    from noisear_rl.worlds.shapes.world import sample_scenes

    scenes = sample_scenes(2000, seed=0)
    assert captions(scenes, 0.0, np.random.default_rng(0)) == [scene_to_prompt(s) for s in scenes]
    noisy = captions(scenes, 0.6, np.random.default_rng(0))
    two = [(s, c) for s, c in zip(scenes, noisy) if len(s) == 2]
    share = sum(c != scene_to_prompt(s) for s, c in two) / len(two)
    assert 0.49 < share < 0.58  # 0.6 x 8/9: swapping two equal shapes (1 swap in 9) changes nothing
    assert all(c == scene_to_prompt(s) for s, c in zip(scenes, noisy) if len(s) == 1)


@pytest.mark.parametrize(
    ("command", "argv", "needle"),
    [
        ("train", ["--steps", "0"], "--steps must be >= 1"),
        ("train", ["--caption-swap", "1.5"], "--caption-swap must lie in [0, 1]"),
        ("train", ["--cross-attention-levels", "4"], "--cross-attention-levels 4 exceeds"),
        ("measure", ["--num-noises", "0"], "--num-noises must be >= 1"),
        ("measure", ["--sweep-guidance", "2", "-1"], "--sweep-guidance takes finite numbers >= 0"),
        ("measure", ["--sweep-noises", "0"], "--sweep-noises must be >= 1"),
        ("measure", ["--num-noises", "2", "--golden-noises", "3"], "--golden-noises (3) must be at most --num-noises (2)"),
        ("measure", ["--num-noises", "2", "--sweep-noises", "3"], "--sweep-noises (3) must be at most --num-noises (2)"),
    ],
)
def test_world_commands_refuse_bad_values_in_one_line_before_writing(command, argv, needle, tmp_path, capsys) -> None:
    import importlib

    from test_reliability import assert_one_line_error, cli

    module = importlib.import_module(f"noisear_rl.worlds.shapes.{command}")
    code, lines = cli(module.main, [*argv, "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, lines, needle)
    assert not (tmp_path / "out").exists()


def test_world_training_never_replaces_a_folder_that_is_not_a_saved_pipeline(tmp_path, capsys) -> None:
    from noisear_rl.worlds.shapes.train import main
    from test_reliability import assert_one_line_error, cli

    (tmp_path / "notes.txt").write_text("mine")
    code, lines = cli(main, ["--steps", "1", "--output-dir", str(tmp_path)], capsys)
    assert_one_line_error(code, lines, "is not empty and is not a saved model")
    assert (tmp_path / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
