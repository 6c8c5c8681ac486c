"""Noise sources: one seeded interface; Gaussian, Golden Noise (NPNet), erasure-injection, NoiseAR, best-of-N."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch
from torch import Tensor

from noisear_rl.data import shard_path, write_manifest, write_prompts, write_shard
from noisear_rl.noise_sources import list_noise_sources, load_noise_source, parse_spec, source_label
from noisear_rl.noise_sources.golden_train import GoldenTrainConfig, train_golden_network
from noisear_rl.noise_sources.npnet import NoisePromptNetwork
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.vp import ddim_step
from noisear_rl.prior import NoiseARPrior
from noisear_rl.reward_models import RewardModel, RewardOutput

PROMPTS = ["a red circle on the left", "a blue square on the right", "a green triangle on the top"]


class ToyBackend(DiffusionBackend):
    """A fast, deterministic stand-in for a diffusion model (elementwise maps, batch-invariant).

    The condition of a prompt is a fixed function of its text; `predict_noise` mixes the latents
    with a prompt-dependent target and scales with guidance; `generate` maps the latent's first
    three channels through a prompt-dependent sigmoid and upsamples 2x.
    """

    latent_shape = (4, 4, 4)
    cond_dim = 3
    num_inference_steps = 4
    guidance_scale = 3.0
    device = torch.device("cpu")

    def __init__(self) -> None:
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
        self._alphas = torch.cumprod(1 - betas, 0)
        self.generate_calls = 0

    def encode(self, prompts: list[str]) -> Condition:
        seeds = [zlib.crc32(p.encode()) for p in prompts]
        embeds = torch.stack([torch.randn(2, self.cond_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return Condition(embeds, {"pooled": embeds.mean(1)})

    def _target(self, cond: Condition) -> Tensor:
        return cond.embeds.mean(dim=(1, 2))[:, None, None, None].expand(-1, *self.latent_shape)

    def predict_noise(self, latents: Tensor, timestep: int, cond: Condition, guidance_scale: float) -> Tensor:
        return 0.9 * latents + 0.1 * guidance_scale * self._target(cond) * (timestep / 1000)

    @property
    def alphas_cumprod(self) -> Tensor:
        return self._alphas

    def timesteps(self, num_inference_steps: int | None = None) -> Tensor:
        n = num_inference_steps or self.num_inference_steps
        return torch.arange(n, 0, -1) * (1000 // n) - 1

    def generate(self, latents: Tensor, cond: Condition, generator: torch.Generator | None = None) -> Tensor:
        self.check_latents(latents, len(cond))
        self.generate_calls += 1
        x = torch.sigmoid(latents[:, :3] + self._target(cond)[:, :3])
        return x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


class RedReward(RewardModel):
    """Mean red intensity; `success` when it exceeds 0.5."""

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        red = images[:, 0].mean(dim=(1, 2))
        return RewardOutput(red, {"success": (red > 0.5).float(), "green": images[:, 1].mean(dim=(1, 2))})


@pytest.fixture(scope="module")
def backend() -> ToyBackend:
    return ToyBackend()


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_prior(backend: DiffusionBackend, seed: int = 0) -> NoiseARPrior:
    torch.manual_seed(seed)
    c, h, w = backend.latent_shape
    prior = NoiseARPrior(latent_channels=c, latent_height=h, latent_width=w, patch_size=2, cond_dim=backend.cond_dim,
                         d_model=16, d_ff=32, n_heads=2, n_layers=1, dropout=0.0, head_init_scale=0.3)
    return prior.eval()


# ------------------------------------------------------------------------------ specs and registry
def test_parse_spec_reads_name_argument_and_typed_options() -> None:
    spec = parse_spec("noisear:runs/dpo/prior?temperature=0.5&label=noisear+dpo,v2&steps=0,5&flag=true&n=8")
    assert (spec.name, spec.argument) == ("noisear", "runs/dpo/prior")
    assert spec.options == {"temperature": 0.5, "label": "noisear+dpo,v2", "steps": (0, 5), "flag": True, "n": 8}
    assert parse_spec("best-of-n:8?reward=imagereward:1.0,pickscore:0.5").options["reward"] == "imagereward:1.0,pickscore:0.5"
    assert parse_spec("gaussian") == parse_spec("gaussian")
    assert parse_spec("best-of-n:8").argument == "8"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_spec("gaussian?temperature")
    with pytest.raises(ValueError, match="no name"):
        parse_spec(":x")


def test_registry_lists_builtins_and_rejects_bad_specs(backend: ToyBackend) -> None:
    assert {"gaussian", "golden", "erasure-injection", "noisear", "best-of-n"} <= set(list_noise_sources())
    with pytest.raises(KeyError, match="valid names: .*gaussian"):
        load_noise_source("gausian", backend=backend)
    with pytest.raises(TypeError, match="no option.*'temprature'.*it takes"):
        load_noise_source("erasure-injection?temprature=1", backend=backend)
    with pytest.raises(TypeError, match="takes no ':ARGUMENT'"):
        load_noise_source("gaussian:3", backend=backend)
    assert source_label("best-of-n:8") == "best-of-8"
    assert source_label("noisear:runs/x?label=noisear+dpo") == "noisear+dpo"
    assert load_noise_source("gaussian?label=baseline", backend=backend).name == "baseline"
    assert load_noise_source("best-of-n:3", backend=backend, reward=RedReward()).name == "best-of-3"
    by_name = load_noise_source("best-of-n:2?reward=jpeg-compressibility", backend=backend, reward=RedReward())
    assert by_name.n == 2 and not isinstance(by_name.reward, RedReward)  # the spec's reward wins


# ------------------------------------------------------------------------------ gaussian
def test_gaussian_is_torch_randn_of_the_generator(backend: ToyBackend) -> None:
    source = load_noise_source("gaussian", backend=backend)
    noise = source(PROMPTS, backend.encode(PROMPTS), generator(7))
    torch.testing.assert_close(noise, torch.randn((3, *backend.latent_shape), generator=generator(7)), rtol=0, atol=0)


def test_every_source_is_shaped_and_seeded(backend: ToyBackend) -> None:
    cond = backend.encode(PROMPTS)
    sources = [
        load_noise_source("gaussian", backend=backend),
        load_noise_source("erasure-injection?num_noises=3&delta=0.5&steps=0,2", backend=backend),
        load_noise_source("best-of-n:3", backend=backend, reward=RedReward()),
        load_noise_source("golden", backend=backend, network=NoisePromptNetwork(4, 4, 4, cond_dim=3, width=8, svd_hidden=8)),
        load_noise_source("noisear", backend=backend, prior=small_prior(backend)),
    ]
    for source in sources:
        first = source(PROMPTS, cond, generator(1))
        assert first.shape == (3, *backend.latent_shape) and first.dtype == torch.float32, source.name
        torch.testing.assert_close(source(PROMPTS, cond, generator(1)), first, rtol=0, atol=0, msg=source.name)
        assert not torch.allclose(source(PROMPTS, cond, generator(2)), first), source.name
    with pytest.raises(ValueError, match="3 prompts but a condition for 2"):
        sources[0](PROMPTS, cond[:2], generator())


# ------------------------------------------------------------------------------ erasure-injection
def test_erasure_with_one_noise_and_no_injection_returns_the_base_noise(backend: ToyBackend) -> None:
    source = load_noise_source("erasure-injection?num_noises=1&delta=0", backend=backend)
    torch.testing.assert_close(source(PROMPTS, backend.encode(PROMPTS), generator(3)),
                               torch.randn((3, *backend.latent_shape), generator=generator(3)), rtol=0, atol=0)


def test_erasure_is_the_scaled_sum_and_injection_the_normalised_blend(backend: ToyBackend) -> None:
    cond = backend.encode(PROMPTS)
    g = generator(4)
    draws = [torch.randn((3, *backend.latent_shape), generator=g) for _ in range(4)]
    erased = sum(draws) / 2.0
    erase_only = load_noise_source("erasure-injection?num_noises=4&delta=0", backend=backend)
    torch.testing.assert_close(erase_only(PROMPTS, cond, generator(4)), erased)

    # Two prediction steps (indices 0 and 1) weighted 1 and 3: the second is taken on the DDIM-moved latent.
    t0, t1 = (int(t) for t in backend.timesteps()[:2])
    eps0 = backend.predict_noise(erased, t0, cond, 2.0)
    eps1 = backend.predict_noise(ddim_step(erased, eps0, backend.alphas_cumprod[t0], backend.alphas_cumprod[t1]), t1, cond, 2.0)
    injected = (1 * eps0 + 3 * eps1) / math.sqrt(10)
    expected = (erased + 0.5 * injected) / math.sqrt(1.25)
    spec = "erasure-injection?num_noises=4&delta=0.5&steps=0,1&weights=1,3&guidance_scale=2"
    source = load_noise_source(spec + "&renormalize=false", backend=backend)
    torch.testing.assert_close(source(PROMPTS, cond, generator(4)), expected)
    rms = expected.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
    torch.testing.assert_close(load_noise_source(spec, backend=backend)(PROMPTS, cond, generator(4)), expected / rms)
    with pytest.raises(ValueError, match="outside the backend's 4-step schedule"):
        load_noise_source("erasure-injection?steps=4", backend=backend)


# ------------------------------------------------------------------------------ best-of-n
def test_best_of_n_never_scores_below_gaussian_and_picks_a_candidate(backend: ToyBackend) -> None:
    cond, reward = backend.encode(PROMPTS), RedReward()
    gaussian = load_noise_source("gaussian", backend=backend)
    best = load_noise_source("best-of-n:6", backend=backend, reward=reward)
    base = gaussian(PROMPTS, cond, generator(5))
    chosen = best(PROMPTS, cond, generator(5))
    base_scores = reward(backend.generate(base, cond), PROMPTS)
    chosen_scores = reward(backend.generate(chosen, cond), PROMPTS)
    assert (chosen_scores >= base_scores).all()
    assert (chosen_scores > base_scores).any()  # 6 draws: some prompt improves
    torch.testing.assert_close(chosen_scores, best.last_scores)
    g = generator(5)
    candidates = torch.stack([torch.randn((3, *backend.latent_shape), generator=g) for _ in range(6)])
    for i in range(3):
        assert any(torch.equal(chosen[i], c) for c in candidates[:, i])
    one = load_noise_source("best-of-n:1?batch_size=2", backend=backend, reward=reward)
    torch.testing.assert_close(one(PROMPTS, cond, generator(5)), base, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs a reward"):
        load_noise_source("best-of-n:4", backend=backend)


# ------------------------------------------------------------------------------ noisear
def test_noisear_samples_the_prior_with_the_generator(backend: ToyBackend, tmp_path: Path) -> None:
    prior, cond = small_prior(backend), backend.encode(PROMPTS)
    source = load_noise_source("noisear?temperature=0.5", backend=backend, prior=prior)
    expected = prior.sample(cond.embeds, generator=generator(6), temperature=0.5)
    torch.testing.assert_close(source(PROMPTS, cond, generator(6)), expected, rtol=0, atol=0)

    # A training run folder: its final prior/, which records the temperature the run ended with.
    prior.register_to_config(temperature=0.7)
    prior.save_pretrained(str(tmp_path / "run" / "prior"))
    (tmp_path / "run" / "config.json").write_text(json.dumps({"run": {"temperature": None}}))
    from_run = load_noise_source(f"noisear:{tmp_path / 'run'}", backend=backend)
    assert from_run.temperature == 0.7
    torch.testing.assert_close(from_run(PROMPTS, cond, generator(6)),
                               prior.sample(cond.embeds, generator=generator(6), temperature=0.7))
    assert load_noise_source(f"noisear:{tmp_path / 'run'}?temperature=1.0", backend=backend).temperature == 1.0
    with pytest.raises(FileNotFoundError, match="no NoiseAR prior"):
        load_noise_source(f"noisear:{tmp_path / 'missing'}", backend=backend)


# ------------------------------------------------------------------------------ golden (NPNet)
def test_noisear_without_a_path_takes_the_shapes_worlds_shipped_prior() -> None:
    from noisear_rl.worlds.shapes import ShapesBackend

    backend = ShapesBackend()  # the shipped weights
    prior = load_noise_source("noisear", backend=backend).prior
    assert prior.config.cond_dim == backend.cond_dim


def test_golden_without_a_path_takes_the_shapes_worlds_shipped_network() -> None:
    """The shipped network is trained: it moves a noise (the golden step's small move), not by much."""
    from noisear_rl.worlds.shapes import ShapesBackend

    backend = ShapesBackend()  # the shipped weights
    source = load_noise_source("golden", backend=backend)
    assert source.network.config.cond_dim == backend.cond_dim
    prompts = ["a red circle on the left and a blue square on the right"] * 2
    base = torch.randn((2, *backend.latent_shape), generator=generator(3))
    moved = source(prompts, backend.encode(prompts), generator(3)) - base
    assert 1e-3 < float(moved.abs().mean()) < 0.2


def test_model_sources_without_a_path_on_a_general_backend_ask_for_one(backend: ToyBackend) -> None:
    for name in ("noisear", "golden"):
        with pytest.raises(ValueError, match=f"'{name}:"):
            load_noise_source(name, backend=backend)


def test_untrained_noise_prompt_network_is_the_identity(backend: ToyBackend) -> None:
    network = NoisePromptNetwork(4, 4, 4, cond_dim=3, width=8, svd_hidden=8)
    source = load_noise_source("golden", backend=backend, network=network)
    base = torch.randn((3, *backend.latent_shape), generator=generator(8))
    torch.testing.assert_close(source(PROMPTS, backend.encode(PROMPTS), generator(8)), base, rtol=0, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="golden_train"):
        load_noise_source("golden:/nonexistent/npnet", backend=backend)


def write_collection(root: Path, backend: ToyBackend, pairs_per_prompt: int = 48) -> None:
    """A golden-noise collection whose golden noise depends on the prompt and the noise:
    golden = 0.8 x_T + 0.6 * (+1 on the left half for prompt 0, on the right half for prompt 1)."""
    prompts = PROMPTS[:2]
    g = generator(9)
    noise = torch.randn((2 * pairs_per_prompt, *backend.latent_shape), generator=g)
    prompt_index = torch.arange(2).repeat_interleave(pairs_per_prompt)
    pattern = torch.zeros(2, *backend.latent_shape)
    pattern[0, :, :, :2], pattern[1, :, :, 2:] = 1.0, 1.0
    golden = 0.8 * noise + 0.6 * pattern[prompt_index]
    write_prompts(root / "prompts.jsonl", prompts)
    write_shard(shard_path(root, 0), {"noise": noise, "golden": golden, "prompt_index": prompt_index,
                                      "noise_index": torch.arange(pairs_per_prompt).repeat(2)})
    write_manifest(root, {"latent_shape": list(backend.latent_shape), "complete": True})


def test_golden_network_learns_the_pairs_and_reloads(backend: ToyBackend, tmp_path: Path) -> None:
    write_collection(tmp_path / "data", backend)
    config = GoldenTrainConfig(data=tmp_path / "data", output_dir=tmp_path / "npnet", steps=100, batch_size=32, lr=3e-3,
                               warmup_steps=10, width=8, svd_hidden=16, attention_heads=2, validation_fraction=0.2, log_every=50)
    network, records = train_golden_network(config, backend=backend)
    assert records[-1]["val_mse"] < 0.3 * records[-1]["identity_mse"]
    assert (tmp_path / "npnet" / "config.json").is_file() and (tmp_path / "npnet" / "train_log.jsonl").is_file()
    source = load_noise_source(f"golden:{tmp_path / 'npnet'}", backend=backend)
    cond = backend.encode(PROMPTS[:2])
    base = torch.randn((2, *backend.latent_shape), generator=generator(10))
    with torch.no_grad():
        torch.testing.assert_close(source(PROMPTS[:2], cond, generator(10)), network(base, cond.embeds))


def test_model_sources_reject_a_model_of_another_condition_width(backend: ToyBackend) -> None:
    c, h, w = backend.latent_shape
    prior = NoiseARPrior(latent_channels=c, latent_height=h, latent_width=w, patch_size=2, cond_dim=backend.cond_dim + 1,
                         d_model=16, d_ff=32, n_heads=2, n_layers=1)
    with pytest.raises(ValueError, match="the prior models latents"):
        load_noise_source("noisear", backend=backend, prior=prior)
    network = NoisePromptNetwork(4, 4, 4, cond_dim=backend.cond_dim + 1, width=8, svd_hidden=8)
    with pytest.raises(ValueError, match="the network models latents"):
        load_noise_source("golden", backend=backend, network=network)


def test_encode_on_cpu_matches_one_encode(backend: ToyBackend) -> None:
    from noisear_rl.noise_sources.base import encode_on_cpu

    cond = encode_on_cpu(backend, PROMPTS, chunk=2)
    torch.testing.assert_close(cond.embeds, backend.encode(PROMPTS).embeds.cpu(), rtol=0, atol=0)
