"""The Shapes world: its vocabulary, prompt grammar, prompt generators and ground-truth renderer.

Images are 32x32 RGB on black with one or two objects. Each object has a colour, a shape and a
position; size and placement are jittered. Two-object prompts put the objects at opposite
positions ("... on the left and ... on the right") and give them different colours, so the
verifier can tell them apart. Everything here is deterministic given a seed.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IMAGE_SIZE = 32
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
POSITIONS: dict[str, tuple[float, float]] = {  # (dx, dy) of the object's centre from the image centre
    "left": (-8.0, 0.0),
    "right": (8.0, 0.0),
    "top": (0.0, -8.0),
    "bottom": (0.0, 8.0),
}
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
ATTRIBUTE_KEYS: tuple[tuple[str, str], ...] = tuple((a, p) for a in (*COLOURS, *SHAPES) for p in POSITIONS)
"""Every (colour, position) and (shape, position): what an object binds to a place (`attribute_keys`)."""
MAX_OBJECTS = 2
FILLER_WORDS: tuple[str, ...] = ("a", "on", "the", "and")
VOCABULARY: tuple[str, ...] = (*FILLER_WORDS, *COLOURS, *SHAPES, *POSITIONS)

SIZE_RANGE = (5.5, 7.0)  # half-extent of an object in pixels
JITTER = 1.5  # maximal shift of an object's centre, in pixels, along each axis
SUPERSAMPLE = 4  # sub-pixels per pixel and axis for anti-aliased edges
EVAL_SEED = 20261206
EXAMPLE_PROMPT = "a red circle on the left and a blue square on the right"
EVAL_SINGLE_FRACTION = 1 / 3
EVAL_PAIR_FRACTION = 1 / 2


@dataclass(frozen=True)
class ShapeObject:
    """One requested object."""

    colour: str
    shape: str
    position: str

    def phrase(self) -> str:
        return f"a {self.colour} {self.shape} on the {self.position}"


Scene = tuple[ShapeObject, ...]


def scene_to_prompt(scene: Sequence[ShapeObject]) -> str:
    """The world's canonical prompt for a scene; the empty scene gives "" (unconditional)."""
    return " and ".join(obj.phrase() for obj in scene)


def tokenize_words(prompt: str) -> list[str]:
    """Lower-cased words of `prompt` without punctuation; raises on words outside the vocabulary."""
    words = re.findall(r"[a-z]+", prompt.lower())
    unknown = sorted({w for w in words if w not in VOCABULARY})
    if unknown:
        raise ValueError(
            f"unknown word(s) {unknown} in prompt {prompt!r}; the Shapes world's vocabulary is "
            f"{list(VOCABULARY)} (prompts look like 'a red circle on the left and a blue square on the right')"
        )
    return words


def parse_prompt(prompt: str) -> Scene:
    """The scene a prompt asks for: one object per "and"-separated clause.

    Raises:
        ValueError: An unknown word (the message lists the vocabulary), or a clause without
            exactly one colour, one shape and one position.
    """
    words = tokenize_words(prompt)
    if not words:
        return ()
    clauses: list[list[str]] = [[]]
    for word in words:
        if word == "and":
            clauses.append([])
        else:
            clauses[-1].append(word)
    scene = []
    for clause in clauses:
        found = {
            kind: [w for w in clause if w in names]
            for kind, names in (("colour", COLOURS), ("shape", SHAPES), ("position", POSITIONS))
        }
        if any(len(v) != 1 for v in found.values()):
            raise ValueError(
                f"each part of a Shapes prompt needs exactly one colour {list(COLOURS)}, one shape "
                f"{list(SHAPES)} and one position {list(POSITIONS)}; got {' '.join(clause)!r} in {prompt!r}"
            )
        scene.append(ShapeObject(found["colour"][0], found["shape"][0], found["position"][0]))
    return tuple(scene)


SWAPS: tuple[str, ...] = ("colours", "shapes", "sides")
"""The ways a two-object caption can bind its attributes the other way round (`swap_binding`)."""


def swap_binding(scene: Scene, swap: str) -> Scene:
    """A two-object scene with its objects' colours, shapes or sides ("colours", "shapes",
    "sides") exchanged: the same words bound the other way, a binding failure when drawn."""
    if len(scene) != 2:
        raise ValueError(f"only a two-object scene can swap its bindings, got {len(scene)} objects")
    a, b = scene
    if swap == "colours":
        return ShapeObject(b.colour, a.shape, a.position), ShapeObject(a.colour, b.shape, b.position)
    if swap == "shapes":
        return ShapeObject(a.colour, b.shape, a.position), ShapeObject(b.colour, a.shape, b.position)
    if swap == "sides":
        return ShapeObject(a.colour, a.shape, b.position), ShapeObject(b.colour, b.shape, a.position)
    raise ValueError(f"swap must be one of {list(SWAPS)}, got {swap!r}")


