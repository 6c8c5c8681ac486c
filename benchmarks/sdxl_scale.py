"""SDXL-size rollouts: the raw pipeline, the vector env driven by the prior, RL updates, memory.

Builds SDXL's components with random weights from the real configuration values (UNet 2.6B
parameters over 4x128x128 latents, VAE to 1024x1024, scheduler; no text encoders: prompts enter
as random embeddings of their output shapes, `prompt_embeds` [B, 77, 2048] and pooled [B, 1280])
and the release-size NoiseAR prior (patch 32, d_model 2048, d_ff 4096, 1 layer, 1 head), then
prints, measured in one run, per dtype:

- images/s of the raw batched pipeline call (`StableDiffusionXLPipeline(prompt_embeds=...,
  latents=...)`, 50 steps, CFG 5.5) plus one reward call;
- images/s of `NoiseVectorEnv` driven by the prior (`collect_rollouts`: reset, 16 patch steps
  through `NoiseARPolicy`, one batched denoise, one reward call) and its ratio to the raw
  pipeline (target >= 0.95);
- the prior's share of an episode's time: the time spent in `NoiseARPolicy.act` (observation to
  device, KV-cached decoding, sampling), and `prior.sample` alone on a device-resident condition
  (target < 0.1%);
- one DPO and one PPO update's time at batch 16 (one optimizer step over 16 noises);
- peak GPU memory of the rollouts and of the updates.

The reward is the mean pixel value (it costs nothing), the same call in both paths, so the ratio
shows what the toolkit adds to the pipeline; `benchmarks/reward_throughput.py` measures rewards.
The prior runs in float32 as `noisear_rl.train` keeps it (`--prior-dtype pipeline`: in the
pipeline's dtype). Rows print as each dtype finishes; a dtype that runs out of memory prints
"does not fit".

    python benchmarks/sdxl_scale.py --scale full   # a GPU: 16 envs, 50 steps (docs/performance.md)
    python benchmarks/sdxl_scale.py --scale cpu    # a CPU: under a minute

`--scale cpu` keeps every shape that the toolkit sees from SDXL's text encoders (77 x 2048,
pooled 1280, time ids) and the UNet's and VAE's block structure, at small widths, 8x8 latents,
4 steps and 2 envs: it checks that every path runs; its timings say nothing about a GPU. The
FLOP line (UNet and VAE counted on the meta device) is exact at either scale. The env's backend
gets `batch_size=num_envs`, so both paths denoise the whole batch in one pipeline call.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import tyro
from torch import Tensor

from noisear_rl import NoiseARPrior
from noisear_rl.algorithms.base import Algorithm
from noisear_rl.algorithms.dpo import DPO, DPOConfig
from noisear_rl.algorithms.ppo import PPO, PPOConfig
from noisear_rl.algorithms.trainable import shift_map_settings
from noisear_rl.envs import NoiseARPolicy, NoiseVectorEnv, RolloutBatch, collect_rollouts
from noisear_rl.pipelines.base import Condition
from noisear_rl.pipelines.sdxl import SDXLBackend
from noisear_rl.reward_models.base import RewardModel, RewardOutput

# What SDXL's two text encoders hand the UNet (CLIP ViT-L 768 + OpenCLIP bigG 1280 hidden states,
# bigG's 1280-d pooled projection) and its micro-conditioning width: kept at every scale.
COND_LENGTH = 77
COND_DIM = 768 + 1280
POOLED_DIM = 1280
ADDITION_TIME_EMBED_DIM = 256
UPDATE_BATCH = 16
"""Noises per DPO / PPO optimizer step."""


@dataclass(frozen=True)
class Scale:
    """The sizes of one benchmark scale (the text-encoder shapes above never change)."""

    name: str
    latent_size: int
    """H = W of the latent (SDXL: 128, images 1024x1024)."""
    unet_channels: tuple[int, int, int]
    unet_heads: tuple[int, int, int]
    """diffusers' `attention_head_dim`, which for SDXL holds head counts (5, 10, 20)."""
    unet_transformer_layers: tuple[int, int, int]
    unet_layers_per_block: int
    vae_channels: tuple[int, int, int, int]
    vae_layers_per_block: int
    num_inference_steps: int
    num_envs: int
    prior_patch_size: int
    prior_d_model: int
    prior_d_ff: int
    rounds: int
    """Timed rounds of each path (interleaved; the best is reported)."""


