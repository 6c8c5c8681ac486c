"""SDXL, DreamShaper and Hunyuan-DiT backends on tiny random pipelines built from configs."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from noisear_rl.hub import WeightsUnavailableError
from noisear_rl.pipelines import Condition, DiffusionBackend, list_backends, load_backend
from noisear_rl.pipelines.hunyuan import HunyuanDiTBackend
from noisear_rl.pipelines.sdxl import DreamShaperBackend, SDXLBackend
from noisear_rl.pipelines.tiny import build_tiny_hunyuan_pipeline, build_tiny_sdxl_pipeline

PROMPTS = ["a red circle on the left", "two blue squares", "a green triangle above a yellow star"]


@pytest.fixture(scope="module", params=["tiny-sdxl", "tiny-hunyuan-dit"])
def backend(request: pytest.FixtureRequest) -> DiffusionBackend:
    return load_backend(request.param, num_inference_steps=3, batch_size=4)


@pytest.fixture(scope="module")
def cond(backend: DiffusionBackend) -> Condition:
    return backend.encode(PROMPTS)


def latents(backend: DiffusionBackend, n: int, seed: int) -> torch.Tensor:
    return backend.random_latents(n, torch.Generator().manual_seed(seed))


def test_encode_gives_the_condition_the_prior_reads(backend: DiffusionBackend, cond: Condition) -> None:
    assert cond.embeds.shape[0] == len(PROMPTS) and cond.embeds.shape[2] == backend.cond_dim
    assert all(value.shape[0] == len(PROMPTS) for value in cond.extras.values())
    again = backend.encode([PROMPTS[1], PROMPTS[1]])
    torch.testing.assert_close(again.embeds[0], cond.embeds[1])  # batch = single, deterministic
    torch.testing.assert_close(again.embeds[1], cond.embeds[1])
    assert not torch.allclose(cond.embeds[0], cond.embeds[1])  # different prompts, different condition
    with pytest.raises(TypeError, match="list of strings"):
        backend.encode("a prompt, not a list")  # type: ignore[arg-type]


def test_generate_denoises_the_latents_passed_in(backend: DiffusionBackend, cond: Condition) -> None:
    x = latents(backend, 3, seed=0)
    images = backend.generate(x, cond)
    assert images.shape[:2] == (3, 3) and images.dtype == torch.float32
    assert images.shape[2:] == (backend.height, backend.width)  # type: ignore[attr-defined]
    assert 0 <= images.min() and images.max() <= 1
    torch.testing.assert_close(backend.generate(x, cond), images, rtol=0, atol=0)  # same latents, same image
    other = backend.generate(latents(backend, 3, seed=1), cond)
    assert (other - images).abs().mean() > 1e-3  # different latents, different image
    # The raw diffusers pipeline, given the prompts and the same unit-variance latents, agrees:
    # the backend passes latents unscaled (prepare_latents applies init_noise_sigma) and the
    # condition it encoded is the pipeline's own.
    pipe = backend.pipe  # type: ignore[attr-defined]
    extra = {"use_resolution_binning": False} if isinstance(backend, HunyuanDiTBackend) else {}
    reference = pipe(
        prompt=PROMPTS,
        latents=x,
        num_inference_steps=backend.num_inference_steps,
        guidance_scale=backend.guidance_scale,
        output_type="pt",
        **extra,
    ).images
    torch.testing.assert_close(images, reference, rtol=0, atol=1e-5)


def test_batch_equals_single(backend: DiffusionBackend, cond: Condition) -> None:
    x = latents(backend, 3, seed=2)
    batched = backend.generate(x, cond)
    singles = torch.cat([backend.generate(x[i : i + 1], cond[i]) for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=0, atol=1e-4)


def test_predict_noise_drives_the_pipelines_own_denoising(backend: DiffusionBackend, cond: Condition) -> None:
    """Running the scheduler on `predict_noise` (epsilon) reproduces the pipeline's final latents."""
    x = latents(backend, 2, seed=3)
    pipe = backend.pipe  # type: ignore[attr-defined]
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="epsilon")
    scheduler.set_timesteps(backend.num_inference_steps)
    sample = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = backend.predict_noise(sample, int(t), cond[:2], backend.guidance_scale)
        assert eps.shape == x.shape
        sample = scheduler.step(eps, t, sample).prev_sample
    extra = {"use_resolution_binning": False} if isinstance(backend, HunyuanDiTBackend) else {}
    expected = pipe(
        prompt=PROMPTS[:2],
        latents=x,
        num_inference_steps=backend.num_inference_steps,
        guidance_scale=backend.guidance_scale,
        output_type="latent",
        **extra,
    ).images
    torch.testing.assert_close(sample, expected, rtol=1e-4, atol=1e-4)


