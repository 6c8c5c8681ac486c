"""Trains the Shapes world's diffusion model from scratch on CPU: `python -m noisear_rl.worlds.shapes.train`.

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
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noisear_rl.checks import check_at_least, check_finite, check_positive
from noisear_rl.cli import run_config_command
from noisear_rl.io import check_model_folder, save_pretrained_atomically
from noisear_rl.schedules import warmup_cosine
from noisear_rl.worlds.shapes.pipeline import (
    DEFAULT_WEIGHTS,
    BetaSchedule,
    ShapesPipeline,
    build_shapes_pipeline,
    unet_prediction,
)
from noisear_rl.worlds.shapes.text_encoder import ShapesTextEncoder
from noisear_rl.worlds.shapes.world import (
    ATTRIBUTE_KEYS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SWAPS,
    Scene,
    all_scenes,
    parse_prompt,
    render_batch,
    sample_scenes,
    scene_to_prompt,
    scene_tokens,
    swap_binding,
    tokenize_words,
)


@dataclass
class TrainConfig:
    """Training of the Shapes world's text-to-image model."""

    output_dir: Path = DEFAULT_WEIGHTS
    """Where the EMA pipeline is saved (`save_pretrained` folder); default: the shipped weights."""
    steps: int = 4000
    """Optimizer steps."""
    batch_size: int = 32
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
    prompt_dropout: float = 0.15
    """Fraction of training prompts replaced by the empty prompt (for classifier-free guidance)."""
    two_object_fraction: float = 0.6
    """Fraction of training scenes with two objects."""
    text_pretrain_steps: int = 1500
    """Steps of the text encoder's own pretraining (reading each prompt into its scene), after
    which it is frozen while the UNet trains, as SD/SDXL freeze their pretrained text encoders."""
    cross_attention_levels: int = 1
    """UNet resolutions, from the lowest, with cross-attention to the text states."""
    caption_swap: float = 0.22
    """Share of two-object training images whose caption binds the attributes the other way
    (colours, shapes or sides swapped): noisy captions, the source of binding failures at
    guidance 1 that guidance then corrects (docs/shapes_world.md)."""
    pooled_embedding: bool = True
    """Also add the start token's state (the pooled embedding) to the UNet's time embedding, as
    SDXL adds its pooled text embedding; False conditions through cross-attention alone (SD 1.x)."""
    beta_schedule: BetaSchedule = "scaled_linear"
    """Noise schedule (`pipeline.BetaSchedule`): scaled-linear (SD/SDXL's, the shipped weights') or
    the cosine schedule (zero terminal signal)."""
    beta_end: float = 0.008
    """The scaled-linear schedule's last beta (SD/SDXL's 0.012). Smaller leaves more of the image
    in x_T at the last timestep, so the model reads more of its noise as the layout: terminal
    sqrt(alpha_bar) 0.068 at 0.012, 0.147 at 0.008, 0.218 at 0.006."""
    min_snr_gamma: float = 5.0
    """Min-SNR loss weighting's clip; 0 disables it (plain v-prediction MSE)."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """UNet channels per resolution (32, 16, 8 pixels); cross-attention at the last one only."""
    text_hidden_size: int = 64
    """Text encoder width (the condition's D)."""
    default_num_inference_steps: int = 20
    """DDIM steps the saved pipeline uses by default."""
    default_guidance_scale: float = 6.0
    """Classifier-free guidance the saved pipeline uses by default: the best of the guidance sweep
    (docs/shapes_world.md, "Guidance"; 4 until 2026-12-07)."""
    bf16_autocast: bool = False
    """Forward passes in bfloat16 autocast (weights and optimizer stay float32): ~1.4x faster on
    CPUs with AVX512-BF16."""
    seed: int = 0
    """Seeds the initialisation, the scenes, the jitter, the noise and the timesteps."""
    threads: int = 1
    """torch CPU threads. One is the robust choice on a shared 2-core machine: with other jobs
    running, two threads measured 20-40x slower per step (threads wait for each other)."""
    log_every: int = 50
    """Steps between log lines."""
    save_every: int = 500
    """Steps between intermediate saves of the EMA pipeline (0: only at the end)."""

    def check(self) -> None:
        """Raises a one-line error naming the option for any value out of range, and for an
        output folder a saved pipeline may not replace."""
        check_at_least(self, 1, ("steps", "batch_size", "cross_attention_levels", "text_hidden_size",
                                 "default_num_inference_steps", "threads", "log_every"))
        check_at_least(self, 0, ("warmup_steps", "text_pretrain_steps", "save_every", "seed"))
        check_positive(self, ("learning_rate", "beta_end"))
        check_finite(self, ("weight_decay", "min_snr_gamma", "default_guidance_scale"), minimum=0.0)
        check_finite(self, ("prompt_dropout", "two_object_fraction", "caption_swap", "final_lr_fraction", "ema_decay"),
                     minimum=0.0, maximum=1.0)
        if self.cross_attention_levels > len(self.block_out_channels):
            raise ValueError(
                f"--cross-attention-levels {self.cross_attention_levels} exceeds the UNet's "
                f"{len(self.block_out_channels)} resolutions (--block-out-channels)"
            )
        check_model_folder(self.output_dir)


def train(config: TrainConfig) -> ShapesPipeline:
    """Runs the training and saves the EMA pipeline to `config.output_dir`; returns it."""
    config.check()
    torch.set_num_threads(config.threads)
    pipe = build_shapes_pipeline(
        seed=config.seed,
        block_out_channels=config.block_out_channels,
        text_hidden_size=config.text_hidden_size,
        cross_attention_levels=config.cross_attention_levels,
        pooled_embedding=config.pooled_embedding,
        beta_schedule=config.beta_schedule,
        beta_end=config.beta_end,
    )
    pipe.register_to_config(
        default_num_inference_steps=config.default_num_inference_steps,
        default_guidance_scale=config.default_guidance_scale,
    )
    text_encoder, unet, scheduler = pipe.text_encoder, pipe.unet, pipe.scheduler
    pretrain_text_encoder(text_encoder, config.text_pretrain_steps, config.seed)
    text_encoder.requires_grad_(False).eval()
    prompt_table, embeds_table = encode_every_prompt(text_encoder)
    ema = copy.deepcopy(pipe)
    modules = torch.nn.ModuleList([unet])
    ema_modules = torch.nn.ModuleList([ema.unet])
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
        prompts = ["" if d else c for c, d in zip(captions(scenes, config.caption_swap, rng), drop)]
        noise = torch.randn(images.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch_size,), generator=generator)

        noisy = scheduler.add_noise(images, noise, timesteps)
        target = scheduler.get_velocity(images, noise, timesteps)
        embeds = embeds_table[[prompt_table[p] for p in prompts]]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16_autocast):
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


