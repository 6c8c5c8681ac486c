"""The noise prompt network (NPNet) as the Golden Noise repository ships it, in plain torch.

Golden Noise (Zhou et al., 2024; xie-lab-ml/Golden-Noise-for-Diffusion-Models, `inference/`)
releases NPNet weights for SDXL, DreamShaper-xl-v2-turbo and Hunyuan-DiT (hub
`Klayand/GoldenNoiseModel`). `GoldenNoiseNPNet` computes what their `NPNet.forward` computes and
loads those `.pth` files (weights-only) with every key mapped:

    text_emb = AdaGroupNorm(x_T, flatten(prompt_embeds))        # "embeeding": Linear(77 D -> 8)
    golden   = svd(x_T) + (2 sigmoid(alpha) - 1) text_emb + beta swin(x_T + text_emb)

- `svd` ("unet_svd", their `SVDNoiseUnet`): the four channels tile one 2H x 2W matrix
  (`b (a c) h w -> b (a h) (c w)`); from its SVD U diag(s) V^T, MLPs of the singular vectors
  (rows of U^T and of V^T) and of s, a multi-head self-attention and a mean over vectors predict
  new singular values s' = s + MLP(...); the output is U diag(s') V^T tiled back. Its BatchNorm
  is in the checkpoint but unused, as in the reference.
- `swin` ("unet_embedding", their `NoiseTransformer`): nearest-upsample to 224x224, a 1x1 conv
  to 3 channels, timm's `swin_tiny_patch4_window7_224` `forward_features` (NHWC [B, 7, 7, 768]),
  a nearest resize of that tensor's last two dims to H x W (the 7 rows act as channels, as in the
  reference) and a 1x1 conv from 7 to 4 channels. The Swin-T here reimplements timm >= 0.9's
  (timm needs torchvision, whose only build for this project's torch is a CUDA one) with timm's
  parameter names; its ImageNet classifier (`head.fc`) and timm's recomputable buffers
  (`relative_position_index`, `attn_mask`) are not kept (the loader checks the buffers).

The Shapes world keeps its own, smaller network (`noisear_rl.noise_sources.npnet`), trained on
its own golden noise; this one is for the released weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaGroupNorm
from torch import Tensor, nn

SWIN_IMAGE_SIZE = 224
SWIN_PATCH_SIZE = 4
SWIN_WINDOW = 7
SWIN_EMBED_DIM = 96
SWIN_DEPTHS = (2, 2, 6, 2)
SWIN_HEADS = (3, 6, 12, 24)
PROMPT_TOKENS = 77
"""Both releases flatten 77 prompt tokens (SDXL 77 x 2048, Hunyuan-DiT's CLIP 77 x 1024)."""
REFERENCE_PARTS = {"unet_svd": "unet_svd", "unet_embedding": "unet_embedding", "embeeding": "text_embedding"}
"""Sections of a Golden Noise `.pth` (spelled as the reference saves them) -> our submodules."""


# ------------------------------------------------------------------------------------ Swin-T
def window_partition(x_BHWC: Tensor, window: int) -> Tensor:
    """[B, H, W, C] -> [B * nW, window * window, C], windows in raster order, tokens row-major."""
    b, h, w, c = x_BHWC.shape
    x = x_BHWC.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_merge(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of `window_partition`: [B * nW, window * window, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def relative_position_index(window: int) -> Tensor:
    """[N, N] index into the (2w - 1)^2 relative-position table for token pairs of one window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def shifted_window_mask(resolution: int, window: int, shift: int) -> Tensor:
    """[nW, N, N] additive mask of shifted-window attention: 0 within a region, -100 across the
    regions the cyclic shift brought together (Swin's values)."""
    region = torch.zeros(1, resolution, resolution, 1)
    bounds = ((0, resolution - window), (resolution - window, resolution - shift), (resolution - shift, resolution))
    label = 0
    for top, bottom in bounds:
        for left, right in bounds:
            region[:, top:bottom, left:right] = label
            label += 1
    labels = window_partition(region, window)[..., 0]  # [nW, N]
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: [B * nW, N, C]; mask: [nW, N, N] additive, or None."""
        windows, n, c = x.shape
        q, k, v = self.qkv(x).reshape(windows, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(n, n, self.heads).permute(2, 0, 1)[None]  # [1, heads, N, N]
        if mask is not None:
            per_window = mask.shape[0]
            bias = (bias[:, None] + mask[None, :, None]).expand(windows // per_window, -1, -1, -1, -1)
            bias = bias.reshape(windows, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(windows, n, c))


class SwinMlp(nn.Module):
    """fc1 - GELU - fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """x + W-MSA(norm1(x)) (cyclically shifted windows when `shift`), then x + MLP(norm2(x)); NHWC."""

    def __init__(self, dim: int, heads: int, resolution: int, window: int, shift: int) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, 4 * dim)
        mask = shifted_window_mask(resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x_BHWC: Tensor) -> Tensor:
        b, h, w, c = x_BHWC.shape
        shifted = self.norm1(x_BHWC)
        if self.shift:
            shifted = torch.roll(shifted, shifts=(-self.shift, -self.shift), dims=(1, 2))
        attended = window_merge(self.attn(window_partition(shifted, self.window), self.attn_mask), self.window, h, w)
        if self.shift:
            attended = torch.roll(attended, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x_BHWC + attended
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (order: (0,0), (1,0), (0,1), (1,1) as (row, column)), LayerNorm,
    then a Linear to twice the width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x_BHWC: Tensor) -> Tensor:
        b, h, w, c = x_BHWC.shape
        x = x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """An optional patch merging, then blocks alternating plain and shifted windows."""

    def __init__(self, dim: int, depth: int, heads: int, resolution: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        window = min(SWIN_WINDOW, resolution)
        shift = 0 if resolution <= SWIN_WINDOW else SWIN_WINDOW // 2  # no shift when one window covers the map
        self.blocks = nn.ModuleList(
            [SwinBlock(dim, heads, resolution, window, shift if i % 2 else 0) for i in range(depth)]
        )

    def forward(self, x_BHWC: Tensor) -> Tensor:
        x = self.downsample(x_BHWC)
        for block in self.blocks:
            x = block(x)
        return x


class PatchEmbed(nn.Module):
    """4x4 patches of a 3-channel image -> LayerNorm'd tokens, NHWC."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, SWIN_EMBED_DIM, SWIN_PATCH_SIZE, stride=SWIN_PATCH_SIZE)
        self.norm = nn.LayerNorm(SWIN_EMBED_DIM)

    def forward(self, image_BCHW: Tensor) -> Tensor:
        return self.norm(self.proj(image_BCHW).permute(0, 2, 3, 1))


class SwinTiny(nn.Module):
    """timm's `swin_tiny_patch4_window7_224` feature extractor (no classifier head).

    `forward_features`: [B, 3, 224, 224] -> [B, 7, 7, 768] (NHWC, after the final LayerNorm).
    """

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed()
        resolution = SWIN_IMAGE_SIZE // SWIN_PATCH_SIZE
        stages = []
        for i, (depth, heads) in enumerate(zip(SWIN_DEPTHS, SWIN_HEADS)):
            stages.append(SwinStage(SWIN_EMBED_DIM * 2**i, depth, heads, resolution >> i, downsample=i > 0))
        self.layers = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(SWIN_EMBED_DIM * 2 ** (len(SWIN_DEPTHS) - 1))

    def forward_features(self, image_BCHW: Tensor) -> Tensor:
        x = self.patch_embed(image_BCHW)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)


# --------------------------------------------------------------------------- NPNet branches
class SingularValueNet(nn.Module):
    """The reference's `SVDNoiseUnet`: new singular values of the tiled noise matrix, from its
    singular vectors and values (see the module docstring).

    Args:
        resolution: H = W of the latent; the matrix is 2H x 2W, so vectors have n = 2H entries.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        n = 2 * resolution
        self.mlp1 = nn.Sequential(nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, n))
        self.mlp2 = nn.Sequential(nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, n))
        self.mlp3 = nn.Sequential(nn.Linear(n, n))
        self.attention = TokenAttention(n, heads=8)
        self.bn = nn.BatchNorm2d(n)  # in the reference's checkpoint; its forward never uses it
        self.mlp4 = nn.Sequential(nn.Linear(n, 1024), nn.ReLU(), nn.Linear(1024, n))

    def forward(self, noise_BCHW: Tensor) -> Tensor:
        b, c, h, w = noise_BCHW.shape
        matrix = noise_BCHW.reshape(b, 2, 2, h, w).permute(0, 1, 3, 2, 4).reshape(b, 2 * h, 2 * w)
        u, s, vh = torch.linalg.svd(matrix)
        vectors = self.mlp1(u.transpose(1, 2)) + self.mlp2(vh) + self.mlp3(s)[:, None, :]
        s_new = self.mlp4(self.attention(vectors).mean(1)) + s
        out = u @ torch.diag_embed(s_new) @ vh
        return out.reshape(b, 2, h, 2, w).permute(0, 1, 3, 2, 4).reshape(b, c, h, w)


class TokenAttention(nn.Module):
    """Multi-head self-attention with one qkv Linear (no bias) and an output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_BNC: Tensor) -> Tensor:
        b, n, c = x_BNC.shape
        q, k, v = self.qkv(x_BNC).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class SwinResidual(nn.Module):
    """The reference's `NoiseTransformer` (see the module docstring)."""

    def __init__(self, resolution: int, channels: int = 4) -> None:
        super().__init__()
        self.resolution = resolution
        self.upconv = nn.Conv2d(SWIN_WINDOW, channels, 1)
        self.downconv = nn.Conv2d(channels, 3, 1)
        self.swin = SwinTiny()

    def forward(self, x_BCHW: Tensor) -> Tensor:
        image = self.downconv(F.interpolate(x_BCHW, [SWIN_IMAGE_SIZE, SWIN_IMAGE_SIZE]))
        features = self.swin.forward_features(image)  # [B, 7, 7, 768]: dim 1 is read as channels next
        return self.upconv(F.interpolate(features, [self.resolution, self.resolution]))


class GoldenNoiseNPNet(ModelMixin, ConfigMixin):
    """(x_T [B, 4, R, R], prompt embeddings [B, 77, D]) -> golden noise, as Golden Noise's NPNet.

    Args:
        resolution: R, the latent's height and width (128 for 1024 px SDXL and Hunyuan-DiT).
        cond_dim: D of the prompt embeddings (2048 for SDXL and DreamShaper, 1024 for Hunyuan-DiT).
        cond_tokens: Prompt tokens the text branch flattens (77 in every release).
    """

    @register_to_config
    def __init__(self, resolution: int = 128, cond_dim: int = 2048, cond_tokens: int = PROMPT_TOKENS) -> None:
        super().__init__()
        self.unet_svd = SingularValueNet(resolution)
        self.unet_embedding = SwinResidual(resolution)
        self.text_embedding = AdaGroupNorm(cond_tokens * cond_dim, 4, 1, eps=1e-6)
        self.alpha = nn.Parameter(torch.zeros(1))  # the reference starts both blend weights at 0
        self.beta = nn.Parameter(torch.zeros(1))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the noises this network maps."""
        return (4, self.config.resolution, self.config.resolution)

    def forward(self, noise: Tensor, cond: Tensor) -> Tensor:
        """Golden noises [B, 4, R, R] (float32) for noises [B, 4, R, R] and prompt embeddings [B, 77, D]."""
        c = self.config
        if noise.ndim != 4 or tuple(noise.shape[1:]) != self.latent_shape:
            raise ValueError(f"noise must be [B, {', '.join(map(str, self.latent_shape))}], got {tuple(noise.shape)}")
        if cond.ndim != 3 or cond.shape != (noise.shape[0], c.cond_tokens, c.cond_dim):
            raise ValueError(
                f"cond must be [{noise.shape[0]}, {c.cond_tokens}, {c.cond_dim}] (the prompt embeddings NPNet was "
                f"trained on), got {tuple(cond.shape)}"
            )
        noise = noise.to(self.dtype)
        text_emb = self.text_embedding(noise, cond.to(self.dtype).reshape(cond.shape[0], -1))
        residual = self.unet_embedding(noise + text_emb)
        golden = self.unet_svd(noise) + (2 * torch.sigmoid(self.alpha) - 1) * text_emb + self.beta * residual
        return golden.float()

    @classmethod
    def from_reference_checkpoint(cls, path: str | os.PathLike[str]) -> GoldenNoiseNPNet:
        """Loads a Golden Noise NPNet `.pth` (weights-only); sizes are read from the weights.

        Raises:
            FileNotFoundError: No file at `path`.
            ValueError: Not a weights-only NPNet checkpoint, or keys this architecture does not have.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"no Golden Noise NPNet checkpoint at {str(path)!r}; download it (hub Klayand/GoldenNoiseModel) on a "
                "connected machine and pass its local path as 'golden:PATH.pth'"
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # corrupt file, pickled objects, truncated download
            raise ValueError(f"cannot read {str(path)!r} as a weights-only NPNet checkpoint: {error}") from error
        state = reference_to_npnet_state_dict(checkpoint)
        in_features = state["text_embedding.linear.weight"].shape[1]
        if in_features % PROMPT_TOKENS:
            raise ValueError(f"{str(path)!r}: the text branch reads {in_features} features, not {PROMPT_TOKENS} tokens x D")
        network = cls(resolution=state["unet_svd.mlp1.0.weight"].shape[1] // 2, cond_dim=in_features // PROMPT_TOKENS)
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[-1].strip()
            raise ValueError(f"{str(path)!r} does not fit Golden Noise's NPNet: {first}") from error
        return network.eval()


def reference_to_npnet_state_dict(checkpoint: object) -> dict[str, Tensor]:
    """A Golden Noise `.pth` ({"unet_svd", "unet_embedding", "embeeding": state dicts, "alpha",
    "beta": [1] tensors}) as one `GoldenNoiseNPNet` state dict.

    The Swin-T classifier (`swin.head.*`) is dropped; timm's recomputable buffers
    (`relative_position_index`, `attn_mask`), where an older timm saved them, are checked and dropped.

    Raises:
        ValueError: A missing section, or buffers that are not Swin-T's.
    """
    if not isinstance(checkpoint, dict) or not {*REFERENCE_PARTS, "alpha", "beta"} <= set(checkpoint):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"not a Golden Noise NPNet checkpoint: expected sections {sorted({*REFERENCE_PARTS, 'alpha', 'beta'})}, "
            f"found {found}"
        )
    expected_buffers: dict[str, Tensor] = {}
    state: dict[str, Tensor] = {}
    for part, module in REFERENCE_PARTS.items():
        for key, value in checkpoint[part].items():
            key = key.removeprefix("module.")
            if part == "unet_embedding" and key.startswith("swin.head."):
                continue  # ImageNet classifier: forward_features never reads it
            if key.endswith(("relative_position_index", "attn_mask")):
                if not expected_buffers:  # built once, only for checkpoints that saved them
                    expected_buffers = {f"swin.{k}": v for k, v in SwinTiny().named_buffers()}
                expected = expected_buffers.get(key)
                if expected is None or expected.shape != value.shape or not torch.equal(expected.to(value.dtype), value):
                    raise ValueError(f"{part}.{key} is not the buffer of timm's swin_tiny_patch4_window7_224")
                continue
            state[f"{module}.{key}"] = value
    for name in ("alpha", "beta"):
        state[name] = torch.as_tensor(checkpoint[name]).detach().reshape(1).float()
    return state
