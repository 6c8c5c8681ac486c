"""Train a Golden Noise network (NPNet) on golden-noise pairs: `python -m noisear_rl.noise_sources.golden_train`.

The pairs are the ones the NoiseAR prior is trained on (`python -m noisear_rl.collect`): for each
(noise x_T, golden noise) pair the network learns golden ~= NPNet(x_T, prompt) by MSE, as in
Golden Noise (Zhou et al., 2024). Prompts are encoded once with the backend that collected them.
A held-out fraction of the pairs measures the validation MSE against the identity's (predicting
x_T itself), which is where the network starts. The output folder is a `save_pretrained` folder
(config.json + safetensors) plus `train_config.json` and `train_log.jsonl`; `golden:FOLDER` loads
it in `python -m noisear_rl.evaluate`. Example (the Shapes world):

    python -m noisear_rl.collect --backend shapes --output-dir data/shapes_golden
    python -m noisear_rl.noise_sources.golden_train --data data/shapes_golden --output-dir runs/shapes-npnet
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from noisear_rl.cli import run_config_command
from noisear_rl.data import GoldenNoiseDataset
from noisear_rl.noise_sources.base import encode_on_cpu
from noisear_rl.noise_sources.npnet import NoisePromptNetwork
from noisear_rl.pipelines.base import DiffusionBackend
from noisear_rl.io import check_model_folder, save_pretrained_atomically
from noisear_rl.schedules import warmup_cosine


@dataclass
class GoldenTrainConfig:
    """Training of a noise prompt network on golden-noise pairs."""

    data: Path
    """Golden-noise collection folder (`python -m noisear_rl.collect --output-dir DIR`)."""
    output_dir: Path = Path("runs/golden-npnet")
    """Where the trained network is saved (replaced atomically at each save)."""
    backend: str = "shapes"
    """Backend that encodes the prompts (the one the pairs were collected with)."""
    model: str | None = None
    """Hub id or local folder of the backend's weights (default: the backend's own)."""
    device: str = "cpu"
    """Device of the backend and the network."""
    steps: int = 2000
    """Optimizer steps (Shapes, 20k pairs: about 1 s a step on one busy CPU core)."""
    batch_size: int = 64
    """Pairs per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, then cosine decay)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    final_lr_fraction: float = 0.05
    """Learning rate at the last step, as a fraction of the peak."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    width: int = 32
    """Residual predictor channels at full resolution."""
    svd_hidden: int = 64
    """Hidden width of the singular-value MLP."""
    attention_heads: int = 4
    """Cross-attention heads (must divide 2 x width)."""
    validation_fraction: float = 0.05
    """Fraction of the pairs held out for the validation MSE."""
    seed: int = 0
    """Seeds the initialisation, the split and the minibatches."""
    log_every: int = 100
    """Steps between log lines (and validation)."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""


def train_golden_network(
    config: GoldenTrainConfig, backend: DiffusionBackend | None = None
) -> tuple[NoisePromptNetwork, list[dict[str, float]]]:
    """Trains a network on the collection in `config.data`, saves it to `config.output_dir`.

    Args:
        config: The settings.
        backend: An already-built backend to encode the prompts with (default: `config.backend`).

    Returns:
        (the trained network, the log records).
    """
    check_model_folder(config.output_dir)  # before any work: the network is saved there
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if backend is None:
        from noisear_rl.pipelines.factory import load_backend

        backend = load_backend(config.backend, model=config.model, device=config.device)
    dataset = GoldenNoiseDataset(config.data, with_noise=True, require_complete=True)
    if len(dataset) < 2:
        raise ValueError(f"collection {str(config.data)!r} holds {len(dataset)} pairs; training needs at least 2")
    if tuple(dataset.latent_shape) != tuple(backend.latent_shape):
        raise ValueError(f"the collection's latents {dataset.latent_shape} differ from the backend's {backend.latent_shape}")
    device = torch.device(config.device)
    cond = encode_on_cpu(backend, dataset.prompts).embeds.float()
    noise, golden, prompt_index = dataset.noise, dataset.golden, dataset.prompt_index
    assert noise is not None and golden is not None

    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(dataset), generator=generator)
    n_val = min(len(dataset) - 1, max(1, round(config.validation_fraction * len(dataset))))
    val_rows, train_rows = order[:n_val], order[n_val:]

    torch.manual_seed(config.seed)
    channels, height, width = backend.latent_shape
    network = NoisePromptNetwork(
        latent_channels=channels, latent_height=height, latent_width=width, cond_dim=backend.cond_dim,
        width=config.width, svd_hidden=config.svd_hidden, attention_heads=config.attention_heads,
    ).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps, config.final_lr_fraction))

    def batch(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return noise[rows].to(device), cond[prompt_index[rows]].to(device), golden[rows].to(device)

    identity_mse = _validation_mse(lambda x, c: x, batch, val_rows, config.batch_size)
    records: list[dict[str, float]] = []
    start, running, count = time.time(), 0.0, 0
    print(f"training a noise prompt network ({sum(p.numel() for p in network.parameters()) / 1e6:.2f}M parameters) "
          f"on {len(train_rows)} pairs, {n_val} held out; identity MSE {identity_mse:.5f}", flush=True)
    for step in range(1, config.steps + 1):
        network.train()
        rows = train_rows[torch.randint(len(train_rows), (config.batch_size,), generator=generator)]
        x, c, target = batch(rows)
        loss = torch.nn.functional.mse_loss(network(x, c), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running, count = running + loss.item(), count + 1
        if step % config.log_every == 0 or step == config.steps:
            network.eval()
            with torch.no_grad():
                val_mse = _validation_mse(network, batch, val_rows, config.batch_size)
            record = {
                "step": step, "train_mse": running / count, "val_mse": val_mse, "identity_mse": identity_mse,
                "val_mse_vs_identity": val_mse / identity_mse if identity_mse > 0 else float("nan"),
                "lr": schedule.get_last_lr()[0], "elapsed_s": round(time.time() - start, 1),
            }
            running, count = 0.0, 0
            records.append(record)
            print(json.dumps(record), flush=True)
    _save(network, config, records)
    return network.eval(), records


@torch.no_grad()
def _validation_mse(predict, batch, rows: Tensor, batch_size: int) -> float:
    """Mean squared error over `rows`, element-weighted."""
    total, elements = 0.0, 0
    for first in range(0, len(rows), batch_size):
        x, c, target = batch(rows[first : first + batch_size])
        total += float(((predict(x, c) - target) ** 2).sum())
        elements += target.numel()
    return total / elements


def _save(network: NoisePromptNetwork, config: GoldenTrainConfig, records: list[dict[str, float]]) -> None:
    extras = {
        "train_config.json": json.dumps(asdict(config), indent=2, default=str) + "\n",
        "train_log.jsonl": "".join(json.dumps(r) + "\n" for r in records),
    }
    save_pretrained_atomically(network, config.output_dir, extras)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.noise_sources.golden_train --help`; returns the exit
    status (2 after an error)."""
    return run_config_command(train_golden_network, GoldenTrainConfig, "noisear_rl.noise_sources.golden_train", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
