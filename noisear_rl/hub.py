"""Finding weights: a local path, or a Hugging Face Hub id, with a clear error offline.

Every checkpoint argument (diffusion pipelines, reward models) accepts either a local path (a folder or a file) or a hub id
("owner/name"). Hub downloads go through `huggingface_hub`'s cache, so `HF_HUB_OFFLINE=1` and a
pre-filled cache work as usual; when the weights cannot be had, the error names the hub id, the
files, and the two ways to provide them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class WeightsUnavailableError(OSError):
    """Weights could be found neither locally nor on (or in the cache of) the hub."""


def looks_like_hub_id(name_or_path: str | os.PathLike[str]) -> bool:
    """True when `name_or_path` is written as a Hugging Face Hub repo id, "owner/name"."""
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+", os.fspath(name_or_path)) is not None


def is_local_path(name_or_path: str | os.PathLike[str]) -> bool:
    """True when `name_or_path` names an existing file or folder, or is not written as a hub id.

    A string such as "./ckpt", "/data/clip", "~/clip" or "weights" is a path even if it does not
    exist, so a typo gives "no such path" rather than a failed hub lookup; only "owner/name"
    that does not exist here is looked up on the hub.
    """
    text = os.fspath(name_or_path)
    if os.path.exists(os.path.expanduser(text)):
        return True
    return text.startswith(("./", "../", "~", "\\")) or os.path.isabs(text) or not looks_like_hub_id(text)


def missing_weights_message(what: str, repo_id: str, files: Sequence[str], argument: str, reason: str) -> str:
    """The message for weights that could not be had: what, where from, and how to provide them.

    One file is downloaded by name; a model folder (several files) by downloading the repo.
    """
    from huggingface_hub import constants

    where = "offline mode is on (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE else "the download failed"
    command = f"hf download {repo_id} {files[0]}" if len(files) == 1 else f"hf download {repo_id}"
    return (
        f"could not load the {what} ({', '.join(files)}) from the Hugging Face Hub repo {repo_id!r}: "
        f"{where} and it is not in the hub cache ({reason}). To provide it: on a machine with network "
        f"access run `{command} --local-dir DIR` (`huggingface-cli download` on older huggingface_hub), "
        f"copy DIR here and pass `{argument}=DIR`; or copy a filled hub cache (HF_HOME) from such a machine."
    )


def _check_local(path: Path, what: str, argument: str) -> Path:
    if not path.exists():
        raise WeightsUnavailableError(
            f"the {what} path {str(path)!r} (given as `{argument}`) does not exist; pass an existing local folder or file"
        )
    return path


def resolve_file(name_or_path: str | os.PathLike[str], filename: str, *, what: str, argument: str) -> Path:
    """Returns a local path to `filename` from a local file, a local folder, or a hub repo.

    Args:
        name_or_path: A local file (returned as is), a local folder holding `filename`, or a hub id.
        filename: The file to fetch from the folder or the hub repo.
        what: What the file is, for error messages ("LAION aesthetic MLP").
        argument: The constructor argument that takes the path, for error messages.

    Raises:
        WeightsUnavailableError: The file is not local and cannot be downloaded or found in the cache.
    """
    if is_local_path(name_or_path):
        path = _check_local(Path(os.path.expanduser(os.fspath(name_or_path))), what, argument)
        if path.is_dir():
            path = _check_local(path / filename, what, argument)
        return path
    repo_id = os.fspath(name_or_path)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as err:  # network, offline, missing repo or file: all mean "not available"
        raise WeightsUnavailableError(
            missing_weights_message(what, repo_id, [filename], argument, f"{type(err).__name__}: {err}")
        ) from err


def load_pretrained(
    loader: Callable[[str], T],
    name_or_path: str | os.PathLike[str],
    *,
    what: str,
    files: Sequence[str],
    argument: str,
) -> T:
    """Calls `loader(path_or_id)` (a `from_pretrained`), turning hub failures into a clear error.

    Args:
        loader: Loads from a local folder or a hub id, raising OSError when the files are missing.
        name_or_path: A local folder or a hub id.
        what: What is loaded, for error messages ("CLIP model").
        files: The files the loader needs, for the download hint.
        argument: The constructor argument that takes the path, for error messages.
    """
    if is_local_path(name_or_path):
        path = _check_local(Path(os.path.expanduser(os.fspath(name_or_path))), what, argument)
        return loader(str(path))
    repo_id = os.fspath(name_or_path)
    try:
        return loader(repo_id)
    except OSError as err:  # transformers raises OSError for missing, offline and unknown repos
        raise WeightsUnavailableError(
            missing_weights_message(what, repo_id, files, argument, f"{type(err).__name__}: {err}")
        ) from err
