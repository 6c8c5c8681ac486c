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
always complete; a shard's presence means it is finished. A shard's metadata holds a checksum of
its tensors, and the manifest the checksum of the prompt list: both are verified on load, so a
damaged shard or a cut `prompts.jsonl` is an error that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from noisear_rl.envs.prompts import read_prompt_file
from noisear_rl.io import CorruptFileError, atomic_write, load_safetensors, read_json, save_safetensors, write_json

MANIFEST = "manifest.json"
PROMPTS = "prompts.jsonl"
SHARD_DIR = "shards"
SHARD_KEYS = ("noise", "golden", "prompt_index", "noise_index")
_SHARD_NAME = re.compile(r"^shard-(\d{5,})\.safetensors$")


def shard_path(root: str | Path, index: int) -> Path:
    """Where shard `index` of the collection in `root` lives."""
    return Path(root) / SHARD_DIR / f"shard-{index:05d}.safetensors"


def write_shard(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Writes one shard atomically (temporary file, then rename), with a checksum of its content.

    Raises:
        ValueError: A required key is missing or the tensors disagree on the number of rows.
    """
    missing = [key for key in SHARD_KEYS if key not in tensors]
    if missing:
        raise ValueError(f"shard tensors miss {missing}; required: {list(SHARD_KEYS)}")
    rows = {key: value.shape[0] for key, value in tensors.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"shard tensors disagree on the number of rows: {rows}")
    save_safetensors(path, tensors, metadata)


def read_shard(path: str | Path) -> dict[str, Tensor]:
    """Loads every tensor of one shard and verifies its checksum.

    Raises:
        FileNotFoundError: No such shard.
        CorruptFileError: Unreadable, damaged (its content does not match its checksum), or
            missing a required tensor; the message names the shard and the fix.
    """
    fix = "delete it and rerun the same collect command to regenerate it"
    tensors, _ = load_safetensors(path, fix)
    missing = [key for key in SHARD_KEYS if key not in tensors]
    rows = {key: value.shape[0] for key, value in tensors.items() if value.ndim}
    if missing or len(set(rows.values())) != 1:
        raise CorruptFileError(path, f"tensors missing {missing} or of unequal rows {rows}", fix)
    return tensors


def shard_rows(path: str | Path) -> int | None:
    """The number of rows of a complete shard whose checksum holds, or None for a missing,
    unreadable or damaged one (reads the whole shard)."""
    try:
        return int(read_shard(path)["prompt_index"].shape[0])
    except (FileNotFoundError, CorruptFileError):
        return None


def list_shards(root: str | Path) -> list[Path]:
    """The shard files of a collection, by index."""
    folder = Path(root) / SHARD_DIR
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if _SHARD_NAME.match(path.name))


def prompts_jsonl(prompts: list[str]) -> str:
    """The text of a collection's prompts.jsonl: `{"index": i, "prompt": ...}` per line."""
    return "".join(json.dumps({"index": i, "prompt": p}, ensure_ascii=False) + "\n" for i, p in enumerate(prompts))


def write_prompts(path: str | Path, prompts: list[str]) -> None:
    """Writes prompts as JSONL (`prompts_jsonl`), atomically."""
    text = prompts_jsonl(prompts)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def prompts_sha256(prompts: list[str]) -> str:
    """The checksum of a prompt list that a collection's manifest records (settings.prompts_sha256)."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the collection in `root`.

    Raises:
        FileNotFoundError: `root` holds no manifest (not a collection).
        CorruptFileError: The manifest is not a JSON object.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(root)!r} holds no {MANIFEST}: not a golden-noise collection "
            "(create one with `python -m noisear_rl.collect --output-dir FOLDER`)"
        )
    fix = f"the collection in {str(root)!r} cannot be used: delete the folder and collect it again"
    manifest = read_json(path, fix)
    if not isinstance(manifest, dict):
        raise CorruptFileError(path, "not a JSON object", fix)
    return manifest


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Writes the manifest atomically."""
    write_json(Path(root) / MANIFEST, manifest)


class GoldenNoiseDataset(torch.utils.data.Dataset):
    """The (prompt, golden noise) pairs of one collection, for NLL training of the prior.

    Items are dicts: `golden` [C, H, W] float32, `prompt_index` (int), `prompt` (str), and with
    `with_noise=True` the original `noise` too. `prompts` is the full prompt list (encode it once
    with the backend and index the condition by `prompt_index`).

    Every shard is read once when the dataset is built, to verify its checksum; prompts.jsonl is
    checked against the manifest's prompt count and checksum.

    Args:
        root: The collection folder (holds manifest.json, prompts.jsonl, shards/).
        in_memory: Load all shards at once (fast; needs rows x C x H x W x 4 bytes per tensor);
            otherwise read rows lazily from the shards.
        with_noise: Also return the original noise x_T of each pair.
        require_complete: Refuse a collection whose manifest does not say it finished, or that
            lacks one of its shards.

    Raises:
        FileNotFoundError: No collection at `root`.
        RuntimeError: An unfinished collection with `require_complete`.
        CorruptFileError: A damaged shard, or a prompts.jsonl that does not match the manifest;
            the message names the file and the fix.

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
        self.prompts = self._read_prompts()
        self.with_noise = with_noise
        self.latent_shape = tuple(self.manifest["latent_shape"])
        self._shards = list_shards(root)
        if require_complete and "num_shards" in self.manifest and len(self._shards) != self.manifest["num_shards"]:
            raise RuntimeError(
                f"collection {str(root)!r} has {len(self._shards)} of its {self.manifest['num_shards']} shards; "
                "rerun the same collect command to regenerate the missing ones"
            )
        keys = ["prompt_index"]
        if in_memory:
            keys += ["golden", "noise"] if with_noise else ["golden"]
        parts: dict[str, list[Tensor]] = {key: [] for key in keys}
        for path in self._shards:
            shard = read_shard(path)  # verifies the checksum
            for key in keys:
                parts[key].append(shard[key])
        columns = self._concatenate(parts)
        self._offsets = torch.tensor([0, *(len(part) for part in parts["prompt_index"])]).cumsum(0)
        self._handles: dict[int, Any] = {}
        self.golden: Tensor | None = columns.get("golden")
        self.noise: Tensor | None = columns.get("noise")
        self.prompt_index = columns["prompt_index"]
        if len(self.prompt_index) and int(self.prompt_index.max()) >= len(self.prompts):
            raise RuntimeError(f"collection {str(root)!r}: a shard refers to a prompt beyond prompts.jsonl")

    def _read_prompts(self) -> list[str]:
        """prompts.jsonl, checked against the manifest's prompt count and checksum (when recorded)."""
        path = self.root / PROMPTS
        fix = "rerun the same collect command to rewrite it"
        try:
            prompts = read_prompt_file(path)
        except ValueError as error:
            raise CorruptFileError(path, str(error), fix) from error
        expected = self.manifest.get("num_prompts")
        settings = self.manifest.get("settings")
        recorded = settings.get("prompts_sha256") if isinstance(settings, dict) else None
        if (expected is not None and len(prompts) != expected) or (recorded is not None and prompts_sha256(prompts) != recorded):
            raise CorruptFileError(
                path, f"its {len(prompts)} prompts do not match the manifest's {expected} and their checksum", fix
            )
        return prompts

    def _concatenate(self, parts: dict[str, list[Tensor]]) -> dict[str, Tensor]:
        """Concatenates each column's shard tensors (prompt_index as int64, the rest float32)."""
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
