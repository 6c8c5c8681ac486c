"""Behaviour of the NoiseAR prior through its public API."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from noisear_rl import NoiseARPrior
from noisear_rl.prior.release import prior_to_release_state_dict

CONFIG = dict(
    latent_channels=3, latent_height=16, latent_width=16, patch_size=4,
    cond_dim=12, d_model=32, d_ff=64, n_heads=2, n_layers=2, dropout=0.0,
)


def make_prior(seed: int = 0, **overrides) -> NoiseARPrior:
    torch.manual_seed(seed)
    return NoiseARPrior(**{**CONFIG, **overrides}).eval()


def randomize_heads(prior: NoiseARPrior, seed: int = 1) -> NoiseARPrior:
    """Gives the near-zero heads (and the zero prompt shift) real weights so predictions depend on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (prior.mean_head, prior.logvar_head):
            head[-1].weight.copy_(torch.randn(head[-1].weight.shape, generator=g) * 0.2)
        if prior.prompt_shift is not None:
            prior.prompt_shift.out_weight.copy_(torch.randn(prior.prompt_shift.out_weight.shape, generator=g) * 0.2)
    return prior


@pytest.fixture(params=[0, 8], ids=["release", "prompt-shift"])
def prior(request) -> NoiseARPrior:
    return randomize_heads(make_prior(prompt_shift_width=request.param))


@pytest.fixture
def cond() -> torch.Tensor:
    return torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(7))


def test_shapes(prior, cond):
    noise = torch.randn(3, 3, 16, 16)
    mean, logvar = prior(noise, cond)
    assert mean.shape == logvar.shape == noise.shape
    assert prior.num_patches == 16 and prior.patch_dim == 48
    assert prior.log_prob(noise, cond).shape == (3,)
    assert prior.log_prob(noise, cond, per_patch=True).shape == (3, 16)
    assert prior.nll_loss(noise, cond).ndim == 0
    assert prior.sample(cond, generator=torch.Generator().manual_seed(0)).shape == (3, 3, 16, 16)


def test_condition_of_any_length(prior):
    noise = torch.randn(2, 3, 16, 16)
    for length in (1, 9):
        assert torch.isfinite(prior.log_prob(noise, torch.randn(2, length, 12))).all()


def test_causality(prior, cond):
    noise = torch.randn(3, 3, 16, 16)
    patches = prior.patchify(noise)
    k = 6
    changed = patches.clone()
    changed[:, k] += torch.randn_like(changed[:, k])
    mean_a, logvar_a = prior.patch_params(noise, cond)
    mean_b, logvar_b = prior.patch_params(prior.unpatchify(changed), cond)
    # Patch k's own parameters depend only on patches before it.
    assert torch.allclose(mean_a[:, : k + 1], mean_b[:, : k + 1], atol=1e-6)
    assert torch.allclose(logvar_a[:, : k + 1], logvar_b[:, : k + 1], atol=1e-6)
    assert not torch.allclose(mean_a[:, k + 1 :], mean_b[:, k + 1 :], atol=1e-4)


def test_patchify_round_trip(prior):
    noise = torch.randn(2, 3, 16, 16)
    assert torch.equal(prior.unpatchify(prior.patchify(noise)), noise)
    # Patch 1 is the second p x p block of the first row, flattened channel-major.
    assert torch.equal(prior.patchify(noise)[:, 1], noise[:, :, 0:4, 4:8].reshape(2, -1))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_kv_cache_matches_recompute(prior, cond, temperature):
    cached, logp_cached = prior.sample(
        cond, generator=torch.Generator().manual_seed(3), temperature=temperature, return_log_prob=True
    )
    full, logp_full = prior.sample(
        cond, generator=torch.Generator().manual_seed(3), temperature=temperature, return_log_prob=True,
        use_cache=False,
    )
    assert torch.allclose(cached, full, atol=1e-5)
    assert torch.allclose(logp_cached, logp_full, atol=1e-4)


def test_sample_log_prob_is_the_density_of_the_sample(prior, cond):
    noise, logp = prior.sample(cond, generator=torch.Generator().manual_seed(4), temperature=0.5, return_log_prob=True)
    assert torch.allclose(prior.log_prob(noise, cond, temperature=0.5), logp, atol=1e-3)


