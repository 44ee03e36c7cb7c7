"""Tiny random-weight SD-1.x, SDXL, SD3 and FLUX.1 pipelines built from configs in code (as diffusers' own tests
build theirs): the real pipeline classes and code paths, no network, a fraction of a second per call.

diffusers' tests load their T5 tokenizer from the Hub (hf-internal-testing/tiny-random-t5); offline, `tiny_t5_tokenizer`
builds one in code instead: transformers' T5Tokenizer over a character-level Unigram vocabulary (no sentencepiece
model needed), with T5's special tokens and its end-of-sequence post-processing."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

TEXT_HIDDEN = 32

# What the SD3 and FLUX.1 tests run: the article's case, and each family's usual guidance scale (FLUX.1 with true CFG).
PROMPT, NEGATIVE = "portrait photo of a man", "mustache"
SD3_GUIDANCE, TRUE_CFG = 4.5, 4.0


def byte_characters() -> list[str]:
    """The 256 printable stand-ins byte-level BPE (GPT-2/CLIP) uses for the bytes 0..255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    extra = 0
    codes = {}
    for byte in range(256):
        if byte in printable:
            codes[byte] = byte
        else:
            codes[byte] = 256 + extra
            extra += 1
    return [chr(codes[byte]) for byte in range(256)]


def tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (no merges): every letter is a token, so 77 tokens is ~75 letters,
    which makes truncation easy to trigger in tests."""
    folder.mkdir(parents=True, exist_ok=True)
    characters = byte_characters()
    tokens = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)


def _text_config(vocab_size: int, projection_dim: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection_dim or TEXT_HIDDEN,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _vae(latent_channels: int = 4, **flow_matching) -> AutoencoderKL:
    """KL VAE with factor 2; SD3/FLUX.1 take 16 latent channels and a `shift_factor` (`flow_matching` kwargs)."""
    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=32,
        **flow_matching,
    )


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A character-level T5 tokenizer: "▁" starts each word, then one token per letter, "</s>" at the end."""
    characters = string.ascii_lowercase + string.digits + ".,!?'-"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in characters]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _t5_encoder(vocab_size: int, d_model: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,  # a model built in code is in training mode: T5's default dropout would draw noise
        is_encoder_decoder=False,
        use_cache=False,
    )
    return T5EncoderModel(config).eval()


def _flow_vae() -> AutoencoderKL:
    """SD3/FLUX.1-style VAE: 16 latent channels, no quant convs, scaled and shifted latents (SD3's factors)."""
    return _vae(16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305)


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def tiny_sd_pipeline(folder: Path) -> StableDiffusionPipeline:
    """SD-1.x architecture: CLIPTextModel, UNet with cross-attention, KL VAE (factor 2), 32 px images."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(folder / "tokenizer")
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(folder: Path) -> StableDiffusionXLPipeline:
    """SDXL architecture: two text encoders (the second with projection), text_time added conditioning."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(folder / "tokenizer")
    tokenizer_2 = tiny_tokenizer(folder / "tokenizer_2")
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(len(tokenizer), projection_dim=TEXT_HIDDEN))
    addition_time_embed_dim = 8
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * addition_time_embed_dim + TEXT_HIDDEN,
        cross_attention_dim=2 * TEXT_HIDDEN,
        norm_num_groups=8,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd3_pipeline(folder: Path) -> StableDiffusion3Pipeline:
    """SD3 architecture: two CLIP encoders with projection and a T5 encoder, an MMDiT transformer over 2×2 patches
    of 16-channel latents, flow matching; 32 px images."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(folder / "tokenizer")
    tokenizer_2 = tiny_tokenizer(folder / "tokenizer_2")
    tokenizer_3 = tiny_t5_tokenizer()
    text_encoder = CLIPTextModelWithProjection(_text_config(len(tokenizer)))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(len(tokenizer)))
    text_encoder_3 = _t5_encoder(len(tokenizer_3), d_model=2 * TEXT_HIDDEN)  # CLIP's two outputs are padded to it
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=2 * TEXT_HIDDEN,
        pooled_projection_dim=2 * TEXT_HIDDEN,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3's scheduler config
        vae=_flow_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_pipeline(folder: Path) -> FluxPipeline:
    """FLUX.1-dev architecture: CLIP (pooled) and T5 encoders, a guidance-embedding transformer over packed 2×2
    patches of 16-channel latents (64 channels), flow matching with dynamic shifting; 32 px images."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(folder / "tokenizer")
    tokenizer_2 = tiny_t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_HIDDEN,
        pooled_projection_dim=TEXT_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=[4, 4, 8],
    )
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),  # FLUX.1-dev's config
        vae=_flow_vae(),
        text_encoder=CLIPTextModel(_text_config(len(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(len(tokenizer_2), d_model=TEXT_HIDDEN),
        tokenizer_2=tokenizer_2,
    )
    # FluxPipeline's default size is 128 latent pixels (1024 px) whatever the model; a tiny model's is 16 (32 px).
    pipe.default_sample_size = 16
    pipe.set_progress_bar_config(disable=True)
    return pipe
