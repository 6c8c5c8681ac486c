"""Tiny random-weight SDXL and Hunyuan-DiT pipelines, built from configs without any download.

They run every code path of the real backends (same pipeline classes, same text-encoder classes,
same schedulers) in seconds on a CPU, for tests and smoke runs ("tiny-sdxl", "tiny-hunyuan-dit"
in `load_backend`). Components are seeded the way diffusers' own `get_dummy_components` do.
Tokenizers are built offline: a character-level tokenizer (every prompt maps to distinct ids)
stands in for CLIP's, BERT's and T5's, which would need downloaded vocabularies.
"""

from __future__ import annotations

import string
from typing import Any

import torch

from noisear_rl.pipelines.hunyuan import HunyuanDiTBackend
from noisear_rl.pipelines.sdxl import SDXLBackend

TINY_NUM_INFERENCE_STEPS = 4
_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3: bos, pad, eos, unk


def build_char_tokenizer(model_max_length: int) -> Any:
    """A character-level fast tokenizer (lower-cased) with bos/eos, padding and truncation.

    Ids: 0 bos, 1 pad, 2 eos, 3 unk, then one id per printable character.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    characters = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = {token: index for index, token in enumerate((*_SPECIAL_TOKENS, *characters))}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def build_tiny_sdxl_pipeline(seed: int = 0) -> Any:
    """A `StableDiffusionXLPipeline` with random weights: latents 4x8x8, images 16x16, cond 77x64."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_char_tokenizer(model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
    )
    # SDXL-base's own training schedule (the backend swaps in DPMSolver from this config).
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=16,
    )
    text_config = dict(
        bos_token_id=0,
        eos_token_id=2,  # legacy pooling: the position of the largest id, as in diffusers' tests
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=32,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config))
    return StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
    )


def build_tiny_hunyuan_pipeline(seed: int = 0) -> Any:
    """A `HunyuanDiTPipeline` with random weights: latents 4x8x8, images 64x64, cond 77x32."""
    from diffusers import AutoencoderKL, DDPMScheduler, HunyuanDiT2DModel, HunyuanDiTPipeline
    from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

    tokenizer = build_char_tokenizer(model_max_length=77)
    tokenizer_2 = build_char_tokenizer(model_max_length=256)
    torch.manual_seed(seed)
    transformer = HunyuanDiT2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        in_channels=4,
        cross_attention_dim=32,
        cross_attention_dim_t5=32,
        pooled_projection_dim=16,
        hidden_size=24,
        activation_fn="gelu-approximate",
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(  # four blocks: the 8x downsampling HunyuanDiTPipeline assumes
        block_out_channels=[8, 8, 16, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    # A scaled-linear, v-prediction schedule like Hunyuan-DiT's (exercises the v -> epsilon path).
    scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.03, beta_schedule="scaled_linear", prediction_type="v_prediction", steps_offset=1
    )
    torch.manual_seed(seed)
    text_encoder = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=77,
            pad_token_id=1,
        ),
        add_pooling_layer=False,
    )
    torch.manual_seed(seed)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=1,
            eos_token_id=2,
        )
    )
    return HunyuanDiTPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
    )


def tiny_sdxl_backend(seed: int = 0, model: str | None = None, **kwargs: Any) -> SDXLBackend:
    """`SDXLBackend` over `build_tiny_sdxl_pipeline(seed)`; 4 steps unless told otherwise."""
    _reject_model(model)
    kwargs.setdefault("num_inference_steps", TINY_NUM_INFERENCE_STEPS)
    return SDXLBackend(pipe=build_tiny_sdxl_pipeline(seed), **kwargs)


def tiny_hunyuan_backend(seed: int = 0, model: str | None = None, **kwargs: Any) -> HunyuanDiTBackend:
    """`HunyuanDiTBackend` over `build_tiny_hunyuan_pipeline(seed)`; 4 steps unless told otherwise."""
    _reject_model(model)
    kwargs.setdefault("num_inference_steps", TINY_NUM_INFERENCE_STEPS)
    return HunyuanDiTBackend(pipe=build_tiny_hunyuan_pipeline(seed), **kwargs)


def _reject_model(model: str | None) -> None:
    if model is not None:
        raise ValueError(f"tiny backends are built from configs and take no weights, got model={model!r}")