def scale_preset(name: str) -> Scale:
    """"full": SDXL-base-1.0's configuration and the release prior; "cpu": the same structure at
    small widths, finishing on a CPU in under a minute."""
    if name == "full":
        return Scale(
            name="full", latent_size=128, unet_channels=(320, 640, 1280), unet_heads=(5, 10, 20),
            unet_transformer_layers=(1, 2, 10), unet_layers_per_block=2, vae_channels=(128, 256, 512, 512),
            vae_layers_per_block=2, num_inference_steps=50, num_envs=16, prior_patch_size=32,
            prior_d_model=2048, prior_d_ff=4096, rounds=1,
        )
    if name == "cpu":
        return Scale(
            name="cpu", latent_size=8, unet_channels=(32, 64, 64), unet_heads=(1, 2, 2),
            unet_transformer_layers=(1, 1, 2), unet_layers_per_block=1, vae_channels=(32, 32, 32, 32),
            vae_layers_per_block=1, num_inference_steps=4, num_envs=2, prior_patch_size=2,
            prior_d_model=256, prior_d_ff=512, rounds=2,
        )
    raise ValueError(f"unknown scale {name!r}; valid: 'full', 'cpu'")


@dataclass
class Config:
    """Benchmark settings."""

    scale: Literal["auto", "full", "cpu"] = "auto"
    """"full": SDXL's sizes; "cpu": small widths (under a minute on a CPU); "auto": full on CUDA."""
    device: str | None = None
    """Where everything runs (None: cuda when available, else cpu)."""
    dtypes: list[Literal["float16", "bfloat16", "float32"]] = field(
        default_factory=lambda: ["float16", "bfloat16", "float32"]
    )
    """Pipeline dtypes, measured in this order (each row prints when it is done)."""
    prior_dtype: Literal["float32", "pipeline"] = "float32"
    """The prior's dtype for rollouts and updates: float32 (as `noisear_rl.train`), or the pipeline's."""
    num_envs: int | None = None
    """Episodes in lockstep, also the raw pipeline's batch (None: the scale's, 16 at full)."""
    num_inference_steps: int | None = None
    """Denoising steps (None: the scale's, 50 at full)."""
    rounds: int | None = None
    """Timed rounds of each path (None: the scale's)."""
    seed: int = 0
    """Seed of the random weights, embeddings and noises."""


@dataclass
class DtypeResult:
    """What one dtype measured (None where it did not run)."""

    dtype: str
    raw_images_per_s: float | None = None
    env_images_per_s: float | None = None
    act_share: float | None = None
    """Share of the best env round spent in `NoiseARPolicy.act`."""
    sample_share: float | None = None
    """`prior.sample` alone (device-resident condition) over the best env round."""
    dpo_update_s: float | None = None
    ppo_update_s: float | None = None
    rollout_peak_gib: float | None = None
    update_peak_gib: float | None = None
    error: str | None = None

    @property
    def env_over_raw(self) -> float | None:
        if self.raw_images_per_s is None or self.env_images_per_s is None:
            return None
        return self.env_images_per_s / self.raw_images_per_s


# ---------------------------------------------------------------------------------- components
def sdxl_unet_config(scale: Scale) -> dict[str, Any]:
    """`UNet2DConditionModel` arguments: stable-diffusion-xl-base-1.0's unet/config.json at `scale`."""
    return dict(
        sample_size=scale.latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=scale.unet_channels,
        layers_per_block=scale.unet_layers_per_block,
        attention_head_dim=scale.unet_heads,
        transformer_layers_per_block=scale.unet_transformer_layers,
        cross_attention_dim=COND_DIM,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + POOLED_DIM,  # 2816
        act_fn="silu",
        norm_num_groups=32,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def sdxl_vae_config(scale: Scale) -> dict[str, Any]:
    """`AutoencoderKL` arguments: stable-diffusion-xl-base-1.0's vae/config.json at `scale`
    (`force_upcast=True`: the pipeline decodes in float32 when the VAE is float16)."""
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=scale.vae_channels,
        layers_per_block=scale.vae_layers_per_block,
        act_fn="silu",
        norm_num_groups=32,
        sample_size=8 * scale.latent_size,
        scaling_factor=0.13025,
        force_upcast=True,
    )


