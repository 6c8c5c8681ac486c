"""Where an environment's prompts come from: a user's list or file, or the backend's default source."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np

from noisear_rl.pipelines.factory import SHAPES_BACKENDS

PromptSource = Callable[[int, np.random.Generator], list[str]]


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a text file (one a line, stripped) or JSONL (`.jsonl`: each line a JSON string,
    or an object whose "prompt", "caption" or "text" field, first found, holds the prompt).

    Blank lines are skipped; the file is read as UTF-8.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A JSONL line is neither a string nor an object with one of the accepted
            string fields, or the file holds no prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    prompts: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line.strip())
            continue
        record = json.loads(line)
        if not isinstance(record, dict):
            prompts.append(str(record))
            continue
        text = next((record[key] for key in ("prompt", "caption", "text") if key in record), None)
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number}: a JSONL object needs a string field 'prompt', 'caption' or 'text'")
        prompts.append(text)
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return prompts


def evenly_spaced(pool: Sequence[str], count: int) -> list[str]:
    """`count` items spread evenly over `pool`, first and last included (all of it if count >= its size)."""
    count = min(count, len(pool))
    return [pool[int(i)] for i in np.linspace(0, len(pool) - 1, count).round()]


def default_prompts() -> list[str]:
    """The shipped general-purpose prompt list for the SDXL family."""
    return read_prompt_file(Path(str(files("noisear_rl") / "assets" / "prompts" / "default.txt")))


def prompt_set(spec: str | Path, backend_name: str) -> list[str]:
    """A named prompt set or a prompt file's prompts.

    Args:
        spec: "eval": the backend's evaluation set (Shapes: `evaluation_prompts()`, 208 prompts;
            others: the shipped prompt list); "train": the Shapes world's 272 prompts outside its
            evaluation set (`training_prompts()`); anything else: a prompt file (`read_prompt_file`).
        backend_name: The backend the prompts are for.
    """
    if spec == "eval" and backend_name in SHAPES_BACKENDS:
        from noisear_rl.pipelines.shapes import evaluation_prompts

        return evaluation_prompts()
    if spec == "eval":
        return default_prompts()
    if spec == "train":
        if backend_name not in SHAPES_BACKENDS:
            raise ValueError(f"'train' is the Shapes world's training prompt set; backend {backend_name!r} needs a prompt file")
        from noisear_rl.pipelines.shapes import training_prompts

        return training_prompts()
    return read_prompt_file(spec)


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
