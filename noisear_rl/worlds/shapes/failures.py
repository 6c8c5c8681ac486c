"""What the Shapes world's failed images got wrong: binding failures (attributes bound to the
wrong object, as T2I-CompBench counts them) and the other kinds, read from the objects the
verifier found (`ShapesVerifier.read`). `measure` reports their shares."""

from __future__ import annotations

import torch

from noisear_rl.worlds.shapes.verifier import DrawnObject, match_objects, scene_checks
from noisear_rl.worlds.shapes.world import SWAPS, Scene, parse_prompt, scene_to_prompt, swap_binding


def swapped_prompts(prompt: str) -> list[str]:
    """The prompts that bind a two-object prompt's attributes the other way round (`swap_binding`:
    colours, shapes or sides swapped); [] for one object."""
    scene = parse_prompt(prompt)
    if len(scene) != 2:
        return []
    variants = {scene_to_prompt(swap_binding(scene, swap)) for swap in SWAPS}
    return sorted(variants - {prompt})


def binding_failures(drawn_B: list[list[DrawnObject]], prompts: list[str]) -> torch.Tensor:
    """[B] bool: the image (its objects, `ShapesVerifier.read`) fails its prompt but passes a
    prompt binding the same attributes the other way (`swapped_prompts`): a binding failure."""
    def passes(prompt: str, drawn: list[DrawnObject]) -> bool:
        return all(all(checks) for checks in scene_checks(parse_prompt(prompt), drawn).values())

    return torch.tensor([
        not passes(p, drawn) and any(passes(v, drawn) for v in swapped_prompts(p)) for p, drawn in zip(prompts, drawn_B)
    ], dtype=torch.bool)


FAILURE_KINDS: tuple[str, ...] = ("binding", "binding, wrong count", "other attribute", "count", "one object")
"""What a failed image got wrong (`failure_kind`)."""


def failure_kind(scene: Scene, drawn: list[DrawnObject]) -> str:
    """What a failed image got wrong, one of `FAILURE_KINDS` ("success" when it passes).

    "binding": a two-object prompt whose every wrong attribute is the one the prompt gives the
    other object (its colour drawn at this object's side, its shape, its side; a full swap is one
    case), with two objects drawn, as attribute-binding errors are counted in T2I-CompBench;
    "binding, wrong count": the same with objects missing or extra; "other attribute": some wrong
    attribute is neither object's (a third shape, another side, no object of either colour where
    one was asked for); "count": every object right but others drawn too; "one object": a failed
    one-object prompt.
    """
    errors = []  # one per failed check: does the image show the other object's attribute there?
    for obj, other, found in zip(scene, reversed(scene), match_objects(scene, drawn)):
        if found is None:
            errors.append(other.colour in {d.colour for d in drawn if d.position == obj.position})
            continue
        if found.shape != obj.shape:
            errors.append(found.shape == other.shape)
        if found.position != obj.position:
            errors.append(found.position == other.position)
    if not errors:
        return "success" if len(drawn) == len(scene) else ("one object" if len(scene) == 1 else "count")
    if len(scene) == 1:
        return "one object"
    if all(errors):
        return "binding" if len(drawn) == 2 else "binding, wrong count"
    return "other attribute"


def failure_kinds(drawn_B: list[list[DrawnObject]], prompts: list[str]) -> list[str]:
    """`failure_kind` of each image, given its objects (`ShapesVerifier.read`; "success" for those that pass)."""
    return [failure_kind(parse_prompt(p), drawn) for p, drawn in zip(prompts, drawn_B)]


def failure_shares(kinds: list[str]) -> dict[str, float]:
    """Each of `FAILURE_KINDS`' share of the failures among `kinds`."""
    failed = [k for k in kinds if k != "success"]
    return {kind: failed.count(kind) / max(1, len(failed)) for kind in FAILURE_KINDS}
