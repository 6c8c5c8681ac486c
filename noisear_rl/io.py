"""Crash-safe file writing: nothing already written is lost when a process dies mid-write."""

from __future__ import annotations

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


def save_pretrained_atomically(obj: Any, output_dir: str | os.PathLike[str], extras: dict[str, str] | None = None) -> None:
    """`obj.save_pretrained` plus `extras` (file name -> text) into a sibling temporary folder,
    then swapped in: a crash never leaves half a model, and the old one stays until the swap."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    obj.save_pretrained(tmp, safe_serialization=True)
    for name, text in (extras or {}).items():
        (tmp / name).write_text(text)
    old = output_dir.with_name(f".{output_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if output_dir.exists():
        output_dir.rename(old)
    tmp.rename(output_dir)
    shutil.rmtree(old, ignore_errors=True)
