"""`WorldInfo`: what environments, CLIs and noise sources need to know about an embedded world.

An embedded world (the Shapes world) is a diffusion backend that comes with its own prompts,
reward, action patch size and shipped priors. Its backend carries a `WorldInfo` as
`DiffusionBackend.world`, and everything that used to ask "is this the Shapes world?" reads it
instead. This module imports nothing from the project, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorldInfo:
    """The description of an embedded world.

    Attributes:
        name: The world's name ("shapes").
        reward: The default reward name (its exact verifier).
        patch_size: Side of one action patch of the latent.
        training_prompts: The prompts priors train on (golden data, NLL, RL).
        evaluation_prompts: The held-out prompts results are reported on; disjoint from training.
        sample_prompts: (n, seed) -> n training prompts drawn reproducibly (environments' default).
        check_prompt: Raises a ValueError naming the fix if a prompt is not in the world's language.
        prior: Folder of the shipped NLL-pretrained NoiseAR prior.
        prior_command: The commands that make `prior`.
        npnet: Folder of the shipped Golden Noise network (NPNet).
        npnet_command: The commands that make `npnet`.
    """

    name: str
    reward: str
    patch_size: int
    training_prompts: Callable[[], list[str]]
    evaluation_prompts: Callable[[], list[str]]
    sample_prompts: Callable[[int, int], list[str]]
    check_prompt: Callable[[str], None]
    prior: Path
    prior_command: str
    npnet: Path
    npnet_command: str
