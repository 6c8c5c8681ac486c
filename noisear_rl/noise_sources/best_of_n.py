"""`best-of-n`: draw N Gaussian noises per prompt, keep the one whose image scores best.

An oracle, not a noise prior: it spends N image generations and N reward evaluations per noise
(all counted in its time), and it selects with the very reward it is usually evaluated on. It is
the upper bound a prompt-conditional noise distribution can hope to reach with one draw.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noisear_rl.noise_sources.base import NoiseSource, SourceSpec, register_noise_source
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.reward_models import RewardModel, load_reward


@register_noise_source("best-of-n")
class BestOfNSource(NoiseSource):
    """Keeps, per prompt, the best of N Gaussian noises by the reward of their images.

    The first candidate is the base noise (what `gaussian` returns for the same generator), so the
    chosen noise never scores worse than it by the selection reward (with a deterministic sampler).

    Args:
        backend: Generates the candidates' images.
        reward: The selection reward: a `RewardModel` (the evaluation passes its first metric) or a
            `load_reward` name/spec.
        n: Candidates per prompt.
        batch_size: Images per `backend.generate` call (None: all B x N at once).
        sampler_seed: Seed of the generator handed to `backend.generate` (deterministic samplers
            ignore it).

    Attributes:
        last_scores: [B] the selection reward of the chosen noises of the last call (CPU).
    """

    argument = "n"

    def __init__(
        self,
        backend: DiffusionBackend,
        reward: RewardModel | str | None = None,
        n: int = 8,
        batch_size: int | None = None,
        sampler_seed: int = 0,
    ) -> None:
        super().__init__(backend)
        if n < 1:
            raise ValueError(f"best-of-n needs n >= 1, got {n}")
        if reward is None:
            raise ValueError("best-of-n needs a reward to select by: give the spec 'best-of-n:8?reward=NAME' or reward=")
        self.reward = load_reward(reward).to(backend.device) if isinstance(reward, str) else reward
        self.n = int(n)
        self.batch_size = batch_size
        self.sampler_seed = sampler_seed
        self.last_scores: Tensor | None = None

    @classmethod
    def default_label(cls, spec: SourceSpec) -> str:
        """best-of-N."""
        return f"best-of-{spec.argument or spec.options.get('n', 8)}"

    @torch.no_grad()
    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        batch = len(prompts)
        candidates_NBCHW = torch.stack([self.base_noise(batch, generator) for _ in range(self.n)])
        flat = candidates_NBCHW.flatten(0, 1)
        all_cond = Condition.cat([cond] * self.n)
        all_prompts = prompts * self.n
        step = self.batch_size or len(flat)
        scores = []
        for first in range(0, len(flat), step):
            rows = slice(first, first + step)
            sampler = torch.Generator(device=self.backend.device).manual_seed(self.sampler_seed)
            images = self.backend.generate(flat[rows], all_cond[rows], generator=sampler)
            scores.append(self.reward.evaluate(images, all_prompts[rows]).scores.float().cpu())
        scores_NB = torch.cat(scores).view(self.n, batch)
        best = scores_NB.argmax(dim=0)  # the first maximum: ties keep the earliest candidate
        self.last_scores = scores_NB.max(dim=0).values
        return candidates_NBCHW[best.to(candidates_NBCHW.device), torch.arange(batch, device=candidates_NBCHW.device)]