def check_prompt(prompt: str) -> None:
    """Raises a ValueError naming the fix unless `prompt` is a prompt of the world's language:
    one object, or two of different colours at opposite positions joined by "and"."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"a Shapes prompt must be a non-empty string like {EXAMPLE_PROMPT!r}; got {prompt!r}")
    scene = parse_prompt(prompt)
    if not scene:
        raise ValueError(f"a Shapes prompt needs at least one object, like {EXAMPLE_PROMPT!r}; got {prompt!r}")
    if len(scene) > MAX_OBJECTS:
        raise ValueError(f"a Shapes prompt asks for at most {MAX_OBJECTS} objects, got {len(scene)} in {prompt!r}")
    if len(scene) == 2:
        a, b = scene
        if b.position != OPPOSITE[a.position] or a.colour == b.colour:
            raise ValueError(
                f"two objects need different colours at opposite positions (left/right or top/bottom), "
                f"like {EXAMPLE_PROMPT!r}; got {prompt!r}"
            )


def attribute_keys(prompt: str) -> list[tuple[str, str]]:
    """The (colour, position) and (shape, position) of every object `prompt` asks for: what a
    noise prior must bind to a place in the image (the RL analyses group noises by these)."""
    return [key for obj in parse_prompt(prompt) for key in ((obj.colour, obj.position), (obj.shape, obj.position))]


def scene_tokens(prompts: Sequence[str]) -> Tensor:
    """One token per requested object that states its bindings: [B, 2, 36] float.

    Token j holds the one-hots, among `ATTRIBUTE_KEYS`, of object j's (colour, position) and
    (shape, position). A one-object prompt repeats its object (attention over two equal tokens
    reads what it reads from one), so every prompt has two tokens; the empty prompt has zeros.
    A privileged description of the scene that analyses (`benchmarks/rl_headroom.py`) compare
    the text encoder's states against.

    Raises:
        ValueError: A prompt `parse_prompt` rejects (unknown word, incomplete clause).
    """
    index = {key: i for i, key in enumerate(ATTRIBUTE_KEYS)}
    tokens = torch.zeros(len(prompts), MAX_OBJECTS, len(ATTRIBUTE_KEYS))
    for row, prompt in enumerate(prompts):
        objects = parse_prompt(prompt)
        if len(objects) > MAX_OBJECTS:
            raise ValueError(f"a Shapes prompt asks for at most {MAX_OBJECTS} objects, got {len(objects)} in {prompt!r}")
        for slot in range(MAX_OBJECTS if objects else 0):
            obj = objects[min(slot, len(objects) - 1)]
            tokens[row, slot, index[(obj.colour, obj.position)]] = 1.0
            tokens[row, slot, index[(obj.shape, obj.position)]] = 1.0
    return tokens


def attribute_means(values: Tensor, prompts: Sequence[str]) -> tuple[dict[tuple[str, str], Tensor], dict[tuple[str, str], int]]:
    """Per attribute key (`attribute_keys`): the mean of the rows of `values` whose prompt has it,
    and how many rows that is (e.g. the noises a collection or an RL batch holds for each key)."""
    sums: dict[tuple[str, str], Tensor] = {}
    counts: dict[tuple[str, str], int] = {}
    for row, prompt in zip(values, prompts):
        for key in attribute_keys(prompt):
            sums[key] = sums[key] + row if key in sums else row.clone()
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}, counts


def all_scenes() -> list[Scene]:
    """Every scene of the world in a fixed order: 72 one-object and 1080 two-object scenes."""
    singles = [
        (ShapeObject(c, s, p),) for c, s, p in itertools.product(COLOURS, SHAPES, POSITIONS)
    ]
    pairs = []
    for first, second in itertools.product(singles, singles):
        a, b = first[0], second[0]
        if b.position == OPPOSITE[a.position] and a.colour != b.colour:
            pairs.append((a, b))
    return singles + pairs


def sample_scenes(n: int, seed: int, two_object_fraction: float = 0.6) -> list[Scene]:
    """`n` random scenes of the whole world (what its diffusion model trains on), uniform within
    one- and two-object scenes; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()
    singles = [s for s in scenes if len(s) == 1]
    pairs = [s for s in scenes if len(s) == 2]
    two = rng.random(n) < two_object_fraction
    single_idx = rng.integers(len(singles), size=n)
    pair_idx = rng.integers(len(pairs), size=n)
    return [pairs[j] if t else singles[i] for t, i, j in zip(two, single_idx, pair_idx)]


