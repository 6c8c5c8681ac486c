"""Where an environment's prompts come from: a user's list or file, or the backend's default source."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np

from noisear_rl.pipelines.factory import world_info
from noisear_rl.worlds.info import WorldInfo

PromptSource = Callable[[int, np.random.Generator], list[str]]


def check_prompt(prompt: object, world: WorldInfo | None) -> str:
    """`prompt`, if a backend can take it: a non-empty string, and for an embedded world a prompt
    of its language (`WorldInfo.check_prompt`: words and structure).

    Raises:
        TypeError: Not a string.
        ValueError: Empty or blank, or not a prompt of the world's language; the message names the fix.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a string, got {type(prompt).__name__} {_shorten(prompt)}")
    if not prompt.strip():
        raise ValueError(f"a prompt must not be empty or blank, got {prompt!r}")
    if world is not None:
        world.check_prompt(prompt)
    return prompt


def _shorten(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_prompt_file(path: str | Path, world: WorldInfo | None = None) -> list[str]:
    """Prompts from a text file (one a line, stripped) or JSONL (`.jsonl`: each line a JSON string,
    or an object whose "prompt", "caption" or "text" field, first found, holds the prompt).

    Blank lines are skipped; the file is read as UTF-8. Every prompt is checked (`check_prompt`):
    a non-empty string, and with `world`, a prompt of the world's language.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not UTF-8 text, a JSONL line that is not JSON, neither a string nor an object
            with one of the accepted string fields, a prompt `check_prompt` rejects, or no prompt
            at all; the message names the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    data = path.read_bytes()
    fix = "give a UTF-8 text file with one prompt a line, or a .jsonl file"
    if b"\0" in data:
        raise ValueError(f"prompt file {str(path)!r} is not a text file (it holds NUL bytes); {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"prompt file {str(path)!r} is not UTF-8 text (byte {error.start}); {fix}") from None
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if path.suffix != ".jsonl":
            prompt: object = line.strip()
        else:
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{where}: not a JSON line ({error}); {fix}") from None
            prompt = record
            if isinstance(record, dict):
                prompt = next((record[key] for key in ("prompt", "caption", "text") if key in record), None)
                if not isinstance(prompt, str):
                    raise ValueError(f"{where}: a JSONL object needs a string field 'prompt', 'caption' or 'text'")
        try:
            prompts.append(check_prompt(prompt, world))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return prompts


def evenly_spaced(pool: Sequence[str], count: int | None) -> list[str]:
    """`count` items spread evenly over `pool`, first and last included (all of it if count is None
    or >= its size): what every command's prompt count (`--num-prompts N`, `--num-eval-prompts N`) takes."""
    count = len(pool) if count is None else min(count, len(pool))
    return [pool[int(i)] for i in np.linspace(0, len(pool) - 1, count).round()]


def default_prompts() -> list[str]:
    """The shipped general-purpose prompt list for the SDXL family."""
    return read_prompt_file(Path(str(files("noisear_rl") / "assets" / "prompts" / "default.txt")))


def prompt_set(spec: str | Path, backend_name: str) -> list[str]:
    """`world_prompt_set(spec, ...)` for the backend named `backend_name` (its embedded world, if any)."""
    return world_prompt_set(spec, world_info(backend_name))


def world_prompt_set(spec: str | Path, world: WorldInfo | None) -> list[str]:
    """A named prompt set or a prompt file's prompts: what every command's prompt option takes.

    Args:
        spec: "eval": the embedded world's evaluation split (Shapes: 564 prompts), or the shipped
            prompt list for a general backend; "train": the embedded world's training split
            (Shapes: 588 prompts, disjoint from "eval"); anything else: a prompt file
            (`read_prompt_file`, which checks each prompt against the world's language).
        world: The backend's embedded world; None for a general backend.
    """
    if spec == "eval":
        return world.evaluation_prompts() if world else default_prompts()
    if spec == "train":
        if world is None:
            raise ValueError("'train' is an embedded world's training split; a general backend needs a prompt file")
        return world.training_prompts()
    return read_prompt_file(spec, world)


def make_prompt_source(world: WorldInfo | None, prompts: str | Sequence[str] | None) -> PromptSource:
    """A function (n, rng) -> n prompts drawn reproducibly from `rng`.

    Args:
        world: The backend's embedded world, whose training-split generator is the default
            source, and whose language every given prompt must be in; None: the shipped prompt
            list is the default source.
        prompts: A list of prompts, a path to a prompt file, or None.

    Raises:
        TypeError, ValueError: A prompt `check_prompt` rejects, an empty list, a bad prompt file.
    """
    if prompts is None and world is not None:
        return lambda n, rng: world.sample_prompts(n, int(rng.integers(2**31)))
    if prompts is None:
        pool = default_prompts()
    elif isinstance(prompts, (str, Path)):
        pool = read_prompt_file(prompts, world)
    else:
        pool = [check_prompt(p, world) for p in prompts]
        if not pool:
            raise ValueError("prompts must not be empty")
    return lambda n, rng: [pool[i] for i in rng.integers(len(pool), size=n)]
