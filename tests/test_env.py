"""The noise MDP environments, through Gymnasium's public API."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers.vector import NumpyToTorch

import noisear_rl  # noqa: F401  registers the environments
from noisear_rl import NoiseARPrior
from noisear_rl.envs import EnvConfig, NoiseARPolicy, collect_rollouts
from noisear_rl.envs.world import _load_backend_once
from noisear_rl.reward_models import register_reward


@register_reward("test-image-mean")
def image_mean(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """A cheap deterministic reward: mean brightness."""
    return images.mean(dim=(1, 2, 3))


TINY = {
    "NoiseAR-Shapes-v1": dict(num_inference_steps=4),  # the shipped weights and the shapes verifier
    "NoiseAR-SDXL-v0": dict(backend="tiny-sdxl", patch_size=4, reward="test-image-mean", num_inference_steps=2),
    "NoiseAR-HunyuanDiT-v0": dict(backend="tiny-hunyuan-dit", patch_size=4, reward="test-image-mean", num_inference_steps=2),
}
PROMPTS = ["a red circle", "two blue squares", "a cat"]


def make(env_id: str = "NoiseAR-SDXL-v0", **kwargs) -> gym.Env:
    return gym.make(env_id, **{**TINY[env_id], **kwargs})


def make_vec(num_envs: int, env_id: str = "NoiseAR-SDXL-v0", **kwargs):
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **{**TINY[env_id], **kwargs})


def actions_for(env: gym.Env, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    num_patches = env.observation_space["patches"].shape[0]
    return [rng.standard_normal(env.action_space.shape).astype(np.float32) for _ in range(num_patches)]


def run_episode(env: gym.Env, prompt: str, actions: list[np.ndarray], seed: int = 0):
    obs, info = env.reset(seed=seed, options={"prompt": prompt})
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(action)
        assert terminated == (t == len(actions) - 1) and not truncated
    return obs, reward, info


def tiny_prior(env: gym.Env, seed: int = 0) -> NoiseARPrior:
    world = env.unwrapped.world
    torch.manual_seed(seed)
    prior = NoiseARPrior(
        *world.backend.latent_shape, patch_size=world.patch_size, cond_dim=world.backend.cond_dim,
        d_model=32, d_ff=64, n_heads=2, n_layers=1, dropout=0.0,
    ).eval()
    with torch.no_grad():  # a prior whose predictions depend on its inputs
        for head in (prior.mean_head, prior.logvar_head):
            head[-1].weight.normal_(0, 0.1)
    return prior


@pytest.mark.parametrize("env_id", sorted(TINY))
def test_check_env_passes_without_reloading_the_pipeline(env_id):
    env = make(env_id)
    loads = _load_backend_once.cache_info().misses
    check_env(env.unwrapped)
    assert _load_backend_once.cache_info().misses == loads  # render-mode copies reuse the pipeline


def test_check_env_gives_no_warning_the_env_can_avoid():
    """Only the condition's bounds stay infinite (a text encoder's states have none)."""
    env = make("NoiseAR-Shapes-v1", action_bound=1.0, render_mode="rgb_array")
    assert np.isfinite(env.observation_space["patches"].low).all() and np.isfinite(env.action_space.high).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*observation space m(in|ax)imum value is -?infinity")
        check_env(env.unwrapped)


def test_action_bound_gives_a_finite_box_and_clips():
    free, bounded = make(), make(action_bound=2.0)
    assert (free.action_space.low == -np.inf).all() and (free.action_space.high == np.inf).all()
    assert (bounded.action_space.low == -2.0).all() and (bounded.action_space.high == 2.0).all()
    action = np.linspace(-5, 5, 64, dtype=np.float32)
    for env, expected in [(free, action), (bounded, action.clip(-2, 2))]:
        env.reset(seed=0, options={"prompt": "a cat"})
        obs, *_ = env.step(action)
        np.testing.assert_array_equal(obs["patches"][0], expected)
        assert obs in env.observation_space
    with pytest.raises(ValueError, match="NaN"):  # clipping does not hide a broken action
        bounded.step(np.full(64, np.nan, dtype=np.float32))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="action_bound"):
            EnvConfig(action_bound=bad)


def test_render_returns_a_frame_at_every_step():
    env = make(render_mode="rgb_array", return_image=True)
    env.reset(seed=0, options={"prompt": "a cat"})
    frame = env.render()
    assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8 and (frame == 128).all()  # no noise chosen yet
    actions = actions_for(env, 0)
    env.step(actions[0])
    assert (env.render() != 128).any()
    for action in actions[1:]:
        _, _, _, _, info = env.step(action)
    np.testing.assert_array_equal(env.render(), (info["image"].transpose(1, 2, 0) * 255).round().astype(np.uint8))
    venv = make_vec(2, render_mode="rgb_array")
    venv.reset(seed=0, options={"prompts": PROMPTS[:2]})
    assert [f.shape for f in venv.render()] == [(16, 16, 3)] * 2


def test_spaces_and_episode_structure():
    env = make(return_image=True, render_mode="rgb_array")
    world = env.unwrapped.world
    assert world.num_patches == 4 and env.action_space.shape == (64,)
    obs, info = env.reset(seed=0, options={"prompt": "a cat"})
    assert info["prompt"] == "a cat" and obs["num_done"] == 0 and not obs["patches"].any()
    assert obs["cond"].shape == env.observation_space["cond"].shape
    actions = actions_for(env, 0)
    obs, reward, terminated, _, info = env.step(actions[0])
    assert reward == 0.0 and not terminated and obs["num_done"] == 1
    np.testing.assert_array_equal(obs["patches"][0], actions[0])
    for action in actions[1:]:
        obs, reward, terminated, _, info = env.step(action)
    assert terminated and info["image"].shape == (3, 16, 16)
    assert reward == pytest.approx(float(info["image"].mean()), abs=1e-5)
    assert env.render().shape == (16, 16, 3) and env.render().dtype == np.uint8
    with pytest.raises(RuntimeError, match="reset"):
        env.step(actions[0])


def test_seeded_determinism():
    env = make(return_image=True)
    actions = actions_for(env, 1)
    obs_a, reward_a, info_a = run_episode(env, "a red circle", actions, seed=3)
    obs_b, reward_b, info_b = run_episode(make(return_image=True), "a red circle", actions, seed=3)
    assert reward_a == reward_b
    np.testing.assert_array_equal(info_a["image"], info_b["image"])
    np.testing.assert_array_equal(obs_a["patches"], obs_b["patches"])
    _, reward_c, _ = run_episode(env, "a red circle", actions_for(env, 2), seed=3)
    assert reward_c != reward_a  # the noise matters


def test_reset_draws_prompts_reproducibly_from_the_source():
    env = make(prompts=PROMPTS)
    drawn = [env.reset(seed=s)[1]["prompt"] for s in range(6)]
    assert drawn == [env.reset(seed=s)[1]["prompt"] for s in range(6)]
    assert set(drawn) <= set(PROMPTS)


def test_bad_actions_raise_and_leave_the_episode_valid():
    env = make()
    actions = actions_for(env, 4)
    _, expected, _ = run_episode(env, "a cat", actions)
    env.reset(seed=0, options={"prompt": "a cat"})
    env.step(actions[0])
    nan = actions[1].copy()
    nan[3] = np.nan
    for bad, message in [
        (nan, "NaN"),
        (np.full_like(actions[1], np.inf), "NaN or inf"),
        (actions[1][:-1], "shape"),
        (actions[1].astype(np.int64), "float"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.step(bad)
    for action in actions[1:]:
        _, reward, terminated, _, _ = env.step(action)
    assert terminated and reward == expected


def test_vector_env_rewards_equal_single_env_rewards():
    prompts = PROMPTS
    venv = make_vec(len(prompts))
    env = make()
    rng = np.random.default_rng(0)
    actions = rng.standard_normal((env.unwrapped.world.num_patches, len(prompts), 64)).astype(np.float32)
    venv.reset(seed=0, options={"prompts": prompts})
    for t in range(len(actions)):
        _, rewards, terminated, _, _ = venv.step(actions[t])
    assert terminated.all()
    single = [run_episode(env, p, list(actions[:, i]))[1] for i, p in enumerate(prompts)]
    np.testing.assert_allclose(rewards, single, rtol=1e-5, atol=1e-6)
    # NEXT_STEP autoreset: the following step resets, ignoring its actions.
    obs, rewards, terminated, _, _ = venv.step(actions[0])
    assert (obs["num_done"] == 0).all() and not rewards.any() and not terminated.any()


def test_shapes_vector_env_scores_like_the_single_env_with_the_verifier():
    prompts = ["a red circle on the left", "a blue square on the top and a green triangle on the bottom"]
    venv = make_vec(2, "NoiseAR-Shapes-v1")
    env = make("NoiseAR-Shapes-v1")
    world = env.unwrapped.world
    assert (world.num_patches, world.patch_dim) == (16, 192)
    actions = np.random.default_rng(1).standard_normal((16, 2, 192)).astype(np.float32)
    venv.reset(seed=0, options={"prompts": prompts})
    for t in range(16):
        _, rewards, terminated, _, infos = venv.step(actions[t])
    assert terminated.all() and set(infos) >= {"success", "colour", "shape", "position", "count"}
    single = [run_episode(env, p, list(actions[:, i])) for i, p in enumerate(prompts)]
    np.testing.assert_allclose(rewards, [r for _, r, _ in single], atol=1e-6)
    np.testing.assert_array_equal(infos["success"], [info["success"] for _, _, info in single])


def test_vector_env_works_with_numpy_to_torch_and_its_infos_carry_the_prompts():
    venv = NumpyToTorch(make_vec(2))
    obs, info = venv.reset(seed=0, options={"prompts": PROMPTS[:2]})
    assert isinstance(obs["cond"], torch.Tensor) and obs["cond"].shape[0] == 2 and info["prompt"] == tuple(PROMPTS[:2])
    for _ in range(4):
        obs, rewards, terminated, _, infos = venv.step(torch.randn(2, 64))
        assert infos["prompt"] == tuple(PROMPTS[:2])
    assert isinstance(rewards, torch.Tensor) and terminated.all() and isinstance(infos["noise"], torch.Tensor)
    _, _, _, _, infos = venv.step(torch.randn(2, 64))  # the autoreset step: new prompts, drawn from the source
    assert len(infos["prompt"]) == 2 and all(isinstance(p, str) for p in infos["prompt"])


def test_episode_driven_by_the_prior_equals_prior_sample():
    env = make()
    prior = tiny_prior(env)
    policy = NoiseARPolicy(prior, temperature=0.7)
    obs, _ = env.reset(seed=0, options={"prompt": "a cat"})
    generator = torch.Generator().manual_seed(11)
    total_logp = 0.0
    for _ in range(env.unwrapped.world.num_patches):
        action, logp = policy.act(obs, generator)
        total_logp += logp.item()
        obs, *_ = env.step(action.numpy())
    cond = torch.as_tensor(obs["cond"])[None]
    noise, logp = prior.sample(cond, generator=torch.Generator().manual_seed(11), temperature=0.7, return_log_prob=True)
    torch.testing.assert_close(env.unwrapped.noise, noise[0])
    assert total_logp == pytest.approx(logp.item(), rel=1e-5)


def test_collect_rollouts_pads_the_last_chunk_and_matches_the_prior():
    venv = make_vec(2)
    prior = tiny_prior(venv)
    batch = collect_rollouts(venv, NoiseARPolicy(prior), PROMPTS, generator=torch.Generator().manual_seed(0))
    assert batch.prompts == PROMPTS and batch.noise.shape == (3, 4, 8, 8) and batch.log_probs.shape == (3, 4)
    assert torch.allclose(batch.rewards, batch.rewards.new_tensor([0.0]).expand(3), atol=1) and batch.rewards.shape == (3,)
    recomputed = prior.log_prob(batch.noise, batch.cond.embeds, per_patch=True)
    torch.testing.assert_close(recomputed, batch.log_probs, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="action_bound=None"):  # clipped actions would break the log-probs
        collect_rollouts(make_vec(2, action_bound=4.0), NoiseARPolicy(prior), PROMPTS)


def test_one_config_and_a_bounded_prompt_cache():
    env = make(prompt_cache_size=2)
    world = env.unwrapped.world
    assert isinstance(world.config, EnvConfig) and (world.config.patch_size, world.patch_size) == (4, 4)
    first = world.encode(PROMPTS[:1]).embeds
    for prompt in PROMPTS[1:]:
        world.encode([prompt])
    assert list(world._cond_cache) == PROMPTS[1:]  # the least recently used prompt is dropped first
    torch.testing.assert_close(world.encode(PROMPTS[:1]).embeds, first)  # and encoded again when asked
    with pytest.raises(TypeError, match=r"unknown environment arguments \['patch'\]"):
        make(patch=4)


def test_a_torch_policy_reads_tensors_and_the_last_step_returns_the_episodes():
    env = make_vec(2).unwrapped
    obs, _ = env.reset(seed=0, options={"prompts": PROMPTS[:2]})
    tensors = env.torch_observation("cpu")
    torch.testing.assert_close(tensors["cond"], torch.tensor(obs["cond"]))
    assert env.torch_observation("cpu")["cond"] is tensors["cond"]  # moved once per reset
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writable")
        NoiseARPolicy(tiny_prior(env)).act(obs)  # the env's read-only condition, without torch's warning
    actions = np.random.default_rng(0).standard_normal((4, 2, 64)).astype(np.float32)
    for action in actions:
        obs, rewards, terminated, _, infos = env.step(action)
    assert terminated.all() and infos["noise"].shape == (2, 4, 8, 8)
    np.testing.assert_array_equal(infos["noise"], env.world.patches_to_noise(obs["patches"]).numpy())


def test_unknown_reset_option_and_unknown_backend_are_clear_errors():
    env = make()
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"prompts": ["x"]})
    with pytest.raises(KeyError, match="valid names"):
        gym.make("NoiseAR-SDXL-v0", backend="no-such-backend")
    with pytest.raises(ValueError, match="patch_size"):
        make(patch_size=3)


def test_a_built_shapes_backend_keeps_the_worlds_prompts_reward_and_patch_size():
    from noisear_rl.pipelines import load_backend
    from noisear_rl.worlds.shapes.world import parse_prompt
    from noisear_rl.worlds.shapes.verifier import ShapesVerifier

    env = gym.make("NoiseAR-SDXL-v0", backend=load_backend("shapes", num_inference_steps=2))
    world = env.unwrapped.world
    assert world.patch_size == 8 and isinstance(world.reward, ShapesVerifier)
    for seed in range(5):
        assert parse_prompt(env.reset(seed=seed)[1]["prompt"])  # a Shapes prompt, not an SDXL one
