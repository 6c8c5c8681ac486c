"""Loading the public NoiseAR release: eval mode, its sampling temperature, heads, start token, errors.

`ReleaseNet` below transcribes the release's `NoiseARNet` arithmetic (try.py / eval.py of
HKUST-SAIL/NoiseAR) with torch's own `nn.MultiheadAttention`, at toy sizes: the release's layer
`x = norm(x); x = mha(x, x, x, causal)[0] + x`, its cross-attention and FFN, its heads, and its
sampling loop `mu + randn_like(std) * std * 0.5` with `std = exp(0.5 * clamp(logvar, -20, 10))`.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from noisear_rl import NoiseARPrior
from noisear_rl.noise_sources import load_noise_source
from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.prior.release import main as convert_main
from noisear_rl.prior.release import prior_to_release_state_dict

C, H, P, D, FF = 4, 16, 4, 32, 64  # channels, latent side, patch, d_model, d_ff
PATCH_DIM = C * P * P


class ReleaseNet(nn.Module):
    """The release's NoiseARNet at toy sizes (a transcription; its latent side is a parameter here)."""

    def __init__(self, n_heads: int, n_layers: int = 1, cond_dim: int | None = None) -> None:
        super().__init__()
        if cond_dim is not None:
            self.dim_adapter = nn.Linear(cond_dim, D)
        self.latent_patch_encoder = nn.Sequential(nn.Linear(PATCH_DIM, PATCH_DIM // 2), nn.SiLU(), nn.Linear(PATCH_DIM // 2, D))
        self.register_buffer("learnable_start_token_emb", torch.randn(D) * 0.1)
        mha = lambda: nn.MultiheadAttention(D, n_heads, dropout=0.15, batch_first=True)  # noqa: E731
        self.self_attn_layers = nn.ModuleList([mha() for _ in range(n_layers)])
        self.self_attn_norm = nn.ModuleList([nn.LayerNorm(D) for _ in range(n_layers)])
        self.cross_attn_layers = nn.ModuleList([mha() for _ in range(n_layers)])
        self.cross_attn_norm = nn.ModuleList([nn.LayerNorm(D) for _ in range(n_layers)])
        self.ffn_layers = nn.ModuleList([
            nn.Sequential(nn.Linear(D, FF), nn.GELU(), nn.Dropout(0.15), nn.Linear(FF, D), nn.Dropout(0.15))
            for _ in range(n_layers)
        ])
        self.ffn_norm = nn.ModuleList([nn.LayerNorm(D) for _ in range(n_layers)])
        self.prediction_head_mu = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, PATCH_DIM))
        self.prediction_head_logvar = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, PATCH_DIM))
        self.n_layers = n_layers
        length = (H // P) ** 2 + 1
        position = torch.arange(length, dtype=torch.float)[:, None]
        frequencies = torch.exp(torch.arange(0, D, 2, dtype=torch.float) * (-math.log(10000.0) / D))
        table = torch.zeros(1, length, D)
        table[0, :, 0::2] = torch.sin(position * frequencies)
        table[0, :, 1::2] = torch.cos(position * frequencies)
        self.register_buffer("pos_encoding", table)

    def network(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        mask = torch.triu(torch.ones(x.shape[1], x.shape[1]) * float("-inf"), diagonal=1)
        for i in range(self.n_layers):
            x = self.self_attn_norm[i](x)
            x = self.self_attn_layers[i](x, x, x, attn_mask=mask)[0] + x
            x = self.cross_attn_norm[i](x)
            x = self.cross_attn_layers[i](x, y, y)[0] + x
            x = self.ffn_norm[i](x)
            x = self.ffn_layers[i](x) + x
        return self.prediction_head_mu(x), self.prediction_head_logvar(x)

    def inference(self, text_emb: Tensor) -> Tensor:
        """The release's sampler: the patches [B, T, C*p*p] (its `patchfy_to_origin` is our unpatchify)."""
        if hasattr(self, "dim_adapter"):
            text_emb = self.dim_adapter(text_emb)
        sequence = self.learnable_start_token_emb[None, None, :].expand(text_emb.shape[0], -1, -1)
        patches = []
        for _ in range((H // P) ** 2):
            mu, logvar = self.network(sequence + self.pos_encoding[:, : sequence.shape[1]], text_emb)
            std = torch.exp(0.5 * torch.clamp(logvar[:, -1], -20, 10))
            patch = mu[:, -1] + torch.randn_like(std) * (std * 0.5)
            patches.append(patch)
            sequence = torch.cat([sequence, self.latent_patch_encoder(patch[:, None])], dim=1)
        return torch.stack(patches, 1)


def release_checkpoint(tmp_path, n_heads: int = 1, cond_dim: int | None = None, seed: int = 0) -> tuple[ReleaseNet, str]:
    torch.manual_seed(seed)
    net = ReleaseNet(n_heads, cond_dim=cond_dim)
    with torch.no_grad():  # the release's heads start near zero: give them weights that matter
        for head in (net.prediction_head_mu, net.prediction_head_logvar):
            head[-1].weight.normal_(0, 0.2)
    path = tmp_path / f"release-{n_heads}-{cond_dim}.pth"
    torch.save(net.state_dict(), path)
    return net.eval(), str(path)


def load(path: str, **config) -> NoiseARPrior:
    return NoiseARPrior.from_release_checkpoint(path, **{"latent_height": H, "latent_width": H, **config})


@pytest.mark.parametrize("cond_dim", [None, 12], ids=["sdxl", "dit-adapter"])
def test_default_sampling_reproduces_the_release_sampler(tmp_path, cond_dim):
    net, path = release_checkpoint(tmp_path, cond_dim=cond_dim)
    prior = load(path, n_heads=1)
    assert not prior.training  # as from_pretrained: no dropout right after loading
    assert prior.config.temperature == 0.5
    cond = torch.randn(3, 5, cond_dim or D)
    torch.manual_seed(11)
    with torch.no_grad():
        expected = net.inference(cond)
    torch.manual_seed(11)  # the same standard normals, drawn in the same order
    noise = prior.sample(cond)
    torch.testing.assert_close(prior.patchify(noise), expected, rtol=0, atol=1e-5)
    # An explicit temperature still wins, and log_prob defaults to the stored one.
    torch.manual_seed(11)
    assert not torch.allclose(prior.sample(cond, temperature=1.0), noise, atol=1e-3)
    torch.testing.assert_close(prior.log_prob(noise, cond), prior.log_prob(noise, cond, temperature=0.5))


def test_teacher_forced_gaussians_equal_the_release_network_with_four_heads(tmp_path):
    net, path = release_checkpoint(tmp_path, n_heads=4)
    cond, noise = torch.randn(2, 5, D), torch.randn(2, C, H, H)
    prior = load(path, n_heads=4)
    patches = prior.patchify(noise)
    with torch.no_grad():
        # The release's teacher-forced forward: start token + every patch, the last output dropped.
        x = torch.cat([net.learnable_start_token_emb.expand(2, 1, -1), net.latent_patch_encoder(patches)], 1)
        mu, logvar = (out[:, :-1] for out in net.network(x + net.pos_encoding, cond))
    mean, log_variance = prior.patch_params(noise, cond)
    torch.testing.assert_close(mean, mu, rtol=0, atol=1e-5)
    torch.testing.assert_close(log_variance, logvar, rtol=0, atol=1e-5)
    # The same weights read with the wrong head count give other means: why n_heads is required.
    wrong = load(path, n_heads=1).patch_params(noise, cond)[0]
    assert (wrong - mu).abs().max() > 1e-3


def test_the_head_count_must_be_given(tmp_path):
    _, path = release_checkpoint(tmp_path, n_heads=4)
    with pytest.raises(ValueError, match=r"does not record its number of attention heads.*n_heads=1.*--n-heads"):
        NoiseARPrior.from_release_checkpoint(path)


def test_the_start_token_stays_fixed_unless_asked(tmp_path):
    net, path = release_checkpoint(tmp_path)
    prior = load(path, n_heads=1)
    assert "start_token" not in dict(prior.named_parameters())
    torch.testing.assert_close(prior.start_token, net.learnable_start_token_emb)
    prior.requires_grad_(True)  # what an algorithm's trainable="all" does
    optimizer = torch.optim.SGD(prior.parameters(), lr=0.1)
    prior.nll_loss(torch.randn(2, C, H, H), torch.randn(2, 5, D)).backward()
    optimizer.step()
    torch.testing.assert_close(prior.start_token, net.learnable_start_token_emb)
    # Saved and reloaded, it is still a buffer with the release's values.
    prior.save_pretrained(tmp_path / "converted")
    reloaded = NoiseARPrior.from_pretrained(tmp_path / "converted")
    assert "start_token" not in dict(reloaded.named_parameters())
    torch.testing.assert_close(reloaded.start_token, net.learnable_start_token_emb)
    trainable = load(path, n_heads=1, trainable_start_token=True)
    assert "start_token" in dict(trainable.named_parameters())
    assert "learnable_start_token_emb" in prior_to_release_state_dict(prior)


def test_the_ablation_variant_is_a_clear_error(tmp_path):
    net, _ = release_checkpoint(tmp_path)
    state = net.state_dict()
    for name in ("mu", "logvar"):  # n_prediction_head=1: Linear-GELU-Linear, then Linear(d_model, patch)
        for key in [k for k in state if k.startswith(f"prediction_head_{name}.")]:
            del state[key]
        head = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D), nn.Linear(D, PATCH_DIM))
        state.update({f"prediction_head_{name}.{k}": v for k, v in head.state_dict().items()})
    torch.save(state, tmp_path / "ablation.pth")
    with pytest.raises(ValueError, match=r"ablation variant \(n_prediction_head != 0"):
        load(str(tmp_path / "ablation.pth"), n_heads=1)
    # Other size mismatches are a ValueError too, not torch's RuntimeError.
    state = net.state_dict()
    state["ffn_norm.0.weight"] = torch.ones(D + 1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="does not fit the NoiseAR release architecture"):
        load(str(tmp_path / "odd.pth"), n_heads=1)


def test_convert_cli_writes_a_folder_that_records_heads_and_temperature(tmp_path, capsys):
    net, path = release_checkpoint(tmp_path, n_heads=2)
    # The CLI converts for the release's 128x128 latents; the toy checkpoint's positions cover 16x16.
    assert convert_main([path, "--n-heads", "2", "--out", str(tmp_path / "cli")]) == 2  # one-line error, exit status 2
    assert "pos_encoding covers 16 patches" in capsys.readouterr().err and not (tmp_path / "cli").exists()
    torch.save({k: v for k, v in net.state_dict().items() if k != "pos_encoding"}, tmp_path / "nopos.pth")
    assert convert_main([str(tmp_path / "nopos.pth"), "--n-heads", "2", "--out", str(tmp_path / "cli")]) == 0
    assert "n_heads=2, temperature=0.5" in capsys.readouterr().out
    converted = NoiseARPrior.from_pretrained(tmp_path / "cli")
    assert (converted.config.n_heads, converted.config.temperature) == (2, 0.5)
    assert converted.config.trainable_start_token is False
    assert (converted.config.latent_height, converted.config.latent_width) == (128, 128)


class StubBackend(DiffusionBackend):
    """What the noisear source reads from a backend: latent shape, condition width, device."""

    latent_shape = (C, H, H)
    cond_dim = D
    num_inference_steps = 1
    guidance_scale = 1.0
    device = torch.device("cpu")

    def encode(self, prompts: list[str]) -> Condition:
        return Condition(torch.randn(len(prompts), 5, D, generator=torch.Generator().manual_seed(len(prompts))))

    def generate(self, latents: Tensor, cond: Condition, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def predict_noise(self, latents: Tensor, timestep: int, cond: Condition, guidance_scale: float) -> Tensor:
        raise NotImplementedError


def test_noisear_source_samples_a_release_pth_as_the_release_does(tmp_path):
    net, path = release_checkpoint(tmp_path)
    backend = StubBackend()
    with pytest.raises(ValueError, match=r"noisear:PATH\?n_heads=1"):
        load_noise_source(f"noisear:{path}", backend=backend)
    # The toy checkpoint's 16x16 positions need its latent shape; the release's own are 128x128.
    torch.save({k: v for k, v in net.state_dict().items() if k != "pos_encoding"}, tmp_path / "nopos.pth")
    source = load_noise_source(f"noisear:{tmp_path / 'nopos.pth'}?n_heads=1", backend=Stub128())
    assert source.temperature == 0.5
    assert load_noise_source(f"noisear:{tmp_path / 'nopos.pth'}?n_heads=1&temperature=1.0", backend=Stub128()).temperature == 1.0
    prior = load(path, n_heads=1)
    small = load_noise_source("noisear", backend=backend, prior=prior)
    assert small.temperature == 0.5  # an already-built release prior: its config's temperature
    cond = backend.encode(["a", "b"])
    torch.manual_seed(5)  # the release draws from the global generator
    with torch.no_grad():
        expected = net.inference(cond.embeds)
    noise = small(["a", "b"], cond, torch.Generator().manual_seed(5))
    torch.testing.assert_close(prior.patchify(noise), expected, rtol=0, atol=1e-5)


class Stub128(StubBackend):
    latent_shape = (C, 128, 128)
