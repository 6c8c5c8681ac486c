"""Golden-noise datasets on disk: sharded safetensors + prompts JSONL + a manifest.

Layout of a collection folder (written by `python -m noisear_rl.collect`):

    manifest.json               settings of the collection, progress, timing
    prompts.jsonl               {"index": i, "prompt": "..."} per line, in index order
    shards/shard-00000.safetensors
        noise        [N, C, H, W]  the random x_T
        golden       [N, C, H, W]  its golden noise (x_T itself with `--golden selected`)
        prompt_index [N] int64     row of prompts.jsonl
        noise_index  [N] int64     which of the prompt's K noises (0..K-1)
        reward_original, reward_golden [N] float32   only with reward filtering
                                   (`--golden selected`: reward_original alone)

Every file is written to a temporary name and renamed (`noisear_rl.io`), so a shard on disk is
always complete; a shard's presence means it is finished.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from noisear_rl.envs.prompts import read_prompt_file
from noisear_rl.io import atomic_write, write_json

MANIFEST = "manifest.json"
PROMPTS = "prompts.jsonl"
SHARD_DIR = "shards"
SHARD_KEYS = ("noise", "golden", "prompt_index", "noise_index")
_SHARD_NAME = re.compile(r"^shard-(\d{5,})\.safetensors$")


def shard_path(root: str | Path, index: int) -> Path:
    """Where shard `index` of the collection in `root` lives."""
    return Path(root) / SHARD_DIR / f"shard-{index:05d}.safetensors"


def write_shard(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Writes one shard atomically (temporary file, then rename).

    Raises:
        ValueError: A required key is missing or the tensors disagree on the number of rows.
    """
    missing = [key for key in SHARD_KEYS if key not in tensors]
    if missing:
        raise ValueError(f"shard tensors miss {missing}; required: {list(SHARD_KEYS)}")
    rows = {key: value.shape[0] for key, value in tensors.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"shard tensors disagree on the number of rows: {rows}")
    contiguous = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))


def read_shard(path: str | Path) -> dict[str, Tensor]:
    """Loads every tensor of one shard."""
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def shard_rows(path: str | Path) -> int | None:
    """The number of rows of a readable, complete shard, or None for a missing or unreadable one."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            if not set(SHARD_KEYS) <= keys:
                return None
            return int(handle.get_slice("prompt_index").get_shape()[0])
    except (OSError, SafetensorError):  # missing file, truncated or corrupt header
        return None


def list_shards(root: str | Path) -> list[Path]:
    """The shard files of a collection, by index."""
    folder = Path(root) / SHARD_DIR
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if _SHARD_NAME.match(path.name))


def write_prompts(path: str | Path, prompts: list[str]) -> None:
    """Writes prompts as JSONL (`{"index": i, "prompt": ...}`), atomically."""
    lines = "".join(json.dumps({"index": i, "prompt": p}, ensure_ascii=False) + "\n" for i, p in enumerate(prompts))
    atomic_write(path, lambda tmp: tmp.write_text(lines, encoding="utf-8"))


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the collection in `root`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(root)!r} holds no {MANIFEST}: not a golden-noise collection "
            "(create one with `python -m noisear_rl.collect --out FOLDER`)"
        )
    return json.loads(path.read_text())


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Writes the manifest atomically."""
    write_json(Path(root) / MANIFEST, manifest)


class GoldenNoiseDataset(torch.utils.data.Dataset):
    """The (prompt, golden noise) pairs of one collection, for NLL training of the prior.

    Items are dicts: `golden` [C, H, W] float32, `prompt_index` (int), `prompt` (str), and with
    `with_noise=True` the original `noise` too. `prompts` is the full prompt list (encode it once
    with the backend and index the condition by `prompt_index`).

    Args:
        root: The collection folder (holds manifest.json, prompts.jsonl, shards/).
        in_memory: Load all shards at once (fast; needs rows x C x H x W x 4 bytes per tensor);
            otherwise read rows lazily from the shards.
        with_noise: Also return the original noise x_T of each pair.
        require_complete: Refuse a collection whose manifest does not say it finished.

    Attributes:
        prompts: All prompts, by index.
        manifest: The collection's settings.
        latent_shape: (C, H, W).
        prompt_index: [N] int64 prompt index of every pair.
        golden: [N, C, H, W] all golden noises (in-memory only, else None).
        noise: [N, C, H, W] all original noises (in-memory with `with_noise`, else None).
    """

    def __init__(
        self,
        root: str | Path,
        in_memory: bool = True,
        with_noise: bool = False,
        require_complete: bool = False,
    ) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(root)
        if require_complete and not self.manifest.get("complete", False):
            raise RuntimeError(f"collection {str(root)!r} is unfinished; rerun the same collect command to finish it")
        self.prompts = read_prompt_file(self.root / PROMPTS)
        self.with_noise = with_noise
        self.latent_shape = tuple(self.manifest["latent_shape"])
        self._shards = list_shards(root)
        sizes = []
        for path in self._shards:
            rows = shard_rows(path)
            if rows is None:
                raise RuntimeError(f"shard {path} is unreadable; delete it and rerun collect to regenerate it")
            sizes.append(rows)
        self._offsets = torch.tensor([0, *sizes]).cumsum(0)
        self._handles: dict[int, Any] = {}
        self.golden: Tensor | None = None
        self.noise: Tensor | None = None
        keys = ["prompt_index", "golden", "noise"] if with_noise else ["prompt_index", "golden"]
        if in_memory:
            columns = self._read_columns(keys)
            self.golden, self.noise = columns["golden"], columns.get("noise")
            self.prompt_index = columns["prompt_index"]
        else:
            self.prompt_index = self._read_columns(["prompt_index"])["prompt_index"]
        if len(self.prompt_index) and int(self.prompt_index.max()) >= len(self.prompts):
            raise RuntimeError(f"collection {str(root)!r}: a shard refers to a prompt beyond prompts.jsonl")

    def _read_columns(self, keys: list[str]) -> dict[str, Tensor]:
        """Concatenates the given tensors of every shard (prompt_index as int64, the rest float32)."""
        parts: dict[str, list[Tensor]] = {key: [] for key in keys}
        for path in self._shards:
            with safe_open(str(path), framework="pt") as handle:
                for key in keys:
                    parts[key].append(handle.get_tensor(key))
        columns = {}
        for key, values in parts.items():
            if key == "prompt_index":
                columns[key] = torch.cat(values).long() if values else torch.zeros(0, dtype=torch.long)
            else:
                columns[key] = torch.cat(values).float() if values else torch.zeros(0, *self.latent_shape)
        return columns

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _row(self, key: str, index: int) -> Tensor:
        shard = int(torch.searchsorted(self._offsets, index, right=True)) - 1
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self._shards[shard]), framework="pt")
        return self._handles[shard].get_slice(key)[index - int(self._offsets[shard])].float()

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        index = index % len(self)
        prompt_index = int(self.prompt_index[index])
        item: dict[str, Any] = {"prompt_index": prompt_index, "prompt": self.prompts[prompt_index]}
        if self.golden is not None:
            item["golden"] = self.golden[index]
            if self.with_noise:
                item["noise"] = self.noise[index]  # type: ignore[index]
        else:
            item["golden"] = self._row("golden", index)
            if self.with_noise:
                item["noise"] = self._row("noise", index)
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen shards themselves
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
