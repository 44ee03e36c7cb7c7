"""Perp-Neg against ComfyUI's `perp_neg` (comfy_extras/nodes_perpneg.py, restated here from its documented
behaviour): our strength m at guidance g is ComfyUI's neg_scale m·(g − 1)/g, and our projection is per image
(the authors' code) where ComfyUI's is over the whole batch; the run's note says both."""

from __future__ import annotations

import pytest
import torch

from negprompt_demo.sampling.diagnostics import comfyui_neg_scale, negative_diagnostics
from negprompt_demo.sampling.guidance import NO_NEGATIVE, BranchHook, NegativePlan
from negprompt_demo.settings import CompareSettings

SIGMA = 3.0  # ComfyUI guides denoised images x0 = x − σ·ε; the test works there


class Denoiser(torch.nn.Module):
    """A stand-in for the UNet: a fixed nonlinear function of each item's latents and its conditioning vector."""

    def forward(self, sample, timestep, encoder_hidden_states):
        condition = encoder_hidden_states[:, :, None, None]
        return (torch.sin(sample * condition) + condition.square(),)


def comfyui_perp_neg(x0_pos, x0_neg, x0_empty, neg_scale: float, cond_scale: float) -> torch.Tensor:
    """ComfyUI's `perp_neg`: pos = x0_pos − x0_∅, neg = x0_neg − x0_∅; perp = neg minus its projection on pos,
    summed over EVERY element of the batch; result x0_∅ + cond_scale·(pos − neg_scale·perp)."""
    pos, neg = x0_pos - x0_empty, x0_neg - x0_empty
    perp = neg - (neg * pos).sum() / pos.norm() ** 2 * pos
    return x0_empty + cond_scale * (pos - neg_scale * perp)


def guided_by_the_hook(strength: float, guidance: float, seeds: int = 1) -> tuple[torch.Tensor, dict]:
    """Our guided ε of the with-run(s): one call of the stand-in denoiser through the guidance hook, batched as
    the pipeline batches it ([negative branch of every run, text branch of every run]); and each condition's ε on
    the with-runs' latents, asked of the denoiser directly."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2 * seeds, 4, 8, 8, generator=generator)  # per seed: without-run, with-run
    empty, negative, text = torch.randn(3, 4, generator=generator)
    plans, source = [], []
    for seed in range(seeds):
        plans += [NO_NEGATIVE, NegativePlan(0, 10, strength, perp_neg=True)]
        source += [2 * seed, 2 * seed]
    negatives = torch.stack([empty, negative] * seeds)
    conditions = torch.cat([negatives, text.expand(2 * seeds, 4)])
    denoiser = Denoiser()
    with BranchHook(denoiser, plans, source):
        (answer,) = denoiser(torch.cat([latents, latents]), 500, encoder_hidden_states=conditions)
    runs = list(range(1, 2 * seeds, 2))
    guided = answer[runs] + guidance * (answer[[2 * seeds + run for run in runs]] - answer[runs])
    with_latents = latents[runs]

    def eps(condition):
        return denoiser(with_latents, 500, encoder_hidden_states=condition.expand(len(runs), 4))[0]

    return guided, {"x": with_latents, "pos": eps(text), "neg": eps(negative), "empty": eps(empty)}


@pytest.mark.parametrize(("strength", "guidance"), [(1.0, 7.5), (2.0, 7.5), (0.5, 4.0), (1.0, 1.5)])
def test_strength_m_equals_comfyuis_neg_scale_m_g_minus_1_over_g(strength, guidance):
    """On a batch of one image our guided prediction, in ComfyUI's denoised terms (x0 = x − σ·ε), equals
    ComfyUI's perp_neg with neg_scale m·(g − 1)/g and cond_scale g; with neg_scale m it does not."""
    guided, eps = guided_by_the_hook(strength, guidance)
    x0 = {name: eps["x"] - SIGMA * value for name, value in eps.items() if name != "x"}
    ours = eps["x"] - SIGMA * guided
    neg_scale = comfyui_neg_scale(strength, guidance)
    assert neg_scale == pytest.approx(strength * (guidance - 1) / guidance)
    expected = comfyui_perp_neg(x0["pos"], x0["neg"], x0["empty"], neg_scale, guidance)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    naive = comfyui_perp_neg(x0["pos"], x0["neg"], x0["empty"], strength, guidance)
    assert (ours - naive).abs().max() > 1e-3  # the scales differ by the factor (g − 1)/g


def test_the_projection_is_per_image_not_over_the_batch():
    """Two seeds in one batch: each image's push is projected on its own prompt direction (the authors' code),
    so each equals ComfyUI's perp_neg run on that image alone, and not ComfyUI's on the two-image batch."""
    guided, eps = guided_by_the_hook(1.0, 7.5, seeds=2)
    x0 = {name: eps["x"] - SIGMA * value for name, value in eps.items() if name != "x"}
    ours = eps["x"] - SIGMA * guided
    scale = comfyui_neg_scale(1.0, 7.5)
    for image in range(2):
        alone = comfyui_perp_neg(*(x0[n][image : image + 1] for n in ("pos", "neg", "empty")), scale, 7.5)
        torch.testing.assert_close(ours[image : image + 1], alone, rtol=1e-5, atol=1e-5)
    batch_wide = comfyui_perp_neg(x0["pos"], x0["neg"], x0["empty"], scale, 7.5)
    assert (ours - batch_wide).abs().max() > 1e-3


def test_the_run_says_the_comfyui_scale_and_the_projection(sd_pipe):
    settings = CompareSettings("a man", "hat", seed=1, steps=2, guidance=7.5, perp_neg=True)
    note = next(note for note in negative_diagnostics(sd_pipe, settings) if "Perp-Neg" in note)
    assert "neg_scale 0.867" in note and "per image" in note and "whole batch" in note
    stronger = negative_diagnostics(sd_pipe, settings.replace(negative_strength=2.0, guidance=5.0))
    assert any("strength 2 is ComfyUI's PerpNegGuider neg_scale 1.6 " in note for note in stronger)
    assert not any("Perp-Neg" in note for note in negative_diagnostics(sd_pipe, settings.replace(perp_neg=False)))
