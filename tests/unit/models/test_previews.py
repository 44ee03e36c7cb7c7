"""x0 pictures: the published latent→RGB factors that big models' previews use instead of a VAE decode (4×3 for SD
1.x/2.x and SDXL, 16×3 for SD3 and FLUX.1).

The tiny test VAEs are small enough that `decode_previews` always runs them; these tests lower the threshold so the
factor branch runs on each family's latents, and check it against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from negprompt_demo.models import previews
from negprompt_demo.models.previews import LATENT_RGB_FACTORS, decode_previews, uses_vae_for_previews


@pytest.fixture
def factor_previews(monkeypatch):
    monkeypatch.setattr(previews, "SMALL_VAE_PARAMETERS", 0)  # every decoder counts as big


@pytest.mark.parametrize(
    "family, pipe_name, channels",
    [("sd", "sd_pipe", 4), ("sdxl", "sdxl_pipe", 4), ("sd3", "sd3_pipe", 16), ("flux", "flux_pipe", 16)],
)
def test_big_model_previews_use_the_latent_rgb_factors(factor_previews, request, family, pipe_name, channels):
    pipe = request.getfixturevalue(pipe_name)
    assert pipe.vae.config.latent_channels == channels and not uses_vae_for_previews(pipe)
    latents = torch.randn((3, channels, 6, 5), generator=torch.Generator().manual_seed(0)) * 1.5
    decoded = []
    handle = pipe.vae.decoder.register_forward_pre_hook(lambda module, args: decoded.append(1))
    try:
        pictures = decode_previews(pipe, latents.half())
    finally:
        handle.remove()
    assert not decoded, "the factor branch must not run the VAE"
    assert pictures.shape == (3, 6, 5, 3) and pictures.dtype == np.uint8  # latent resolution, no upscaling

    factors, bias = LATENT_RGB_FACTORS[family]
    n, y, x = 2, 4, 1
    pixel = latents.half().float()[n, :, y, x].double().numpy()  # the same half-precision input, by hand
    expected = []
    for channel in range(3):
        value = sum(pixel[c] * factors[c][channel] for c in range(channels)) + bias[channel]
        expected.append(round(min(max((value + 1) / 2, 0.0), 1.0) * 255))
    assert np.abs(pictures[n, y, x].astype(int) - np.array(expected)).max() <= 1
    assert 0 < pictures.mean() < 255 and len(np.unique(pictures)) > 10  # not a clamped blank


def test_factor_branch_clamps_and_maps_nan_to_black(factor_previews, sd_pipe):
    latents = torch.zeros((1, 4, 2, 2))
    latents[0, :, 0, 0] = 1e4  # far out of range in every channel
    latents[0, 0, 1, 1] = float("nan")
    pictures = decode_previews(sd_pipe, latents)
    assert pictures.dtype == np.uint8 and pictures.min() >= 0 and pictures.max() <= 255
    assert pictures[0, 1, 1].tolist() == [0, 0, 0]
    assert pictures[0, 0, 1].tolist() == [128, 128, 128]  # zero latents are mid grey (SD has no bias)


def test_a_small_flow_matching_vae_decodes_with_its_shift(flux_pipe):
    """SD3's and FLUX.1's VAEs take latents / scale + shift; the small tiny VAE is decoded for real."""
    assert uses_vae_for_previews(flux_pipe)
    latents = torch.randn((2, 16, 8, 8), generator=torch.Generator().manual_seed(1))
    vae = flux_pipe.vae
    with torch.no_grad():
        expected = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
    expected = ((expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round()
    pictures = decode_previews(flux_pipe, latents)
    assert pictures.shape == (2, 16, 16, 3)
    assert np.abs(pictures.astype(float) - expected).max() <= 6  # bf16 autocast on CPUs that have it: ≤ 5/255