def pretrain_text_encoder(text_encoder: ShapesTextEncoder, steps: int, seed: int, batch_size: int = 128) -> None:
    """Pretrains the text encoder on the world's language before the UNet sees it.

    A real text-to-image model's text encoder comes pretrained on language, and SD/SDXL freeze
    it. This one learns to parse the world's captions: every word's state predicts the colour,
    shape and position of the object its clause describes, and the start token's state (the
    pooled embedding) the caption's (attribute, position) bindings. Linear heads, discarded
    afterwards, read the states, so the bindings are linearly readable from them. The empty
    prompt is included (its start token's target is all zeros).
    """
    if steps <= 0:
        return
    torch.manual_seed(seed)
    hidden = text_encoder.config.hidden_size
    heads = torch.nn.ModuleDict(
        {
            "colour": torch.nn.Linear(hidden, len(COLOURS)),
            "shape": torch.nn.Linear(hidden, len(SHAPES)),
            "position": torch.nn.Linear(hidden, len(POSITIONS)),
            "bindings": torch.nn.Linear(hidden, len(ATTRIBUTE_KEYS)),
        }
    )
    params = [*text_encoder.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, 100, steps, 0.05))
    rng = np.random.default_rng(seed + 1)
    text_encoder.train()
    for step in range(steps):
        scenes = sample_scenes(batch_size, int(rng.integers(2**31)), 0.6)
        scenes[: batch_size // 16] = [()] * (batch_size // 16)
        prompts = [scene_to_prompt(s) for s in scenes]
        states = text_encoder(text_encoder.tokenize(prompts))
        targets = word_targets(prompts, text_encoder.config.max_length)
        mask = targets[..., 0] >= 0
        loss = sum(
            torch.nn.functional.cross_entropy(heads[name](states[mask]), targets[..., k][mask])
            for k, name in enumerate(("colour", "shape", "position"))
        )
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
            heads["bindings"](states[:, 0]), binding_indicators(prompts)
        ) * len(ATTRIBUTE_KEYS) / 4
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 250 == 0:
            print(json.dumps({"text_pretrain_step": step + 1, "loss": round(loss.item(), 4)}), flush=True)


def word_targets(prompts: list[str], max_length: int) -> Tensor:
    """[B, L, 3] long: for each token, the (colour, shape, position) index of its clause's object;
    -1 for the start token, padding and "and"."""
    colours, shapes, positions = list(COLOURS), list(SHAPES), list(POSITIONS)
    targets = torch.full((len(prompts), max_length, 3), -1, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        objects = parse_prompt(prompt)
        clause = 0
        for i, word in enumerate(tokenize_words(prompt)):
            if word == "and":
                clause += 1
                continue
            obj = objects[clause]
            targets[row, i + 1] = torch.tensor(
                [colours.index(obj.colour), shapes.index(obj.shape), positions.index(obj.position)]
            )
    return targets


def captions(scenes: list[Scene], swap_fraction: float, rng: np.random.Generator) -> list[str]:
    """The training captions of rendered scenes: a share `swap_fraction` of two-object scenes is
    captioned with its bindings swapped (colours, shapes or sides, one at random; swapping two
    equal shapes changes nothing), as web alt-text often attaches the right words to the wrong
    objects."""
    out = []
    for scene in scenes:
        if len(scene) == 2 and rng.random() < swap_fraction:
            scene = swap_binding(scene, SWAPS[int(rng.integers(len(SWAPS)))])
        out.append(scene_to_prompt(scene))
    return out


def binding_indicators(prompts: list[str]) -> Tensor:
    """[B, K] float: which of `ATTRIBUTE_KEYS` each prompt binds (its scene tokens, merged)."""
    return scene_tokens(prompts).amax(1)


@torch.no_grad()
def encode_every_prompt(text_encoder: ShapesTextEncoder) -> tuple[dict[str, int], Tensor]:
    """The frozen encoder's states of every prompt of the world and the empty prompt:
    (prompt -> row, [N, L, D]); the UNet's training reads them instead of re-encoding."""
    prompts = ["", *(scene_to_prompt(s) for s in all_scenes())]
    return {p: i for i, p in enumerate(prompts)}, text_encoder.encode(prompts)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers copied)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `python -m noisear_rl.worlds.shapes.train --help`; returns the exit status
    (2 after an error)."""
    return run_config_command(train, TrainConfig, "noisear_rl.worlds.shapes.train", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