def test_log_prob_equals_torch_normal(prior, cond):
    noise = torch.randn(3, 3, 16, 16)
    mean, logvar = prior(noise, cond)
    expected = Normal(mean, torch.exp(0.5 * logvar.clamp(-20, 10))).log_prob(noise).sum((1, 2, 3))
    assert torch.allclose(prior.log_prob(noise, cond), expected, rtol=1e-5, atol=1e-3)
    per_patch = prior.log_prob(noise, cond, per_patch=True)
    assert torch.allclose(per_patch.sum(1), expected, rtol=1e-5, atol=1e-3)


def test_incremental_interface_drives_an_episode(prior, cond):
    state = prior.start(cond)
    patches = []
    g = torch.Generator().manual_seed(5)
    for _ in range(prior.num_patches):
        patch = state.mean + torch.exp(0.5 * state.logvar) * torch.randn(state.mean.shape, generator=g)
        patches.append(patch)
        state = prior.advance(state, patch)
    assert state.mean is None and state.num_done == prior.num_patches
    noise = prior.unpatchify(torch.stack(patches, 1))
    # The per-step Gaussians are the teacher-forced ones.
    mean, _ = prior.patch_params(noise, cond)
    assert torch.allclose(mean[:, 0], prior.start(cond).mean, atol=1e-6)
    with pytest.raises(ValueError, match="already decoded"):
        prior.advance(state, patches[0])


def test_zero_initialised_prompt_shift_leaves_the_distribution_unchanged(cond):
    plain, shifted = make_prior(seed=3), make_prior(seed=3, prompt_shift_width=8)
    noise = torch.randn(3, 3, 16, 16)
    assert torch.equal(plain.log_prob(noise, cond), shifted.log_prob(noise, cond))
    assert torch.equal(
        plain.sample(cond, generator=torch.Generator().manual_seed(1)),
        shifted.sample(cond, generator=torch.Generator().manual_seed(1)),
    )


def test_prompt_shift_depends_on_the_prompt_and_not_on_the_noise(cond):
    plain = make_prior(seed=3)
    shifted = randomize_heads(make_prior(seed=3, prompt_shift_width=8))
    randomize_heads(plain)  # the same head weights (same generator draws), no shift
    noise_a, noise_b = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    shift_a = shifted.patch_params(noise_a, cond)[0] - plain.patch_params(noise_a, cond)[0]
    shift_b = shifted.patch_params(noise_b, cond)[0] - plain.patch_params(noise_b, cond)[0]
    assert torch.allclose(shift_a, shift_b, atol=1e-5)  # the same for any earlier patches
    assert shift_a.abs().mean() > 0.01
    assert not torch.allclose(shift_a[0], shift_a[1], atol=1e-3)  # but not for another prompt
    assert not torch.allclose(shift_a[:, 0], shift_a[:, 1], atol=1e-3)  # nor for another patch
    with pytest.raises(ValueError, match="prompt_shift_width"):
        make_prior(prompt_shift_width=-1)


def test_untrained_prior_is_close_to_standard_normal():
    prior = make_prior(seed=2, latent_height=32, latent_width=32, patch_size=8)
    cond = torch.randn(64, 4, 12)
    noise = prior.sample(cond, generator=torch.Generator().manual_seed(0))
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 1.0) < 0.02


def test_save_load_round_trip(tmp_path, prior, cond):
    noise = torch.randn(3, 3, 16, 16)
    prior.save_pretrained(tmp_path / "prior")
    assert (tmp_path / "prior" / "config.json").exists()
    assert list((tmp_path / "prior").glob("*.safetensors"))
    loaded = NoiseARPrior.from_pretrained(tmp_path / "prior").eval()
    assert torch.equal(loaded.log_prob(noise, cond), prior.log_prob(noise, cond))
    assert torch.equal(
        loaded.sample(cond, generator=torch.Generator().manual_seed(1)),
        prior.sample(cond, generator=torch.Generator().manual_seed(1)),
    )


