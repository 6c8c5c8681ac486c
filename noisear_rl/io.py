"""Crash-safe file writing: nothing already written is lost when a process dies mid-write."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
    for stale in sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp")):
        shutil.rmtree(stale)
    for old in sorted(target.parent.glob(f".{glob.escape(target.name)}.*.old")):
        if target.exists():
            shutil.rmtree(old)
        else:
            old.rename(target)


def require_saved(folder: str | os.PathLike[str], index_file: str, what: str, how: str) -> Path:
    """`folder` as a Path if it holds `index_file` (a saved model's config.json or model_index.json).

    Raises:
        FileNotFoundError: It does not; the message names `what` was looked for and `how` to make it.
    """
    folder = Path(folder)
    if not (folder / index_file).is_file():
        raise FileNotFoundError(f"no {what} at {str(folder)!r} ({index_file} missing); {how}")
    return folder


def save_pretrained_atomically(obj: Any, output_dir: str | os.PathLike[str], extras: dict[str, str] | None = None) -> None:
    """`obj.save_pretrained` plus `extras` (file name -> text), swapped in with `atomic_folder`."""
    with atomic_folder(output_dir) as tmp:
        obj.save_pretrained(tmp, safe_serialization=True)
        for name, text in (extras or {}).items():
            (tmp / name).write_text(text)
