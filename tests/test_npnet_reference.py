"""Golden Noise's released NPNet architecture (`GoldenNoiseNPNet`) and `golden:PATH.pth` loading.

`test_agrees_with_the_reference_npnet` builds the reference network as Golden Noise's
`inference/npnet_pipeline.py` does (timm's Swin-T, diffusers' `AdaGroupNorm`, their SVD branch
transcribed with einops) with random weights, saves it in their `.pth` format, and checks that
`golden:PATH.pth` gives the same noises. It needs timm and einops, which do not install into the
project's environment (timm pulls a CUDA torchvision); tests/upstream/README.md runs it. The other
tests run everywhere: Swin-T's parameter names and shapes against a list written by timm 1.0.31
(tests/data), the SVD branch's reconstruction, the blend formula, loading and errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from noisear_rl.noise_sources import load_noise_source
from noisear_rl.noise_sources.npnet_reference import GoldenNoiseNPNet, SwinTiny
from noisear_rl.pipelines.base import Condition, DiffusionBackend

TIMM_SHAPES = Path(__file__).parent / "data" / "timm_swin_tiny_patch4_window7_224.json"


class StubBackend(DiffusionBackend):
    """Just what a noise source reads: latent shape, condition width, device, random latents."""

    num_inference_steps = 1
    guidance_scale = 1.0
    device = torch.device("cpu")

    def __init__(self, resolution: int, cond_dim: int) -> None:
        self.latent_shape = (4, resolution, resolution)
        self.cond_dim = cond_dim

    def encode(self, prompts: list[str]) -> Condition:
        return Condition(torch.randn(len(prompts), 77, self.cond_dim, generator=torch.Generator().manual_seed(len(prompts))))

    def generate(self, latents: Tensor, cond: Condition, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def predict_noise(self, latents: Tensor, timestep: int, cond: Condition, guidance_scale: float) -> Tensor:
        raise NotImplementedError


def randomized(network: GoldenNoiseNPNet, seed: int = 0) -> GoldenNoiseNPNet:
    """Random weights everywhere, nonzero blend weights, and BatchNorm statistics (unused, but saved)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            scale = 0.5 if "relative_position_bias_table" in name else 1.0 / max(1, parameter.shape[-1]) ** 0.5
            parameter.copy_(torch.randn(parameter.shape, generator=g) * scale)
        network.alpha.fill_(0.7)
        network.beta.fill_(-0.4)
        network.unet_svd.bn.running_mean.normal_(generator=g)
    return network.eval()


def reference_checkpoint(network: GoldenNoiseNPNet) -> dict[str, object]:
    """`network` in the format Golden Noise's solvers save (`torch.save({...}, 'x.pth')`)."""
    state = network.state_dict()
    part = lambda prefix: {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    return {
        "unet_svd": part("unet_svd."),
        "unet_embedding": part("unet_embedding."),
        "embeeding": part("text_embedding."),
        "alpha": state["alpha"].clone().requires_grad_(True),  # saved as trainable tensors
        "beta": state["beta"].clone().requires_grad_(True),
    }


@pytest.fixture(scope="module")
def small() -> GoldenNoiseNPNet:
    torch.manual_seed(0)
    return randomized(GoldenNoiseNPNet(resolution=16, cond_dim=8))


def test_swin_parameters_have_timms_names_and_shapes():
    reference = json.loads(TIMM_SHAPES.read_text())["state_dict_shapes"]
    expected = {k: v for k, v in reference.items() if not k.startswith("head.")}
    ours = {k: list(v.shape) for k, v in SwinTiny().state_dict().items()}
    assert ours == expected


def test_svd_branch_with_unchanged_singular_values_returns_its_input(small):
    """U diag(s) V^T of the tiled matrix, tiled back, is the noise: the tiling round-trips."""
    branch = GoldenNoiseNPNet(resolution=16, cond_dim=8).unet_svd.eval()
    nn.init.zeros_(branch.mlp4[-1].weight)
    nn.init.zeros_(branch.mlp4[-1].bias)
    noise = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(branch(noise), noise, rtol=0, atol=1e-4)
    # Channel a * 2 + c is the (a, c) block of the 2H x 2W matrix the SVD sees.
    u, s, vh = torch.linalg.svd(torch.cat([torch.cat([noise[:, 0], noise[:, 1]], 2), torch.cat([noise[:, 2], noise[:, 3]], 2)], 1))
    torch.testing.assert_close(s, torch.linalg.svdvals(noise.reshape(2, 2, 2, 16, 16).permute(0, 1, 3, 2, 4).reshape(2, 32, 32)))


def test_forward_blends_the_three_branches(small):
    noise, cond = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 8)
    with torch.no_grad():
        text_emb = small.text_embedding(noise, cond.reshape(2, -1))
        expected = (
            small.unet_svd(noise)
            + (2 * torch.sigmoid(torch.tensor(0.7)) - 1) * text_emb
            - 0.4 * small.unet_embedding(noise + text_emb)
        )
        torch.testing.assert_close(small(noise, cond), expected)
    with pytest.raises(ValueError, match=r"cond must be \[2, 77, 8\]"):
        small(noise, torch.randn(2, 76, 8))
    assert GoldenNoiseNPNet().alpha.item() == GoldenNoiseNPNet().beta.item() == 0.0  # the reference's 0/0 start


