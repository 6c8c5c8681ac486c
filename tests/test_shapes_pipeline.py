"""ShapesPipeline / ShapesBackend on a tiny random pipeline, and the shipped weights."""

from __future__ import annotations

import pytest
import torch

from noisear_rl.pipelines import golden_noise, load_backend
from noisear_rl.pipelines.shapes import (
    ShapesBackend,
    ShapesPipeline,
    build_tiny_shapes_pipeline,
    evaluation_prompts,
    load_shapes_pipeline,
)
from noisear_rl.pipelines.shapes.pipeline import DEFAULT_WEIGHTS
from noisear_rl.reward_models import load_reward

PROMPTS = ["a red circle on the left", "a blue square on the top and a green triangle on the bottom"]


@pytest.fixture(scope="module")
def tiny() -> ShapesPipeline:
    return build_tiny_shapes_pipeline(seed=0)


def test_call_shapes_and_range(tiny: ShapesPipeline) -> None:
    out = tiny(prompt=PROMPTS, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (2, 3, 32, 32)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert len(tiny(prompt=PROMPTS[0], num_images_per_prompt=3, output_type="pil").images) == 3
    assert tiny(prompt=PROMPTS, output_type="np").images.shape == (2, 32, 32, 3)


def test_same_latents_same_image_and_noise_matters(tiny: ShapesPipeline) -> None:
    latents = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = tiny(prompt=PROMPTS, latents=latents, output_type="pt").images
    b = tiny(prompt=PROMPTS, latents=latents.clone(), output_type="pt").images
    c = tiny(prompt=PROMPTS, latents=-latents, output_type="pt").images
    assert torch.equal(a, b) and not torch.allclose(a, c)
    g1 = tiny(prompt=PROMPTS, generator=torch.Generator().manual_seed(5), output_type="pt").images
    g2 = tiny(prompt=PROMPTS, generator=torch.Generator().manual_seed(5), output_type="pt").images
    assert torch.equal(g1, g2)


def test_prompt_embeds_path_matches_prompt_path(tiny: ShapesPipeline) -> None:
    latents = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    embeds, negative = tiny.encode_prompt(PROMPTS)
    by_prompt = tiny(prompt=PROMPTS, latents=latents, output_type="pt").images
    by_embeds = tiny(prompt_embeds=embeds, negative_prompt_embeds=negative, latents=latents, output_type="pt").images
    assert torch.allclose(by_prompt, by_embeds, atol=1e-6)


def test_bad_inputs_raise(tiny: ShapesPipeline) -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        tiny(prompt=["a red cube on the left"])
    with pytest.raises(ValueError, match="shape"):
        tiny(prompt=PROMPTS, latents=torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        tiny(prompt=PROMPTS, latents=torch.full((2, 3, 32, 32), float("nan")))


def test_save_and_load_round_trip(tiny: ShapesPipeline, tmp_path) -> None:
    tiny.save_pretrained(tmp_path)
    loaded = load_shapes_pipeline(path=tmp_path)
    latents = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(
        tiny(prompt=PROMPTS, latents=latents, output_type="pt").images,
        loaded(prompt=PROMPTS, latents=latents, output_type="pt").images,
        atol=1e-5,
    )
    assert loaded.config.default_num_inference_steps == tiny.config.default_num_inference_steps
    with pytest.raises(FileNotFoundError, match="train"):
        load_shapes_pipeline(path=tmp_path / "missing")


def test_backend_matches_the_pipeline_and_supports_golden_noise(tiny: ShapesPipeline) -> None:
    backend = load_backend("shapes", pipe=tiny, guidance_scale=2.0)
    assert isinstance(backend, ShapesBackend) and backend.latent_shape == (3, 32, 32)
    cond = backend.encode(PROMPTS)
    assert cond.embeds.shape == (2, 16, backend.cond_dim) and cond.extras["negative_embeds"].shape == cond.embeds.shape
    latents = backend.random_latents(2, torch.Generator().manual_seed(4))
    images = backend.generate(latents, cond)
    expected = tiny(prompt=PROMPTS, latents=latents, guidance_scale=2.0, output_type="pt").images
    assert torch.allclose(images, expected, atol=1e-6)
    # predict_noise is the epsilon of the v-prediction: one DDIM step with it matches the scheduler's.
    t = int(backend.timesteps()[0])
    eps = backend.predict_noise(latents, t, cond, 2.0)
    a = backend.alphas_cumprod[t]
    v = tiny.model_output(latents, t, cond.embeds, cond.extras["negative_embeds"], 2.0)
    assert torch.allclose(a.sqrt() * latents - (1 - a).sqrt() * v, (latents - (1 - a).sqrt() * eps) / a.sqrt(), atol=1e-5)
    golden = golden_noise(backend, latents, cond, guidance_scale=6.0)
    assert golden.shape == latents.shape and not torch.equal(golden, latents)


def test_scene_condition_exposes_the_bindings_and_draws_the_same_images(tiny: ShapesPipeline) -> None:
    text, scene = load_backend("shapes", pipe=tiny), load_backend("shapes-scene", pipe=tiny)
    assert scene.cond_dim == 28 and text.cond_dim == tiny.text_encoder.config.hidden_size
    cond_text, cond_scene = text.encode(PROMPTS), scene.encode(PROMPTS)
    assert cond_scene.embeds.shape == (2, 2, 28)
    assert torch.equal(cond_scene.extras["prompt_embeds"], cond_text.embeds)
    latents = text.random_latents(2, torch.Generator().manual_seed(4))
    assert torch.equal(scene.generate(latents, cond_scene), text.generate(latents, cond_text))
    t = int(text.timesteps()[0])
    assert torch.equal(scene.predict_noise(latents, t, cond_scene, 2.0), text.predict_noise(latents, t, cond_text, 2.0))
    with pytest.raises(ValueError, match="unknown word"):
        scene.encode(["a purple circle on the left"])
    with pytest.raises(ValueError, match="condition"):
        ShapesBackend(pipe=tiny, condition="pixels")


@pytest.mark.skipif(not (DEFAULT_WEIGHTS / "model_index.json").is_file(), reason="shipped weights not trained yet")
def test_shipped_weights_load_offline_and_draw_verifiable_shapes() -> None:
    pipe = load_shapes_pipeline(device="cpu")
    assert pipe.config.default_num_inference_steps == 20
    prompts = [p for p in evaluation_prompts() if " and " not in p][::3]  # 16 one-object prompts
    out = pipe(prompt=prompts, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (len(prompts), 3, 32, 32)
    scores = load_reward("shapes")(out.images, prompts)
    assert scores.shape == (len(prompts),) and scores.mean() > 0.5
