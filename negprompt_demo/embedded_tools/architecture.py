"""The embedded model's architecture: a tiny Stable Diffusion 1.x (its VAE, UNet and CLIP text encoder, and SD 1.x's
noise schedule), built empty here; `train.py` trains these and writes them as a diffusers folder.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

# Stable Diffusion 1.x noise schedule, so the usual schedulers behave as they do on hub models.
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


def build_vae() -> AutoencoderKL:
    """64x64x3 <-> 16x16x4; small decoder because the app decodes a preview at every step."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        mid_block_add_attention=False,
    )


def build_unet() -> UNet2DConditionModel:
    """SD's UNet layout shrunk: cross-attention at 16x16 and 8x8, plain resnets at 4x4."""
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=4,
        norm_num_groups=32,
    )


def build_text_encoder(token_embedding_std: float | None = None) -> CLIPTextModel:
    """CLIP's text transformer with the full 49,408-token vocabulary, 3 layers of width 64.

    `token_embedding_std` re-initialises the token embeddings (training does; see TrainConfig).
    """
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=256,
        projection_dim=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        pad_token_id=49407,
        bos_token_id=49406,
        eos_token_id=49407,
    )
    model = CLIPTextModel(config)
    if token_embedding_std is not None:
        torch.nn.init.normal_(model.get_input_embeddings().weight, std=token_embedding_std)
    return model
