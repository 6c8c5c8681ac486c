"""Crash-safe file writing, content checksums and output folders: nothing already written is lost
when a process dies mid-write, a damaged file is never read as good, and a command writes only
into a folder that is new, empty or its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHECKSUM_KEY = "sha256"
"""The safetensors metadata key holding a file's content checksum (`tensors_sha256`)."""
_KILLED_WRITE = re.compile(r"^\.(?P<target>.+)\.[^.]+\.(?P<kind>tmp|old)$")
"""Names `atomic_path` and `atomic_folder` give their temporaries: `.{target}.{random}.tmp|old`."""


class CorruptFileError(ValueError):
    """A file cannot be parsed, or its content does not match the checksum stored with it.

    Attributes:
        path: The file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, fix: str) -> None:
        super().__init__(f"{str(path)!r} is corrupt ({reason}); {fix}")
        self.path = Path(path)
        self.reason = reason


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    Readers never see a half-written file: they see the old file or the new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> None:
    """Calls `write(tmp_path)` and atomically moves the result to `path`."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a new empty folder beside `path`; if the block succeeds, the folder replaces `path`.

    A crash never leaves half a folder at `path`: the old one (if any) stays until the swap. What a
    killed earlier swap of the same `path` left beside it is cleared first: unfinished new folders
    are deleted, and an old folder set aside just before the kill goes back to `path` if nothing
    replaced it. (One writer per `path` at a time.)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_killed_swaps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700; give the folder the usual mode
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        if target.exists():
            target.rename(old)
        try:
            tmp.rename(target)
        except BaseException:
            if old.exists():
                old.rename(target)  # the swap failed: the old folder goes back
            raise
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


def _clear_killed_swaps(target: Path) -> None:
    """Removes the temporary folders a killed `atomic_folder(target)` left, restoring a set-aside old folder."""
    for entry in sorted(target.parent.iterdir()):
        match = _KILLED_WRITE.match(entry.name)
        if match and match["target"] == target.name:
            _clear_killed_write(entry, match)


def _clear_killed_write(entry: Path, match: re.Match[str]) -> None:
    """Deletes a temporary `entry` of a killed write; a set-aside old folder goes back to its
    target if nothing replaced it."""
    target = entry.with_name(match["target"])
    if match["kind"] == "old" and not target.exists():
        entry.rename(target)
    elif entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def clear_killed_writes(folder: str | os.PathLike[str]) -> list[Path]:
    """Removes, in `folder` and below, what writes killed mid-way left (`atomic_path` and
    `atomic_folder` temporaries); returns them. Call it on a folder a command owns before it
    writes there (one writer per folder at a time)."""
    found: list[tuple[Path, re.Match[str]]] = []
    for directory, subdirectories, files in os.walk(folder):
        for name in [*subdirectories, *files]:
            match = _KILLED_WRITE.match(name)
            if match:
                found.append((Path(directory) / name, match))
        subdirectories[:] = [name for name in subdirectories if not _KILLED_WRITE.match(name)]
    for entry, match in sorted(found, key=lambda item: item[0]):
        _clear_killed_write(entry, match)
    return [entry for entry, _ in found]


