"""Where an environment's prompts come from: a user's list or file, or the backend's default source."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np

PromptSource = Callable[[int, np.random.Generator], list[str]]


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line) or JSONL (objects with a "prompt" key, or strings)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(lines, 1):
            record = json.loads(line)
            if isinstance(record, dict) and "prompt" not in record:
                raise ValueError(f"{path}:{number}: a JSONL prompt needs a 'prompt' key")
            prompts.append(record["prompt"] if isinstance(record, dict) else str(record))
        lines = prompts
    if not lines:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return lines


def default_prompts() -> list[str]:
    """The shipped general-purpose prompt list for the SDXL family."""
    return read_prompt_file(Path(str(files("noisear_rl") / "assets" / "prompts" / "default.txt")))


def make_prompt_source(backend_name: str, prompts: str | Sequence[str] | None) -> PromptSource:
    """A function (n, rng) -> n prompts drawn reproducibly from `rng`.

    Args:
        backend_name: Picks the default source when `prompts` is None: the Shapes world's own
            generator for "shapes", the shipped prompt list otherwise.
        prompts: A list of prompts, a path to a prompt file, or None.
    """
    if prompts is None and backend_name == "shapes":
        from noisear_rl.pipelines.shapes import sample_prompts

        return lambda n, rng: sample_prompts(n, seed=int(rng.integers(2**31)))
    if prompts is None:
        pool = default_prompts()
    elif isinstance(prompts, str):
        pool = read_prompt_file(prompts)
    else:
        pool = [str(p) for p in prompts]
        if not pool:
            raise ValueError("prompts must not be empty")
    return lambda n, rng: [pool[i] for i in rng.integers(len(pool), size=n)]