def test_golden_source_loads_a_reference_pth(small, tmp_path):
    path = tmp_path / "npnet.pth"
    torch.save(reference_checkpoint(small), path)
    backend = StubBackend(resolution=16, cond_dim=8)
    source = load_noise_source(f"golden:{path}", backend=backend)
    assert isinstance(source.network, GoldenNoiseNPNet) and not source.network.training
    prompts = ["a cat", "a dog"]
    cond = backend.encode(prompts)
    noise = source(prompts, cond, torch.Generator().manual_seed(3))
    base = backend.random_latents(2, torch.Generator().manual_seed(3))  # the source's base noise
    with torch.no_grad():
        torch.testing.assert_close(noise, small(base, cond.embeds), rtol=0, atol=1e-5)
    # Converted once, the network also loads from a save_pretrained folder.
    source.network.save_pretrained(tmp_path / "folder")
    again = load_noise_source(f"golden:{tmp_path / 'folder'}", backend=backend)
    torch.testing.assert_close(again(prompts, cond, torch.Generator().manual_seed(3)), noise)


def test_reference_checkpoint_errors(small, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Klayand/GoldenNoiseModel.*golden:PATH\.pth"):
        GoldenNoiseNPNet.from_reference_checkpoint(tmp_path / "absent.pth")
    torch.save({"unet_svd": {}}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not a Golden Noise NPNet checkpoint"):
        GoldenNoiseNPNet.from_reference_checkpoint(tmp_path / "partial.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pth")  # a whole module: not weights-only
    with pytest.raises(ValueError, match="weights-only"):
        GoldenNoiseNPNet.from_reference_checkpoint(tmp_path / "pickled.pth")
    checkpoint = reference_checkpoint(small)
    # An older timm saved its recomputable buffers: accepted when they are Swin-T's.
    buffers = {f"swin.{k}": v for k, v in SwinTiny().named_buffers()}
    checkpoint["unet_embedding"] = {**checkpoint["unet_embedding"], **buffers}
    torch.save(checkpoint, tmp_path / "buffers.pth")
    GoldenNoiseNPNet.from_reference_checkpoint(tmp_path / "buffers.pth")
    key = "swin.layers.0.blocks.1.attn_mask"
    checkpoint["unet_embedding"][key] = checkpoint["unet_embedding"][key] * 2
    torch.save(checkpoint, tmp_path / "bad-buffer.pth")
    with pytest.raises(ValueError, match="attn_mask is not the buffer"):
        GoldenNoiseNPNet.from_reference_checkpoint(tmp_path / "bad-buffer.pth")
    checkpoint = reference_checkpoint(small)
    checkpoint["unet_svd"]["mlp4.0.weight"] = torch.zeros(3, 3)
    torch.save(checkpoint, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="does not fit Golden Noise's NPNet"):
        GoldenNoiseNPNet.from_reference_checkpoint(tmp_path / "odd.pth")


# --------------------------------------------------------------------------- against upstream
def reference_npnet(cond_dim: int, resolution: int) -> nn.Module:
    """Golden Noise's NPNet (inference/npnet_pipeline.py and inference/model/*.py), transcribed on
    timm's Swin-T, diffusers' AdaGroupNorm and einops, as their code builds it."""
    einops = pytest.importorskip("einops", reason="einops is not installed here; see tests/upstream/README.md")
    try:
        import timm
    except Exception as err:  # not installed, or torchvision's CUDA build failing to import
        pytest.skip(f"timm cannot be imported here ({err!r}); see tests/upstream/README.md")
    from diffusers.models.normalization import AdaGroupNorm
    from torch.nn import functional as F

    class Attention(nn.Module):  # their SVDNoiseUnet's attention (timm-style, qkv_bias=False)
        def __init__(self, dim: int, num_heads: int = 8) -> None:
            super().__init__()
            self.num_heads, self.head_dim = num_heads, dim // num_heads
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: Tensor) -> Tensor:
            B, N, C = x.shape
            q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            attn = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))

    class SVDNoiseUnet(nn.Module):
        def __init__(self, in_channels: int = 4, out_channels: int = 4, resolution: int = 128) -> None:
            super().__init__()
            _in, _out = int(resolution * in_channels // 2), int(resolution * out_channels // 2)
            self.mlp1 = nn.Sequential(nn.Linear(_in, 64), nn.ReLU(inplace=True), nn.Linear(64, _out))
            self.mlp2 = nn.Sequential(nn.Linear(_in, 64), nn.ReLU(inplace=True), nn.Linear(64, _out))
            self.mlp3 = nn.Sequential(nn.Linear(_in, _out))
            self.attention = Attention(_out)
            self.bn = nn.BatchNorm2d(_out)
            self.mlp4 = nn.Sequential(nn.Linear(_out, 1024), nn.ReLU(inplace=True), nn.Linear(1024, _out))

        def forward(self, x: Tensor) -> Tensor:
            x = einops.rearrange(x, "b (a c)h w ->b (a h)(c w)", a=2, c=2)
            U, s, V = torch.linalg.svd(x)
            out = self.mlp1(U.permute(0, 2, 1)) + self.mlp2(V) + self.mlp3(s).unsqueeze(1)
            out = self.mlp4(self.attention(out).mean(1)) + s
            pred = U @ torch.diag_embed(out) @ V
            return einops.rearrange(pred, "b (a h)(c w) -> b (a c) h w", a=2, c=2)

    class NoiseTransformer(nn.Module):
        def __init__(self, resolution: int = 128) -> None:
            super().__init__()
            self.upsample = lambda x: F.interpolate(x, [224, 224])
            self.downsample = lambda x: F.interpolate(x, [resolution, resolution])
            self.upconv = nn.Conv2d(7, 4, (1, 1), (1, 1), (0, 0))
            self.downconv = nn.Conv2d(4, 3, (1, 1), (1, 1), (0, 0))
            self.swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)  # theirs: True

        def forward(self, x: Tensor) -> Tensor:
            return self.upconv(self.downsample(self.swin.forward_features(self.downconv(self.upsample(x)))))

    class NPNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet_embedding = NoiseTransformer(resolution=resolution)
            self.unet_svd = SVDNoiseUnet(resolution=resolution)
            self.text_embedding = AdaGroupNorm(cond_dim * 77, 4, 1, eps=1e-6)
            self._alpha = torch.tensor([0.3])
            self._beta = torch.tensor([0.8])

        def forward(self, initial_noise: Tensor, prompt_embeds: Tensor) -> Tensor:
            prompt_embeds = prompt_embeds.float().view(prompt_embeds.shape[0], -1)
            text_emb = self.text_embedding(initial_noise.float(), prompt_embeds)
            golden_embedding = self.unet_embedding((initial_noise + text_emb).float())
            return (
                self.unet_svd(initial_noise.float())
                + (2 * torch.sigmoid(self._alpha) - 1) * text_emb
                + self._beta * golden_embedding
            )

    return NPNet()


@pytest.mark.parametrize("cond_dim", [2048, 1024], ids=["sdxl", "hunyuan-dit"])
def test_agrees_with_the_reference_npnet(tmp_path, cond_dim):
    torch.manual_seed(0)
    reference = reference_npnet(cond_dim, resolution=128).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            scale = 0.5 if "relative_position_bias_table" in name else 1.0 / max(1, parameter.shape[-1]) ** 0.5
            parameter.copy_(torch.randn(parameter.shape, generator=g) * scale)
    torch.save({
        "unet_svd": reference.unet_svd.state_dict(),
        "unet_embedding": reference.unet_embedding.state_dict(),
        "embeeding": reference.text_embedding.state_dict(),
        "alpha": reference._alpha.clone().requires_grad_(True),
        "beta": reference._beta.clone().requires_grad_(True),
    }, tmp_path / "npnet.pth")
    backend = StubBackend(resolution=128, cond_dim=cond_dim)
    source = load_noise_source(f"golden:{tmp_path / 'npnet.pth'}", backend=backend)
    noise, cond = torch.randn(2, 4, 128, 128, generator=g), torch.randn(2, 77, cond_dim, generator=g)
    with torch.no_grad():
        expected = reference(noise, cond)
        ours = source.network(noise, cond)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