def build_pipeline(scale: Scale, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    """A `StableDiffusionXLPipeline` with seeded random weights, built on `device` (fast random
    init on a GPU) and cast to `dtype`; no text encoders, tokenizers or watermarker."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**sdxl_unet_config(scale))
        torch.manual_seed(seed)
        vae = AutoencoderKL(**sdxl_vae_config(scale))
    # SDXL-base's scheduler config; SDXLBackend swaps in DPMSolver++ from it, as for real weights.
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
        unet=unet.eval(), scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    return pipe.to(device, dtype)


class RandomEmbeddingSDXLBackend(SDXLBackend):
    """`SDXLBackend` whose prompts enter as random embeddings of the text encoders' output shapes:
    `prompt_embeds` [B, 77, 2048] and pooled [B, 1280], seeded by the prompt (the same prompt
    gives the same embedding); negative embeddings are zeros (SDXL's `force_zeros_for_empty_prompt`)."""

    def _encode_batch(self, prompts: list[str]) -> Condition:
        embeds, pooled = [], []
        for prompt in prompts:
            generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
            embeds.append(torch.randn(COND_LENGTH, COND_DIM, generator=generator))
            pooled.append(torch.randn(POOLED_DIM, generator=generator))
        embeds_BLD = torch.stack(embeds).to(self.device, self.dtype)
        pooled_BD = torch.stack(pooled).to(self.device, self.dtype)
        return Condition(
            embeds_BLD,
            {
                "pooled_prompt_embeds": pooled_BD,
                "negative_prompt_embeds": torch.zeros_like(embeds_BLD),
                "negative_pooled_prompt_embeds": torch.zeros_like(pooled_BD),
            },
        )


class MeanPixelReward(RewardModel):
    """The mean pixel value: a reward that costs nothing, computed on the device it was moved to."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)  # `.to(device)` moves it

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        return RewardOutput(images.mean(dim=(1, 2, 3)))


class TimedPolicy(NoiseARPolicy):
    """`NoiseARPolicy` that adds the wall time of every `act` (synchronised) to `seconds`."""

    def __init__(self, prior: NoiseARPrior) -> None:
        super().__init__(prior)
        self.seconds = 0.0

    def act(self, obs: dict[str, Any], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        start = time.perf_counter()
        action, log_prob = super().act(obs, generator)
        synchronize(self.prior.device)
        self.seconds += time.perf_counter() - start
        return action, log_prob


def build_prior(scale: Scale, device: torch.device, dtype: torch.dtype, seed: int) -> NoiseARPrior:
    """The release-size prior at `scale` (1 layer, 1 head, dropout 0.15), seeded, in eval mode."""
    torch.manual_seed(seed)
    prior = NoiseARPrior(
        latent_channels=4, latent_height=scale.latent_size, latent_width=scale.latent_size,
        patch_size=scale.prior_patch_size, cond_dim=COND_DIM, d_model=scale.prior_d_model,
        d_ff=scale.prior_d_ff, n_heads=1, n_layers=1, dropout=0.15,
    )
    return prior.to(device, dtype).eval()


# ---------------------------------------------------------------------------------- measuring
@dataclass
class EpisodeFlops:
    """FLOPs of one image's episode, counted by `torch.utils.flop_counter` (the same on any device)."""

    unet_forward: float
    """One UNet forward of one latent (CFG runs two per step)."""
    vae_decode: float
    prior_sample: float
    """One KV-cached `prior.sample` (every patch)."""
    num_inference_steps: int

    @property
    def pipeline(self) -> float:
        return 2 * self.num_inference_steps * self.unet_forward + self.vae_decode

    @property
    def prior_share(self) -> float:
        return self.prior_sample / (self.pipeline + self.prior_sample)


def count_flops(scale: Scale, num_inference_steps: int, device: torch.device) -> EpisodeFlops:
    """Counts the FLOPs of one image: the UNet and VAE on the meta device (no memory, no time),
    the prior (whose checks read values) on `device` in float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    def flops(fn: Any) -> float:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            fn()
        return float(counter.get_total_flops())

    size = scale.latent_size
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sdxl_unet_config(scale)).eval()
        vae = AutoencoderKL(**sdxl_vae_config(scale)).eval()
        latents = torch.zeros(1, 4, size, size)
        added = {"text_embeds": torch.zeros(1, POOLED_DIM), "time_ids": torch.zeros(1, 6)}
        embeds = torch.zeros(1, COND_LENGTH, COND_DIM)
        unet_forward = flops(lambda: unet(latents, torch.tensor([999]), embeds, added_cond_kwargs=added))
        vae_decode = flops(lambda: vae.decode(latents))
    prior = build_prior(scale, device, torch.float32, seed=0)
    cond = torch.randn(1, COND_LENGTH, COND_DIM, device=device)
    prior_sample = flops(lambda: prior.sample(cond, generator=torch.Generator(device=device).manual_seed(0)))
    return EpisodeFlops(unet_forward, vae_decode, prior_sample, num_inference_steps)


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak memory allocated on `device` since the last reset, in GiB (None off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    """Starts a new peak-memory measurement (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def seconds_of(fn: Any, device: torch.device) -> float:
    """Wall time of `fn()` after the device's queued work, up to the end of its own."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def rollout_batch(prior: NoiseARPrior, group_size: int, seed: int) -> RolloutBatch:
    """`UPDATE_BATCH` rollouts on the prior's device: `group_size` per prompt, random noises and
    rewards, the condition repeated within each group, old log-probs the prior's own (ratio 1)."""
    generator = torch.Generator().manual_seed(seed)
    num_prompts = UPDATE_BATCH // group_size
    embeds = torch.randn(num_prompts, COND_LENGTH, COND_DIM, generator=generator).repeat_interleave(group_size, 0)
    noise = torch.randn(UPDATE_BATCH, *prior.latent_shape, generator=generator).to(prior.device)
    cond = Condition(embeds.to(prior.device))
    with torch.no_grad():
        log_probs = prior.log_prob(noise, cond.embeds, per_patch=True).float()
    return RolloutBatch(
        prompts=[f"update prompt {i // group_size}" for i in range(UPDATE_BATCH)],
        cond=cond,
        noise=noise,
        log_probs=log_probs,
        rewards=torch.randn(UPDATE_BATCH, generator=generator).to(prior.device),
    )


def update_seconds(algorithm: Algorithm, batch: RolloutBatch, device: torch.device) -> float:
    """Time of one `update` (after a warm-up update that also creates the optimizer state)."""
    algorithm.update(batch)
    return seconds_of(lambda: algorithm.update(batch), device)


def measure_dtype(config: Config, scale: Scale, device: torch.device, dtype_name: str) -> DtypeResult:
    """Builds the pipeline, env and prior in one dtype and measures everything for it."""
    dtype = getattr(torch, dtype_name)
    prior_dtype = torch.float32 if config.prior_dtype == "float32" else dtype
    num_envs = config.num_envs or scale.num_envs
    steps = config.num_inference_steps or scale.num_inference_steps
    rounds = config.rounds or scale.rounds
    result = DtypeResult(dtype_name)

    backend = RandomEmbeddingSDXLBackend(
        pipe=build_pipeline(scale, device, dtype, config.seed), device=device, dtype=dtype,
        num_inference_steps=steps, batch_size=num_envs,
    )
    prompts = [f"benchmark prompt {i}" for i in range(num_envs)]
    venv = NoiseVectorEnv(
        num_envs, backend=backend, device=str(device), reward=MeanPixelReward(), prompts=prompts,
        patch_size=scale.prior_patch_size,
    )
    reward = venv.world.reward
    prior = build_prior(scale, device, prior_dtype, config.seed)
    policy = TimedPolicy(prior)

    # The raw path: the same prompts' embeddings on the device, encoded once; Gaussian latents.
    cond = backend.encode(prompts).to(device, dtype)
    noise = torch.randn((num_envs, *backend.latent_shape), generator=torch.Generator().manual_seed(config.seed))
    noise = noise.to(device, dtype)

    def raw_round(num_inference_steps: int) -> None:
        output = backend.pipe(
            prompt_embeds=cond.embeds, **cond.extras, latents=noise, num_inference_steps=num_inference_steps,
            guidance_scale=backend.guidance_scale, height=backend.height, width=backend.width, output_type="pt",
        )
        reward.evaluate(output.images, prompts)

    def env_round() -> None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        collect_rollouts(venv, policy, prompts, generator=generator)

    def sample_alone() -> None:
        prior.sample(cond.embeds.to(prior_dtype), generator=torch.Generator(device=device).manual_seed(config.seed))

    reset_peak(device)
    # Warm-up with 2 denoising steps: the same shapes and allocations as the timed rounds, at a
    # fraction of their time.
    backend.num_inference_steps = min(2, steps)
    env_round()
    backend.num_inference_steps = steps
    raw_round(min(2, steps))
    sample_alone()

    env_times, act_times, raw_times, sample_times = [], [], [], []
    for _ in range(rounds):  # interleaved, so both paths see the same machine
        policy.seconds = 0.0
        env_times.append(seconds_of(env_round, device))
        act_times.append(policy.seconds)
        raw_times.append(seconds_of(lambda: raw_round(steps), device))
        sample_times.append(seconds_of(sample_alone, device))
    best = min(range(rounds), key=lambda i: env_times[i])
    result.env_images_per_s = num_envs / env_times[best]
    result.raw_images_per_s = num_envs / min(raw_times)
    result.act_share = act_times[best] / env_times[best]
    result.sample_share = min(sample_times) / env_times[best]
    result.rollout_peak_gib = peak_gib(device)

    del venv, backend, cond, noise, reward, policy
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak(device)
    # A release-shaped prior has no fitted shift to lengthen: the updates train the shift's maps.
    dpo = DPO(DPOConfig(rollouts_per_prompt=2, score_gap=0.0, epochs=1, minibatch_size=UPDATE_BATCH // 2,
                        **shift_map_settings("dpo")), prior)
    result.dpo_update_s = update_seconds(dpo, rollout_batch(prior, 2, config.seed), device)  # 8 pairs = 16 noises
    del dpo
    ppo = PPO(PPOConfig(rollouts_per_prompt=2, epochs=1, minibatch_size=UPDATE_BATCH, **shift_map_settings("ppo")), prior)
    result.ppo_update_s = update_seconds(ppo, rollout_batch(prior, 2, config.seed), device)
    result.update_peak_gib = peak_gib(device)
    return result


def run(config: Config) -> list[DtypeResult]:
    """Measures every dtype of `config`, printing each row as it is done; returns the results."""
    from diffusers.utils import logging as diffusers_logging

    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scale = scale_preset(("full" if device.type == "cuda" else "cpu") if config.scale == "auto" else config.scale)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32", on every `.to(dtype)`
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*upcast_vae.*", category=FutureWarning)  # fp16 VAE decode
            return measure_all(config, scale, device)
    finally:
        diffusers_logging.set_verbosity(verbosity)


def measure_all(config: Config, scale: Scale, device: torch.device) -> list[DtypeResult]:
    """The body of `run`: the header and the FLOP count, then one row per dtype."""
    print_header(config, scale, device)
    flops = count_flops(scale, config.num_inference_steps or scale.num_inference_steps, device)
    print(
        f"FLOPs per image: UNet 2 x {flops.num_inference_steps} x {flops.unet_forward / 1e12:.4g} TFLOP + VAE decode "
        f"{flops.vae_decode / 1e12:.4g} TFLOP = {flops.pipeline / 1e12:.4g} TFLOP; prior sample "
        f"{flops.prior_sample / 1e9:.4g} GFLOP = {100 * flops.prior_share:.5f}% of the episode's FLOPs"
    )
    print(TABLE_HEADER, flush=True)
    results = []
    for dtype_name in config.dtypes:
        started = time.perf_counter()
        try:
            result = measure_dtype(config, scale, device, dtype_name)
        except torch.cuda.OutOfMemoryError:
            result = DtypeResult(dtype_name, error="does not fit in GPU memory")
        except Exception as error:  # one dtype's failure must not lose the others' numbers
            traceback.print_exc()
            result = DtypeResult(dtype_name, error=f"failed: {type(error).__name__}: {error}")
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results.append(result)
        first = next((r for r in results if r.error is None), None)
        print(format_row(result, first, time.perf_counter() - started), flush=True)
    print(f"peak host RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB", flush=True)
    return results


# ---------------------------------------------------------------------------------- printing
def print_header(config: Config, scale: Scale, device: torch.device) -> None:
    """The device, versions and sizes the rows were measured with."""
    import diffusers

    num_envs = config.num_envs or scale.num_envs
    steps = config.num_inference_steps or scale.num_inference_steps
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}, diffusers {diffusers.__version__}")
    if device.type == "cuda":
        precision, cudnn_tf32 = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        print(f"float32 matmul precision {precision!r}, cudnn TF32 {cudnn_tf32}")
    latent, image = scale.latent_size, 8 * scale.latent_size
    num_patches = (latent // scale.prior_patch_size) ** 2
    print(
        f"scale {scale.name}: latents 4x{latent}x{latent} -> images {image}x{image}, UNet channels "
        f"{scale.unet_channels} x transformer layers {scale.unet_transformer_layers}, {steps} steps DPMSolver++, "
        f"CFG 5.5, batch {num_envs}; prompt_embeds [B, {COND_LENGTH}, {COND_DIM}], pooled [B, {POOLED_DIM}]; "
        f"prior patch {scale.prior_patch_size} ({num_patches} patches), d_model {scale.prior_d_model}, "
        f"d_ff {scale.prior_d_ff}, {config.prior_dtype if config.prior_dtype == 'float32' else 'pipeline dtype'}; "
        f"updates at batch {UPDATE_BATCH}; best of {config.rounds or scale.rounds} interleaved rounds"
    )


TABLE_HEADER = (
    "| dtype | raw pipeline + reward (img/s) | vector env + prior (img/s) | env / raw (>= 0.95) "
    "| prior share: policy.act | prior share: sample alone (< 0.1%) | DPO update (s) | PPO update (s) "
    "| peak GPU rollouts (GiB) | peak GPU updates (GiB) | raw, env vs first dtype | wall (s) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_row(result: DtypeResult, first: DtypeResult | None, wall_s: float) -> str:
    """One markdown table row (the error in place of the numbers when the dtype did not run); its
    throughputs also as ratios to `first`, the first dtype that ran, measured in the same run."""
    if result.error is not None:
        return f"| {result.dtype} | {result.error} |  |  |  |  |  |  |  |  |  | {wall_s:.0f} |"
    assert first is not None
    versus = (
        f"{result.raw_images_per_s / first.raw_images_per_s:.2f}x, "
        f"{result.env_images_per_s / first.env_images_per_s:.2f}x vs {first.dtype}"
    )
    return (
        f"| {result.dtype} | {_number(result.raw_images_per_s, '.3f')} | {_number(result.env_images_per_s, '.3f')} "
        f"| {_number(result.env_over_raw, '.3f')}x | {_number(100 * result.act_share, '.3f')}% "
        f"| {_number(100 * result.sample_share, '.4f')}% | {_number(result.dpo_update_s, '.3f')} "
        f"| {_number(result.ppo_update_s, '.3f')} | {_number(result.rollout_peak_gib, '.1f')} "
        f"| {_number(result.update_peak_gib, '.1f')} | {versus} | {wall_s:.0f} |"
    )


def main(argv: list[str] | None = None) -> None:
    """The command line; exits with status 1 when a dtype failed for another reason than memory."""
    results = run(tyro.cli(Config, args=argv, description=__doc__.splitlines()[0]))
    if any(r.error is not None and not r.error.startswith("does not fit") for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
