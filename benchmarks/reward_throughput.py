"""Images per second of each built-in reward on tiny random models (CPU), and the preprocessing share.

The models are tiny (CLIP: hidden 32, 2 layers, 32 px), so the time left is the per-call overhead:
tokenising, preprocessing (resizing the input to the model's resolution), JPEG encoding, Python.
Larger inputs show what resizing costs relative to everything else.

    python benchmarks/reward_throughput.py --batch-size 16 --resolutions 64 512
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from torch import Tensor

from noisear_rl.reward_models import RewardModel, list_rewards, load_reward
from noisear_rl.reward_models.clip_rewards import AestheticScore, CLIPRewardModel, CLIPScore, PickScore
from noisear_rl.reward_models.hpsv2 import HPSv2
from noisear_rl.reward_models.tiny import tiny_aesthetic_mlp, tiny_clip_model, tiny_clip_tokenizer


@dataclass
class Config:
    """Benchmark settings."""

    batch_size: int = 16
    """Images per reward call."""
    resolutions: list[int] = field(default_factory=lambda: [64, 512])
    """Square input image sizes to score (the diffusion output resolution)."""
    repeats: int = 5
    """Timed calls per (reward, resolution); the median is reported."""
    threads: int = 1
    """torch CPU threads."""


def tiny_imagereward(workdir: Path) -> RewardModel:
    """ImageReward with a tiny random BLIP (hidden 32, 2 layers, 32 px) and a toy BERT vocabulary."""
    from noisear_rl.reward_models.blip import MedConfig, ViTConfig
    from noisear_rl.reward_models.imagereward import ImageRewardModel

    vocab = "[PAD] [UNK] [CLS] [SEP] [MASK] a an the red blue green circle square triangle on left right and".split()
    (workdir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    vision = ViTConfig(image_size=32, patch_size=8, width=32, depth=2, num_heads=2)
    med = MedConfig(
        vocab_size=len(vocab) + 2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return ImageRewardModel.from_config(vision, med, workdir, seed=0)


def tiny_rewards(workdir: Path) -> dict[str, Callable[[], RewardModel]]:
    """A builder per built-in reward, each on tiny random weights (or none needed)."""
    builders: dict[str, Callable[[], RewardModel]] = {
        "clipscore": lambda: CLIPScore(clip_model=tiny_clip_model(), tokenizer=tiny_clip_tokenizer()),
        "pickscore": lambda: PickScore(clip_model=tiny_clip_model(), tokenizer=tiny_clip_tokenizer()),
        "hpsv2": lambda: HPSv2(clip_model=tiny_clip_model(), tokenizer=tiny_clip_tokenizer()),
        "aesthetic": lambda: AestheticScore(clip_model=tiny_clip_model(), mlp=tiny_aesthetic_mlp()),
        "jpeg-compressibility": lambda: load_reward("jpeg-compressibility"),
        "jpeg-incompressibility": lambda: load_reward("jpeg-incompressibility"),
    }
    if "imagereward" in list_rewards():
        builders["imagereward"] = lambda: tiny_imagereward(workdir)
    if "shapes" in list_rewards():
        builders["shapes"] = lambda: load_reward("shapes")
    return builders


def prompts_for(n: int) -> list[str]:
    """Prompts of the Shapes world (which every reward here can read)."""
    from noisear_rl.worlds.shapes.world import sample_prompts

    return sample_prompts(n, seed=0)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def preprocess_of(reward: RewardModel) -> Callable[[Tensor], Tensor] | None:
    """The reward's image preprocessing, where it has a separate one."""
    if isinstance(reward, CLIPRewardModel):
        return reward.preprocess
    if type(reward).__name__ == "ImageRewardModel":
        from noisear_rl.reward_models.imagereward import preprocess_images

        size = reward.network.vision_config.image_size
        return lambda images: preprocess_images(images, size)
    return None


def main(config: Config) -> None:
    torch.set_num_threads(config.threads)
    prompts = prompts_for(config.batch_size)
    print(f"batch {config.batch_size}, {config.threads} thread(s), median of {config.repeats} calls")
    print(f"{'reward':<24}{'input':>7}{'images/s':>12}{'preprocess':>12}")
    with tempfile.TemporaryDirectory() as workdir, torch.no_grad():
        for name, build in tiny_rewards(Path(workdir)).items():
            reward = build()
            preprocess = preprocess_of(reward)
            for resolution in config.resolutions:
                images = torch.rand(
                    config.batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)
                )
                seconds = median_seconds(lambda: reward(images, prompts), config.repeats)
                share = "-"
                if preprocess is not None:
                    share = f"{100 * median_seconds(lambda: preprocess(images), config.repeats) / seconds:.0f}%"
                print(f"{name:<24}{resolution:>7}{config.batch_size / seconds:>12.0f}{share:>12}")


if __name__ == "__main__":
    main(tyro.cli(Config))