def test_bad_latents_are_rejected(backend: DiffusionBackend, cond: Condition) -> None:
    x = latents(backend, 3, seed=0)
    with pytest.raises(ValueError, match="shape"):
        backend.generate(x[:, :, :-1], cond)
    with pytest.raises(ValueError, match="3 conditions"):
        backend.generate(x[:2], cond)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        backend.predict_noise(x, 500, cond, 5.0)


def test_defaults_follow_the_noisear_release() -> None:
    """The release's try.py/eval.py: DPMSolverMultistepScheduler.from_config, 50 steps; CFG 5.5 for
    SDXL and Hunyuan-DiT, 3.5 for DreamShaper (its DrawBench command); golden noise as Golden Noise collects."""
    sdxl = SDXLBackend(pipe=build_tiny_sdxl_pipeline())
    assert (sdxl.num_inference_steps, sdxl.guidance_scale) == (50, 5.5)
    assert type(sdxl.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert sdxl.pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert sdxl.model == "stabilityai/stable-diffusion-xl-base-1.0"
    hunyuan = HunyuanDiTBackend(pipe=build_tiny_hunyuan_pipeline())
    assert (hunyuan.num_inference_steps, hunyuan.guidance_scale) == (50, 5.5)
    assert type(hunyuan.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    dreamshaper = DreamShaperBackend(pipe=build_tiny_sdxl_pipeline())
    assert (dreamshaper.num_inference_steps, dreamshaper.guidance_scale) == (50, 3.5)
    assert dreamshaper.model == "Lykon/dreamshaper-xl-v2-turbo"
    assert dreamshaper.pipe.scheduler.config == sdxl.pipe.scheduler.config  # the same scheduler as SDXL
    assert SDXLBackend.golden_procedure == DreamShaperBackend.golden_procedure == HunyuanDiTBackend.golden_procedure == "reference"
    cond = dreamshaper.encode(PROMPTS[:2])
    x = latents(dreamshaper, 2, seed=0)
    dreamshaper.num_inference_steps = 3
    torch.testing.assert_close(dreamshaper.generate(x, cond), dreamshaper.generate(x, cond), rtol=0, atol=0)


def test_load_backend_names_and_errors() -> None:
    assert {"shapes", "sdxl", "dreamshaper", "hunyuan-dit"} <= set(list_backends())
    with pytest.raises(KeyError, match="valid names: .*sdxl"):
        load_backend("sd15")
    built = load_backend("tiny-hunyuan-dit")
    assert load_backend(built) is built
    assert load_backend(built, model=None, guidance_scale=None) is built  # None: the default, not an argument
    defaults = load_backend("shapes", model=None, num_inference_steps=None, guidance_scale=None)
    assert (defaults.num_inference_steps, defaults.guidance_scale) == (20, 6.0)
    assert load_backend("shapes", num_inference_steps=4, guidance_scale=None).num_inference_steps == 4


def test_missing_weights_offline_say_how_to_provide_them(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        WeightsUnavailableError, match=r"noisear-rl-tests/absent.*HF_HUB_OFFLINE.*hf download.*model=DIR"
    ):
        load_backend("sdxl", model="noisear-rl-tests/absent")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_backend("hunyuan-dit", model=str(tmp_path / "absent"))