def inspect_output_folder(
    folder: str | os.PathLike[str], marker: str, is_own: Callable[[Any], bool], what: str, fix: str
) -> dict[str, Any] | None:
    """What an output folder holds, before a command writes into it.

    Args:
        folder: The folder the command would write.
        marker: The JSON file every folder of this command holds (config.json, manifest.json).
        is_own: Whether the marker's parsed JSON was written by this command.
        what: What such a folder is, for messages ("training run").
        fix: How to go on when the folder is refused, for messages.

    Returns:
        None for a new or empty folder (temporaries of killed writes do not count), else the
        marker's record.

    Raises:
        FileExistsError: `folder` is a file, a folder that is not empty and holds no marker, or
            one whose marker this command did not write.
        CorruptFileError: The marker is not readable JSON.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{str(folder)!r} is a file, not a folder; {fix}")
    path = folder / marker
    if not path.is_file():
        entries = sorted(p.name for p in folder.iterdir() if not _KILLED_WRITE.match(p.name)) if folder.is_dir() else []
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise FileExistsError(
                f"{str(folder)!r} is not empty ({shown}) and is not a {what} (no {marker}): nothing in it is "
                f"overwritten; {fix}"
            )
        return None
    record = read_json(path, f"nothing in {str(folder)!r} is overwritten; {fix}")
    if not is_own(record):
        raise FileExistsError(f"{str(folder)!r} holds a {marker} that no {what} wrote: nothing in it is overwritten; {fix}")
    return record


def read_json(path: str | os.PathLike[str], fix: str) -> Any:
    """The JSON in `path`.

    Raises:
        FileNotFoundError: No such file (the message ends with `fix`).
        CorruptFileError: It is not UTF-8 JSON (the message names the file and ends with `fix`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CorruptFileError(path, f"not readable JSON: {error}", fix) from error


# ---------------------------------------------------------------------------------- checksums
def tensors_sha256(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> str:
    """A checksum of tensors' names, dtypes, shapes and bytes, and of text metadata (its
    `CHECKSUM_KEY` entry excepted), independent of how a file lays them out."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    for key, value in sorted((metadata or {}).items()):
        if key != CHECKSUM_KEY:
            digest.update(f"{key}\0{value}\0".encode())
    return digest.hexdigest()


def save_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Writes tensors and text metadata as safetensors, atomically, with their checksum
    (`tensors_sha256`) in the metadata; `load_safetensors` verifies it."""
    from safetensors.torch import save

    contiguous = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    stored = {**(metadata or {}), CHECKSUM_KEY: tensors_sha256(contiguous, metadata)}
    data = save(contiguous, metadata=stored)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_safetensors(path: str | os.PathLike[str], fix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Reads a safetensors file written by `save_safetensors` and verifies its checksum (a file
    written before checksums were stored, which has none, is read unverified).

    Returns:
        (tensors, metadata).

    Raises:
        FileNotFoundError: No such file.
        CorruptFileError: Unreadable, or its content does not match its checksum; the message
            names the file and ends with `fix`.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorruptFileError(path, f"unreadable: {reason}", fix) from error
    stored = metadata.get(CHECKSUM_KEY)
    if stored is not None and stored != tensors_sha256(tensors, metadata):
        raise CorruptFileError(path, "its content does not match its checksum", fix)
    return tensors, metadata


def require_saved(folder: str | os.PathLike[str], index_file: str, what: str, how: str) -> Path:
    """`folder` as a Path if it holds `index_file` (a saved model's config.json or model_index.json).

    Raises:
        FileNotFoundError: It does not; the message names `what` was looked for and `how` to make it.
    """
    folder = Path(folder)
    if not (folder / index_file).is_file():
        raise FileNotFoundError(f"no {what} at {str(folder)!r} ({index_file} missing); {how}")
    return folder


def check_model_folder(folder: str | os.PathLike[str]) -> None:
    """Raises a FileExistsError unless a saved model may replace `folder`: it is missing, empty,
    or itself a saved model or pipeline (a config.json or model_index.json naming its
    `_class_name`, as diffusers writes them), never a user's folder."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{str(folder)!r} is a file, not a folder; choose a new or empty folder to save the model in")
    if not any(p for p in folder.iterdir() if not _KILLED_WRITE.match(p.name)):
        return
    if not any(_names_a_class(folder / index) for index in ("config.json", "model_index.json")):
        raise FileExistsError(
            f"{str(folder)!r} is not empty and is not a saved model: nothing in it is replaced; "
            "choose a new or empty folder to save the model in"
        )


def _names_a_class(path: Path) -> bool:
    """Whether `path` is a JSON object with a `_class_name` (a diffusers config or model index)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and "_class_name" in record


def save_pretrained_atomically(obj: Any, output_dir: str | os.PathLike[str], extras: dict[str, str] | None = None) -> None:
    """`obj.save_pretrained` plus `extras` (file name -> text), swapped in with `atomic_folder`;
    it replaces only a folder `check_model_folder` allows."""
    check_model_folder(output_dir)
    with atomic_folder(output_dir) as tmp:
        obj.save_pretrained(tmp, safe_serialization=True)
        for name, text in (extras or {}).items():
            (tmp / name).write_text(text)
