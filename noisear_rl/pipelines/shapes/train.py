"""Trains the Shapes world's diffusion model from scratch on CPU: `python -m noisear_rl.pipelines.shapes.train`.

Images are rendered on the fly from seeded scenes (`world.py`); the text encoder and the UNet
learn jointly with v-prediction, min-SNR loss weighting, 10% prompt dropout for
classifier-free guidance, AdamW with warmup and cosine decay, and an EMA of the weights, which
is what gets saved (a `save_pretrained` folder: safetensors + config.json). The default output
folder is the package's shipped weights. Seeded: the same config on the same machine gives the
same weights. For CPU speed run it with
`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=536870912`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from noisear_rl.io import save_pretrained_atomically
from noisear_rl.schedules import warmup_cosine
from noisear_rl.pipelines.shapes.pipeline import DEFAULT_WEIGHTS, ShapesPipeline, build_shapes_pipeline, unet_prediction
from noisear_rl.pipelines.shapes.world import render_batch, sample_scenes, scene_to_prompt


@dataclass
class TrainConfig:
    """Training of the Shapes world's text-to-image model."""

    output_dir: Path = DEFAULT_WEIGHTS
    """Where the EMA pipeline is saved (`save_pretrained` folder); default: the shipped weights."""
    steps: int = 1600
    """Optimizer steps."""
    batch_size: int = 48
    """Images per step, rendered on the fly."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 100
    """Linear warm-up steps before the cosine decay."""
    final_lr_fraction: float = 0.05
    """Learning rate at the last step, as a fraction of the peak."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    ema_decay: float = 0.998
    """Decay of the exponential moving average of the weights that gets saved."""
    prompt_dropout: float = 0.1
    """Fraction of training prompts replaced by the empty prompt (for classifier-free guidance)."""
    two_object_fraction: float = 0.4
    """Fraction of training scenes with two objects."""
    min_snr_gamma: float = 5.0
    """Min-SNR loss weighting's clip; 0 disables it (plain v-prediction MSE)."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """UNet channels per resolution (32, 16, 8 pixels); cross-attention at the last one only."""
    text_hidden_size: int = 64
    """Text encoder width (the condition's D)."""
    default_num_inference_steps: int = 20
    """DDIM steps the saved pipeline uses by default."""
    default_guidance_scale: float = 1.0
    """Classifier-free guidance the saved pipeline uses by default (measured best: guidance above
    ~1.25 lowers success in this world; see docs/shapes_world.md)."""
    bf16_autocast: bool = True
    """Forward passes in bfloat16 autocast (weights and optimizer stay float32): ~1.4x faster on
    CPUs with AVX512-BF16."""
    seed: int = 0
    """Seeds the initialisation, the scenes, the jitter, the noise and the timesteps."""
    threads: int = 1
    """torch CPU threads. One is the robust choice on a shared 2-core machine: with other jobs
    running, two threads measured 20-40x slower per step (threads wait for each other)."""
    log_every: int = 50
    """Steps between log lines."""
    save_every: int = 400
    """Steps between intermediate saves of the EMA pipeline (0: only at the end)."""


def train(config: TrainConfig) -> ShapesPipeline:
    """Runs the training and saves the EMA pipeline to `config.output_dir`; returns it."""
    torch.set_num_threads(config.threads)
    pipe = build_shapes_pipeline(
        seed=config.seed, block_out_channels=config.block_out_channels, text_hidden_size=config.text_hidden_size
    )
    pipe.register_to_config(
        default_num_inference_steps=config.default_num_inference_steps,
        default_guidance_scale=config.default_guidance_scale,
    )
    text_encoder, unet, scheduler = pipe.text_encoder, pipe.unet, pipe.scheduler
    ema = copy.deepcopy(pipe)
    modules = torch.nn.ModuleList([text_encoder, unet])
    ema_modules = torch.nn.ModuleList([ema.text_encoder, ema.unet])
    for p in ema_modules.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(modules.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps, config.final_lr_fraction)
    )
    alphas_cumprod = scheduler.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    output_dir = Path(config.output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []
    n_params = sum(p.numel() for p in modules.parameters())
    print(f"training {n_params / 1e6:.2f}M parameters for {config.steps} steps -> {output_dir}", flush=True)

    start, running = time.time(), 0.0
    for step in range(1, config.steps + 1):
        scenes = sample_scenes(config.batch_size, int(rng.integers(2**31)), config.two_object_fraction)
        images = render_batch(scenes, int(rng.integers(2**31))) * 2 - 1
        drop = rng.random(config.batch_size) < config.prompt_dropout
        prompts = ["" if d else scene_to_prompt(s) for s, d in zip(scenes, drop)]
        noise = torch.randn(images.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch_size,), generator=generator)

        noisy = scheduler.add_noise(images, noise, timesteps)
        target = scheduler.get_velocity(images, noise, timesteps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16_autocast):
            embeds = text_encoder(text_encoder.tokenize(prompts))
            prediction = unet_prediction(unet, noisy, timesteps, embeds)
        per_sample = ((prediction.float() - target) ** 2).mean(dim=(1, 2, 3))
        if config.min_snr_gamma > 0:
            s = snr[timesteps]
            per_sample = per_sample * torch.clamp(s, max=config.min_snr_gamma) / (s + 1)
        loss = per_sample.mean()

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        update_ema(ema_modules, modules, min(config.ema_decay, (1 + step) / (10 + step)))

        running += loss.item()
        if step % config.log_every == 0 or step == config.steps:
            record = {
                "step": step,
                "loss": running / (config.log_every if step % config.log_every == 0 else step % config.log_every),
                "lr": schedule.get_last_lr()[0],
                "elapsed_s": round(time.time() - start, 1),
            }
            running = 0.0
            print(json.dumps(record), flush=True)
            log_lines.append(json.dumps(record))
        if (config.save_every and step % config.save_every == 0) or step == config.steps:
            extras = {
                "train_config.json": json.dumps(asdict(config), indent=2, default=str) + "\n",
                "train_log.jsonl": "\n".join(log_lines) + "\n",
            }
            save_pretrained_atomically(ema, output_dir, extras)
    return ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers copied)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def main() -> None:
    train(tyro.cli(TrainConfig))


if __name__ == "__main__":
    main()
