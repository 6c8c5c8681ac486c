"""Tiny random CLIP-family parts built from configs with a seed, for tests and benchmarks.

They have the real architectures (transformers `CLIPModel`, a byte-level CLIP BPE tokenizer, the
aesthetic MLP) at toy sizes, need no download, and give every CLIP-family reward a tiny twin:
`CLIPScore(clip_model=tiny_clip_model(), tokenizer=tiny_clip_tokenizer())`.
"""

from __future__ import annotations

from typing import Any

import torch

from noisear_rl.reward_models.clip_rewards import AestheticMLP

TINY_IMAGE_SIZE = 32


def tiny_clip_tokenizer() -> Any:
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (+ end-of-word forms), no merges.

    Ids: 0-511 byte tokens, 512 `<|startoftext|>`, 513 `<|endoftext|>` (the highest, as in CLIP).
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    vocab |= {symbol + "</w>": len(symbols) + i for i, symbol in enumerate(symbols)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_clip_model(
    seed: int = 0, image_size: int = TINY_IMAGE_SIZE, num_heads: int = 2, hidden_act: str = "gelu"
) -> Any:
    """A random `transformers.CLIPModel`: hidden 32, 2 layers, `num_heads` heads, 8-px patches, projection 16."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer_size = 514
    config = CLIPConfig(
        text_config=dict(
            vocab_size=tokenizer_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=num_heads,
            max_position_embeddings=77,
            hidden_act=hidden_act,
            bos_token_id=tokenizer_size - 2,
            eos_token_id=tokenizer_size - 1,
            pad_token_id=tokenizer_size - 1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=num_heads,
            image_size=image_size,
            patch_size=8,
            hidden_act=hidden_act,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config).eval()


def tiny_aesthetic_mlp(seed: int = 0, input_dim: int = 16) -> AestheticMLP:
    """A random `AestheticMLP` on `input_dim`-d embeddings (the tiny CLIP's projection size)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AestheticMLP(input_dim=input_dim).eval()
