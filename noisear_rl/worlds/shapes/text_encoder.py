"""A tiny transformer text encoder over the Shapes world's word vocabulary.

Its tokenizer is the fixed vocabulary stored in its own config (word-level, case-insensitive,
punctuation tolerant): token 0 pads, token 1 starts every prompt, so the empty prompt (the
unconditional branch of classifier-free guidance) is a start token followed by padding.
"""

from __future__ import annotations

import re

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from noisear_rl.worlds.shapes.world import VOCABULARY

PAD, BOS = "<pad>", "<bos>"


class ShapesTextEncoder(ModelMixin, ConfigMixin):
    """Word embeddings + learned positions + a few pre-norm transformer encoder layers.

    Args:
        vocabulary: The world's words; token ids are 2 + index (0 pads, 1 starts).
        max_length: Tokens per prompt, start token included.
        hidden_size: Width D of the output hidden states [B, max_length, D].
        num_layers: Transformer encoder layers.
        num_heads: Attention heads per layer.
    """

    @register_to_config
    def __init__(
        self,
        vocabulary: tuple[str, ...] | list[str] = VOCABULARY,
        max_length: int = 16,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        self.word_to_id = {w: i + 2 for i, w in enumerate(vocabulary)}
        self.token_embedding = nn.Embedding(len(vocabulary) + 2, hidden_size)
        # As large as the word embeddings (N(0, 1)): at 0.02 the encoder could barely tell word order,
        # so its states could not say which colour goes with which position.
        self.position_embedding = nn.Parameter(torch.randn(max_length, hidden_size))
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, dim_feedforward=2 * hidden_size, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden_size)

    def tokenize(self, prompts: list[str]) -> Tensor:
        """Token ids [B, max_length] (long).

        Raises:
            ValueError: A word outside the vocabulary (the message lists it), or a prompt too long.
        """
        vocabulary = list(self.config.vocabulary)
        ids = torch.zeros(len(prompts), self.config.max_length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = _words(prompt)
            unknown = sorted({w for w in words if w not in self.word_to_id})
            if unknown:
                raise ValueError(
                    f"unknown word(s) {unknown} in prompt {prompt!r}; the vocabulary is {vocabulary}"
                )
            if len(words) + 1 > self.config.max_length:
                raise ValueError(
                    f"prompt {prompt!r} has {len(words)} words; at most {self.config.max_length - 1} fit"
                )
            ids[row, 0] = 1
            ids[row, 1 : len(words) + 1] = torch.tensor([self.word_to_id[w] for w in words], dtype=torch.long)
        return ids

    def forward(self, input_ids: Tensor) -> Tensor:
        """Hidden states [B, L, D] for token ids [B, L]."""
        hidden = self.token_embedding(input_ids) + self.position_embedding[: input_ids.shape[1]]
        return self.final_norm(self.encoder(hidden))

    def encode(self, prompts: list[str]) -> Tensor:
        """Hidden states [B, max_length, D] for prompts, on the encoder's device and dtype."""
        return self(self.tokenize(prompts).to(self.device))


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+", prompt.lower())