def sample_prompts(n: int, seed: int, two_object_fraction: float = 0.6) -> list[str]:
    """`n` random prompts of the training split (`training_prompts()`), uniform within one- and
    two-object prompts; deterministic in `seed`. What environments and collections draw by
    default, so nothing trained on them ever sees an evaluation prompt."""
    rng = np.random.default_rng(seed)
    prompts = training_prompts()
    singles = [p for p in prompts if " and " not in p]
    pairs = [p for p in prompts if " and " in p]
    two = rng.random(n) < two_object_fraction
    single_idx = rng.integers(len(singles), size=n)
    pair_idx = rng.integers(len(pairs), size=n)
    return [pairs[j] if t else singles[i] for t, i, j in zip(two, single_idx, pair_idx)]


@functools.cache
def _split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training, evaluation) prompts: a seeded half of the two-object scenes and a third of the
    one-object scenes are held out for evaluation; each list in `all_scenes()` order."""
    scenes = all_scenes()
    rng = np.random.default_rng(EVAL_SEED)
    held_out = set()
    for size, fraction in ((1, EVAL_SINGLE_FRACTION), (2, EVAL_PAIR_FRACTION)):
        indices = [i for i, scene in enumerate(scenes) if len(scene) == size]
        held_out.update(int(i) for i in rng.choice(indices, size=round(fraction * len(indices)), replace=False))
    prompts = [scene_to_prompt(scene) for scene in scenes]
    training = tuple(p for i, p in enumerate(prompts) if i not in held_out)
    evaluation = tuple(p for i, p in enumerate(prompts) if i in held_out)
    return training, evaluation


def evaluation_prompts() -> list[str]:
    """The fixed evaluation split: 24 one-object and 540 two-object prompts (564).

    The world's diffusion model was trained on every prompt (`worlds/shapes/train.py`), as a
    real model is trained on its whole language; priors (golden-noise data, NLL, RL) only ever
    see `training_prompts()`, so for them these prompts are unseen.
    """
    return list(_split()[1])


def training_prompts() -> list[str]:
    """The world's prompts outside `evaluation_prompts()`: 48 one-object and 540 two-object
    prompts (588), which priors are trained on (golden-noise data, NLL, RL)."""
    return list(_split()[0])


def _object_mask(shape: str, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean mask of an object on the sub-pixel grid (x to the right, y downwards)."""
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2
    if shape == "square":
        return (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
    if shape == "triangle":  # apex up, base down: |x - cx| <= (y - top) / 2
        top = cy - r
        return (ys <= cy + r) & (np.abs(xs - cx) <= (ys - top) / 2.0)
    raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def render(
    scene: str | Sequence[ShapeObject],
    rng: np.random.Generator | int | None = None,
    jitter: bool = True,
) -> Tensor:
    """Draws a scene (or a prompt) as the ground truth: [3, 32, 32] float in [0, 1].

    Args:
        scene: A prompt or a sequence of objects.
        rng: Generator or seed for the size and placement jitter.
        jitter: False draws every object at its nominal place and mean size.
    """
    objects = parse_prompt(scene) if isinstance(scene, str) else tuple(scene)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n = IMAGE_SIZE * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    xs, ys = np.meshgrid(coords, coords)
    canvas = np.zeros((3, n, n), dtype=np.float32)
    for obj in objects:
        dx, dy = POSITIONS[obj.position]
        if jitter:
            r = rng.uniform(*SIZE_RANGE)
            dx, dy = dx + rng.uniform(-JITTER, JITTER), dy + rng.uniform(-JITTER, JITTER)
        else:
            r = sum(SIZE_RANGE) / 2
        mask = _object_mask(obj.shape, IMAGE_SIZE / 2 + dx, IMAGE_SIZE / 2 + dy, r, xs, ys)
        canvas[:, mask] = np.asarray(COLOURS[obj.colour], dtype=np.float32)[:, None]
    image = canvas.reshape(3, IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(2, 4))
    return torch.from_numpy(np.ascontiguousarray(image))


def render_batch(scenes: Sequence[str | Sequence[ShapeObject]], seed: int) -> Tensor:
    """Ground-truth images [B, 3, 32, 32] for scenes or prompts, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return torch.stack([render(s, rng) for s in scenes])
