"""ShapesPipeline / ShapesBackend on a tiny random pipeline, and the shipped weights."""

from __future__ import annotations

import pytest
import torch

from noisear_rl.pipelines import golden_noise, load_backend
from noisear_rl.worlds.shapes import (
    ShapesBackend,
    ShapesPipeline,
    build_tiny_shapes_pipeline,
    evaluation_prompts,
    load_shapes_pipeline,
)
from noisear_rl.worlds.shapes.pipeline import DEFAULT_WEIGHTS
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


def test_the_backend_describes_its_world(tiny: ShapesPipeline) -> None:
    from noisear_rl.pipelines.factory import world_info
    from noisear_rl.worlds.shapes import WORLD

    backend = load_backend("shapes", pipe=tiny)
    assert backend.world is WORLD is world_info("shapes")
    assert world_info("sdxl") is None
    assert WORLD.reward == "shapes" and 32 % WORLD.patch_size == 0
    assert not set(WORLD.training_prompts()) & set(WORLD.evaluation_prompts())
    assert set(WORLD.sample_prompts(64, 0)) <= set(WORLD.training_prompts())
    assert backend.cond_dim == tiny.text_encoder.config.hidden_size


@pytest.mark.skipif(not (DEFAULT_WEIGHTS / "model_index.json").is_file(), reason="shipped weights not trained yet")
def test_shipped_weights_load_offline_and_draw_verifiable_shapes() -> None:
    pipe = load_shapes_pipeline(device="cpu")
    assert pipe.config.default_num_inference_steps == 20
    prompts = [p for p in evaluation_prompts() if " and " not in p][::3]  # 8 one-object prompts
    out = pipe(prompt=prompts, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (len(prompts), 3, 32, 32)
    scores = load_reward("shapes")(out.images, prompts)
    assert scores.shape == (len(prompts),) and scores.mean() > 0.5


@pytest.mark.skipif(not (DEFAULT_WEIGHTS / "model_index.json").is_file(), reason="shipped weights not trained yet")
def test_shipped_text_states_state_the_bindings_for_unseen_prompts() -> None:
    """A linear probe from the text states (fitted on training prompts) names which colour and
    shape sit where on unseen two-object prompts: what a prior reading them needs."""
    from noisear_rl.worlds.shapes import training_prompts
    from noisear_rl.worlds.shapes.probe import binding_recall

    backend = ShapesBackend()
    train = training_prompts()
    test = [p for p in evaluation_prompts() if " and " in p]
    flat = lambda prompts: backend.encode(prompts).embeds.flatten(1)  # noqa: E731
    assert binding_recall(flat(train), train, flat(test), test) >= 0.75


@pytest.mark.parametrize(
    ("beta_schedule", "beta_end", "coefficient"),
    [("scaled_linear", 0.012, 0.0232), ("scaled_linear", 0.008, 0.0325), ("squaredcos_cap_v2", 0.012, 0.0780)],
)
def test_the_golden_step_moves_the_noise_by_the_schedules_signal_step(
    beta_schedule: str, beta_end: float, coefficient: float
) -> None:
    """golden - x_T = (sqrt((1-a_T)/(1-a_1)) sqrt(a_1) - sqrt(a_T)) (x0_guided(x_T) - x0_unguided(x_1)).

    The coefficient is why the schedule decides how far golden noise moves: 0.023 on SD's
    scaled-linear betas at 20 trailing steps, 0.033 with their last beta 0.008 instead of 0.012,
    0.078 on the cosine schedule (zero terminal signal).
    """
    pipe = build_tiny_shapes_pipeline(seed=1, beta_schedule=beta_schedule, beta_end=beta_end)
    backend = load_backend("shapes", pipe=pipe)
    cond = backend.encode(PROMPTS)
    embeds, negative = cond.embeds, cond.extras["negative_embeds"]
    x_t = backend.random_latents(2, torch.Generator().manual_seed(5))
    t1, t0 = (int(t) for t in backend.timesteps(20)[:2])  # the shipped world's 20 steps
    a1, a0 = backend.alphas_cumprod[t1].double(), backend.alphas_cumprod[t0].double()

    def x0(latents: torch.Tensor, t: int, a: torch.Tensor, guidance: float) -> torch.Tensor:
        v = pipe.model_output(latents, t, embeds, negative, guidance).double()
        return a.sqrt() * latents.double() - (1 - a).sqrt() * v

    x0_guided = x0(x_t, t1, a1, 4.0)
    eps_guided = (x_t.double() - a1.sqrt() * x0_guided) / (1 - a1).sqrt()
    x_1 = (a0.sqrt() * x0_guided + (1 - a0).sqrt() * eps_guided).float()
    x0_unguided = x0(x_1, t0, a0, 1.0)
    step = ((1 - a1) / (1 - a0)).sqrt() * a0.sqrt() - a1.sqrt()
    assert step.item() == pytest.approx(coefficient, abs=1e-4)
    golden = golden_noise(backend, x_t, cond, guidance_scale=4.0, num_inference_steps=20)
    expected = x_t.double() + step * (x0_guided - x0_unguided)
    assert torch.allclose(golden.double(), expected, atol=2e-4)
