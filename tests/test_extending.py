"""The worked example of docs/design.md: a new algorithm and a new reward, one file each
(examples/extending/), registered by importing them and used with nothing else touched."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import pytest
import torch

from noisear_rl.algorithms.base import ALGORITHMS, get_algorithm
from noisear_rl.reward_models import load_reward
from noisear_rl.reward_models.registry import REWARDS
from noisear_rl.train import RunConfig, train
from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline
from test_train_cli import tiny_prior

EXAMPLES = Path(__file__).parents[1] / "examples" / "extending"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"extending_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def examples() -> dict[str, ModuleType]:
    """The two example modules, imported (which registers them); the registries are restored after."""
    for registry in (ALGORITHMS, REWARDS):
        registry.names()  # the built-ins register first, so the restored registries keep them
    saved = {registry: dict(registry._entries) for registry in (ALGORITHMS, REWARDS)}
    yield {name: load(EXAMPLES / f"{name}.py") for name in ("my_algorithm", "my_reward")}
    for registry, entries in saved.items():
        registry._entries.clear()
        registry._entries.update(entries)


@pytest.fixture(scope="module")
def backend() -> ShapesBackend:
    return ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=2)


def test_the_examples_are_one_short_file_each():
    lines = {path.name: len(path.read_text().splitlines()) for path in EXAMPLES.glob("*.py")}
    assert lines.keys() == {"my_algorithm.py", "my_reward.py"}
    assert lines["my_algorithm.py"] < 150 and lines["my_reward.py"] < 30, lines


def test_the_new_reward_scores_images_and_is_the_env_reward(examples, backend):
    reward = load_reward("brightness")
    grey = torch.full((3, 3, 8, 8), 0.5)
    grey[0], grey[2] = 0.0, 1.0
    assert reward(grey, ["a", "b", "c"]).tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert load_reward("brightness:2.0")(grey, ["a", "b", "c"]).tolist() == pytest.approx([0.0, 1.0, 2.0])

    env = gym.make("NoiseAR-Shapes-v1", backend=backend, reward="brightness", return_image=True)
    env.reset(seed=0)
    terminated = False
    while not terminated:
        _, score, terminated, _, info = env.step(env.action_space.sample())
    assert 0.0 < score < 1.0 and score == pytest.approx(float(torch.as_tensor(info["image"]).mean()), abs=1e-6)


def test_the_new_algorithm_trains_on_the_new_reward(examples, backend, tmp_path, monkeypatch):
    elite = get_algorithm("elite")
    assert elite is examples["my_algorithm"].Elite
    # Every update lowers its own objective, the elites' NLL, on the batch it is given.
    losses = []
    update = elite.update

    def measured_update(self, batch):
        with torch.no_grad():
            before = float(self.loss(batch, torch.arange(len(batch))))
        metrics = update(self, batch)
        with torch.no_grad():
            losses.append((before, float(self.loss(batch, torch.arange(len(batch))))))
        return metrics

    monkeypatch.setattr(elite, "update", measured_update)
    run = RunConfig(algo="elite", reward="brightness", output_dir=tmp_path / "run", num_envs=8, num_eval_prompts=4,
                    progress=False, tensorboard=False)
    config = elite.config_class(iterations=2, prompts_per_iteration=2, rollouts_per_prompt=4, elites=1, lr=1e-3,
                                trainable="all")
    prior = tiny_prior(backend.cond_dim)
    start = [p.detach().clone() for p in prior.parameters()]
    summary = train(run, config, backend=backend, prior=prior)

    assert len(losses) == 2 and all(after < before for before, after in losses), losses
    assert any(not torch.equal(a, b) for a, b in zip(start, prior.parameters()))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for record in records[1:3]:  # the two iterations: the elites are each prompt's best rollouts
        assert 0.0 < record["rollout/reward"] <= record["train/elite_reward"] < 1.0
    assert 0.0 < summary["heldout_after"]["reward"] < 1.0