def test_release_checkpoint_round_trip(tmp_path, cond):
    prior = randomize_heads(make_prior(residual_style="release", n_heads=1))
    state = prior_to_release_state_dict(prior)
    assert "latent_patch_encoder.0.weight" in state and "self_attn_layers.1.in_proj_weight" in state
    assert state["learnable_start_token_emb"].shape == (32,)
    assert state["pos_encoding"].shape == (1, 17, 32)
    assert state["prediction_head_mu.2.weight"].shape == (48, 64)
    torch.save(state, tmp_path / "release.pth")
    loaded = NoiseARPrior.from_release_checkpoint(
        tmp_path / "release.pth", n_heads=1, latent_channels=3, latent_height=16, latent_width=16, dropout=0.0
    )
    assert loaded.config.patch_size == 4 and loaded.config.n_layers == 2 and loaded.config.d_ff == 64
    assert not loaded.training and loaded.config.temperature == 0.5  # the release samples at 0.5
    noise = torch.randn(3, 3, 16, 16)
    assert torch.allclose(loaded.log_prob(noise, cond, temperature=1.0), prior.log_prob(noise, cond))
    assert torch.allclose(loaded.log_prob(noise, cond), prior.log_prob(noise, cond, temperature=0.5))


def test_release_layer_computes_what_torch_multihead_attention_does(cond):
    """The release's sub-layer `x = norm(x); x = mha(x, x, x, mask)[0] + x` with nn.MultiheadAttention."""
    prior = randomize_heads(make_prior(n_layers=1))
    layer = prior.layers[0]
    mha = torch.nn.MultiheadAttention(32, 2, batch_first=True)
    mha.load_state_dict(layer.self_attn.state_dict())
    x = torch.randn(3, 7, 32)
    mask = torch.triu(torch.full((7, 7), float("-inf")), diagonal=1)
    h = layer.self_attn_norm(x)
    expected = mha(h, h, h, attn_mask=mask)[0] + h
    q = layer.self_attn.project_query(h)
    k, v = layer.self_attn.project_key_value(h)
    assert torch.allclose(layer.self_attn.attend(q, k, v, causal=True) + h, expected, atol=1e-5)


def test_corrupt_release_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only"):
        NoiseARPrior.from_release_checkpoint(bad, n_heads=1)
    torch.save({"something_else.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unexpected keys"):
        NoiseARPrior.from_release_checkpoint(tmp_path / "other.pth", n_heads=1)
    with pytest.raises(FileNotFoundError, match="local path"):
        NoiseARPrior.from_release_checkpoint(tmp_path / "missing.pth", n_heads=1)


def test_nll_falls_when_overfitting_a_small_batch(cond):
    prior = make_prior(residual_style="pre_norm").train()
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.3
    optimizer = torch.optim.Adam(prior.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        loss = prior.nll_loss(noise, cond, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    prior.eval()
    assert prior.log_prob(noise, cond).mean() > make_prior(residual_style="pre_norm").log_prob(noise, cond).mean()


def test_bad_input_is_a_clear_error(prior, cond):
    with pytest.raises(ValueError, match=r"noise must be \[B, 3, 16, 16\]"):
        prior.log_prob(torch.randn(3, 4, 16, 16), cond)
    with pytest.raises(ValueError, match="cond must be"):
        prior.log_prob(torch.randn(3, 3, 16, 16), torch.randn(3, 5, 7))
    with pytest.raises(ValueError, match="batch"):
        prior.log_prob(torch.randn(2, 3, 16, 16), cond)
    nan_noise = torch.randn(3, 3, 16, 16)
    nan_noise[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        prior.log_prob(nan_noise, cond)
    with pytest.raises(ValueError, match="NaN"):
        prior.sample(cond * float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        prior.sample(cond, temperature=0.0)
    with pytest.raises(ValueError, match="divisible"):
        NoiseARPrior(**{**CONFIG, "patch_size": 5})
    state = prior.start(cond)
    with pytest.raises(ValueError, match="patch must be"):
        prior.advance(state, torch.zeros(3, 7))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_gaussian_kl_equals_torch_and_is_zero_only_at_the_reference(temperature):
    from torch.distributions import kl_divergence

    from noisear_rl.prior.gaussian import gaussian_kl

    g = torch.Generator().manual_seed(0)
    mean, ref_mean = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    logvar, ref_logvar = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    expected = kl_divergence(
        Normal(mean, temperature * (logvar / 2).exp()), Normal(ref_mean, temperature * (ref_logvar / 2).exp())
    )
    torch.testing.assert_close(gaussian_kl(mean, logvar, ref_mean, ref_logvar, temperature), expected)
    assert torch.equal(gaussian_kl(mean, logvar, mean, logvar, temperature), torch.zeros(4, 5))
    # a blown-up variance costs about half its log-variance per element, with no bound
    assert gaussian_kl(ref_mean, ref_logvar + 9, ref_mean, ref_logvar).min() > 1000
