"""SD3 and FLUX.1: each run equals a plain diffusers call, the denoiser calls per step, the flow-matching trace, the
negative's window and strength on FLUX.1's two calls per step, and the warnings these families need. All on tiny
random-weight pipelines built from configs in code (tests/support/tiny_models.py); real weights never run here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from negprompt_demo.models.families import FLUX_DISTILLED_GUIDANCE, family_of
from negprompt_demo.models.loading import model_defaults
from negprompt_demo.models.previews import fill_previews
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings
from negprompt_demo.syntax.prompt_editing import window_steps
from tests.support.tiny_models import NEGATIVE, PROMPT, SD3_GUIDANCE, TRUE_CFG

SEED, STEPS = 7, 4
# A plain diffusers call's guidance arguments for what compare() runs with the guidance setting of each family.
PLAIN_GUIDANCE = {
    "sd3_pipe": {"guidance_scale": SD3_GUIDANCE},
    "flux_pipe": {"true_cfg_scale": TRUE_CFG, "guidance_scale": FLUX_DISTILLED_GUIDANCE},
}


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def plain_call(pipe, output_type="np", **kwargs) -> np.ndarray:
    """What a user gets from diffusers directly (kwargs: negative_prompt, guidance_scale, true_cfg_scale)."""
    images = pipe(
        prompt=PROMPT,
        generator=torch.Generator().manual_seed(SEED),
        num_inference_steps=STEPS,
        width=32,
        height=32,
        output_type=output_type,
        **kwargs,
    ).images
    return images if output_type == "latent" else (images[0] * 255).round().astype(np.int16)


def settings(guidance: float, **changes) -> CompareSettings:
    return CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=guidance).replace(**changes)


def call_sizes(denoiser, monkeypatch) -> list[int]:
    """The batch size of every denoiser call from now on (a transformer takes its latents as `hidden_states`)."""
    sizes: list[int] = []
    original = denoiser.forward

    def counting(*args, **kwargs):
        sizes.append(kwargs["hidden_states"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(denoiser, "forward", counting)
    return sizes


def test_families_sizes_and_defaults(sd3_pipe, flux_pipe):
    assert family_of(sd3_pipe).key == "sd3" and family_of(flux_pipe).key == "flux"
    assert family_of(sd3_pipe).native_size(sd3_pipe) == 32 and family_of(flux_pipe).native_size(flux_pipe) == 32
    assert model_defaults(sd3_pipe) == {
        "steps": 40,
        "guidance": 4.5,
        "scheduler": "Euler",
        "nag_scale": 5.0,
        "nag_tau": 2.5,
        "nag_alpha": 0.125,
    }
    assert model_defaults(flux_pipe)["steps"] == 28  # FLUX.1-dev; schnell (no guidance embedding) would get 4


def test_sd3_runs_equal_plain_calls(sd3_pipe):
    result = compare(sd3_pipe, settings(SD3_GUIDANCE))
    without = plain_call(sd3_pipe, guidance_scale=SD3_GUIDANCE)  # no negative prompt: SD3 encodes ""
    assert np.abs(pixels(result.without_negative) - without).max() <= 2
    with_negative = plain_call(sd3_pipe, negative_prompt=NEGATIVE, guidance_scale=SD3_GUIDANCE)
    assert np.abs(pixels(result.with_negative) - with_negative).max() <= 2
    assert np.abs(pixels(result.with_negative) - pixels(result.without_negative)).max() > 10, "runs must differ"
    assert result.distilled is None and not result.warnings


def test_flux_runs_equal_plain_calls_and_the_distilled_run_is_the_third(flux_pipe):
    result = compare(flux_pipe, settings(TRUE_CFG))
    true_cfg = PLAIN_GUIDANCE["flux_pipe"]
    # "without": true CFG with the empty negative, so that only the negative differs
    without = plain_call(flux_pipe, negative_prompt="", **true_cfg)
    assert np.abs(pixels(result.without_negative) - without).max() <= 2
    with_negative = plain_call(flux_pipe, negative_prompt=NEGATIVE, **true_cfg)
    assert np.abs(pixels(result.with_negative) - with_negative).max() <= 2
    # the third image: FLUX.1 as it samples by default, no true CFG (the negative prompt would be ignored)
    distilled = plain_call(flux_pipe, guidance_scale=FLUX_DISTILLED_GUIDANCE)
    assert np.abs(pixels(result.distilled) - distilled).max() <= 2
    assert np.abs(pixels(result.with_negative) - pixels(result.without_negative)).max() > 10, "runs must differ"
    assert np.abs(pixels(result.distilled) - pixels(result.without_negative)).max() > 10, "and differ from it"


def test_one_batched_call_per_step_sd3_and_two_for_flux_true_cfg(sd3_pipe, flux_pipe, monkeypatch):
    sizes = call_sizes(sd3_pipe.transformer, monkeypatch)
    compare(sd3_pipe, settings(SD3_GUIDANCE), trace=False)
    assert sizes == [4] * STEPS  # [neg without, neg with, text without, text with]
    sizes = call_sizes(flux_pipe.transformer, monkeypatch)
    compare(flux_pipe, settings(TRUE_CFG), trace=False)
    # per step: the text call (without, with, distilled), then the negative call (without, with)
    assert sizes == [3, 2] * STEPS


def test_flux_without_true_cfg_says_the_negative_is_ignored(flux_pipe, monkeypatch):
    sizes = call_sizes(flux_pipe.transformer, monkeypatch)
    result = compare(flux_pipe, settings(1.0))
    assert sizes == [2] * STEPS  # one call per step: no negative branch at all
    ignored = "FLUX.1 is guidance-distilled: it ignores a negative prompt unless true CFG is on"
    assert any(warning.startswith(ignored) for warning in result.warnings)
    assert np.array_equal(pixels(result.with_negative), pixels(result.without_negative))
    assert result.distilled is None and result.trace.cfg_active is False
    distilled = plain_call(flux_pipe, guidance_scale=FLUX_DISTILLED_GUIDANCE)  # what FLUX.1 gives by default
    assert np.abs(pixels(result.with_negative) - distilled).max() <= 2


def test_a_ddpm_scheduler_choice_is_replaced_by_the_models_own(sd3_pipe):
    result = compare(sd3_pipe, settings(SD3_GUIDANCE, scheduler="DPM++ 2M Karras"))
    assert result.settings.scheduler == "Euler"
    assert any("does not apply to it" in warning for warning in result.warnings)
    assert isinstance(sd3_pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    euler = compare(sd3_pipe, settings(SD3_GUIDANCE))
    assert np.array_equal(pixels(result.with_negative), pixels(euler.with_negative))


def test_t5_limit_names_the_cut_words(sd3_pipe):
    """SD3's T5 reads 256 tokens (255 and its end token); the tiny tokenizer has one token per letter."""
    prompt = "a" * 254 + " zebra"  # "▁" + 254 letters fill 255 tokens; " zebra" is cut
    result = compare(sd3_pipe, settings(SD3_GUIDANCE, prompt=prompt, steps=1), trace=False)
    cut = [warning for warning in result.warnings if "were cut" in warning and "for T5" in warning]
    assert len(cut) == 1 and "reads only 255" in cut[0] and cut[0].endswith('the sequence: "zebra".')


@pytest.mark.parametrize("pipe_name, guidance", [("sd3_pipe", SD3_GUIDANCE), ("flux_pipe", TRUE_CFG)])
def test_flow_matching_trace(request, pipe_name, guidance):
    pipe = request.getfixturevalue(pipe_name)
    result = compare(pipe, settings(guidance, push_map=True))
    trace = result.trace
    assert trace.prediction_type == "flow" and trace.cfg_active and len(trace.steps) == STEPS
    sigmas = [step.sigma for step in trace.steps]
    assert sigmas[0] == pytest.approx(1.0) and all(0 < b < a for a, b in zip(sigmas, sigmas[1:]))
    for step in trace.steps:
        assert step.timestep == pytest.approx(1000 * step.sigma, rel=1e-4)  # FlowMatchEuler: t = σ·1000
        # both runs, and the with-run's prompt, empty and negative branches alone; FLUX.1's packed patches unpacked
        assert step.x0_latents.shape == (2, 16, 16, 16) and step.branch_x0_latents.shape == (3, 16, 16, 16)
        assert step.guidance_map.shape == (2, 16, 16) and step.push_map.shape == (16, 16)
        values = [*step.guidance_mean, step.guidance_cosine, step.divergence, step.push_mean]
        assert all(np.isfinite(values)) and step.push_mean > 0
        # x0 = x_t − σ·v is affine in v: the with-run's x0 is its negative branch's + s × (prompt's − negative's)
        x0 = step.x0_latents.float()
        prompt, empty, negative = step.branch_x0_latents.float()  # BRANCHES
        rounding = 2 * guidance * 2**-10 * x0.abs().max()
        torch.testing.assert_close(x0[1], negative + guidance * (prompt - negative), rtol=0, atol=rounding)
        assert (negative - empty).abs().max() > 0  # the negative branch is not the empty prompt's (tiny models: close)
    # Euler's last step lands on the x0 it predicts (x0 = x_t − σ·v), which checks the formula end to end
    final = plain_call(pipe, output_type="latent", negative_prompt=NEGATIVE, **PLAIN_GUIDANCE[pipe_name])
    if pipe_name == "flux_pipe":
        final = pipe._unpack_latents(final, 32, 32, pipe.vae_scale_factor)
    torch.testing.assert_close(trace.steps[-1].x0_latents[1:2].float(), final, rtol=2e-2, atol=2e-2)
    fill_previews(pipe, trace.steps)
    assert trace.steps[-1].previews.shape == (2, 32, 32, 3) and trace.steps[-1].branch_previews.shape == (3, 32, 32, 3)


@torch.no_grad()
def flux_reference(pipe, start: float, end: float, strength: float, negative: str | None) -> np.ndarray:
    """FLUX.1's true-CFG with-run written out by hand, three transformer calls per step (ε_∅, ε_text, ε_n):
    ε = ε_∅ + g·(ε_text − ε_∅) − m·(g − 1)·(ε_n − ε_∅) inside the window, ε_∅ + g·(ε_text − ε_∅) outside."""
    latents, image_ids = pipe.prepare_latents(1, 16, 32, 32, torch.float32, "cpu", torch.Generator().manual_seed(SEED))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    config = scheduler.config
    mu = calculate_shift(latents.shape[1], config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                         config.max_shift)  # fmt: skip
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=mu)
    conditions = {text: pipe.encode_prompt(text, None) for text in {PROMPT, "", negative or ""}}
    guidance = torch.full([1], FLUX_DISTILLED_GUIDANCE)

    def velocity(text: str, t) -> torch.Tensor:
        embeds, pooled, text_ids = conditions[text]
        return pipe.transformer(hidden_states=latents, timestep=t.expand(1) / 1000, guidance=guidance,
                                pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                                img_ids=image_ids).sample  # fmt: skip

    first, last = window_steps(start, end, STEPS)
    for index, t in enumerate(scheduler.timesteps):
        empty, text = velocity("", t), velocity(PROMPT, t)
        guided = empty + TRUE_CFG * (text - empty)
        if negative is not None and first <= index < last:
            guided = guided - strength * (TRUE_CFG - 1) * (velocity(negative, t) - empty)
        latents = scheduler.step(guided, t, latents).prev_sample
    latents = pipe._unpack_latents(latents, 32, 32, pipe.vae_scale_factor)
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return (image * 255).round().astype(np.int16)


def test_flux_late_negative_shares_its_early_steps(flux_pipe, monkeypatch):
    """On FLUX.1's two calls per step: before the window the with-run is not sent at all (shared steps), then
    ε_∅ goes with the negative call; strength 0 is the without-run exactly."""
    sizes = call_sizes(flux_pipe.transformer, monkeypatch)
    compare(flux_pipe, settings(TRUE_CFG, negative_start=0.5, negative_strength=2.0), trace=False)
    # [neg:0.5] of 4 steps acts at k = 3 (A1111): text (without, distilled) / negative (without); then all, + ε_∅
    assert sizes == [2, 1] * 3 + [3, 3]
    off = compare(flux_pipe, settings(TRUE_CFG, negative_strength=0.0), trace=False)
    assert np.array_equal(pixels(off.with_negative), pixels(off.without_negative))


@pytest.mark.slow  # five hand-written sampling loops
def test_flux_window_and_strength_equal_the_hand_written_loop(flux_pipe):
    result = compare(flux_pipe, settings(TRUE_CFG, negative_start=0.5, negative_strength=2.0), trace=False)
    reference = flux_reference(flux_pipe, 0.5, 1.0, 2.0, NEGATIVE)
    assert np.abs(pixels(result.with_negative) - reference).max() <= 2
    assert np.abs(pixels(result.without_negative) - flux_reference(flux_pipe, 0, 1, 1, None)).max() <= 2
    assert np.abs(reference - flux_reference(flux_pipe, 0, 1, 1, NEGATIVE)).max() >= 1, "the setting is seen"
    early = compare(flux_pipe, settings(TRUE_CFG, negative_end=0.5), trace=False)
    perp = compare(flux_pipe, settings(TRUE_CFG, negative_end=0.5, perp_neg=True), trace=False)
    assert np.abs(pixels(perp.with_negative) - pixels(early.with_negative)).max() > 2  # Perp-Neg acts there too


def test_hooks_are_removed_from_the_transformers(sd3_pipe, flux_pipe):
    compare(sd3_pipe, settings(SD3_GUIDANCE, steps=1))
    compare(flux_pipe, settings(TRUE_CFG, steps=1))
    for transformer in (sd3_pipe.transformer, flux_pipe.transformer):
        assert not transformer._forward_hooks and not transformer._forward_pre_hooks


def test_flux_outputs_carry_the_distilled_image(flux_pipe, tmp_path):
    from PIL import Image

    from negprompt_demo.views.export import write_outputs

    result = compare(flux_pipe, settings(TRUE_CFG, steps=2))
    fill_previews(flux_pipe, result.trace.steps)  # the step animation draws x0 pictures
    paths = write_outputs(result, tmp_path)
    assert paths["distilled"].name == "distilled_no_true_cfg.png"
    saved = Image.open(paths["distilled"])
    assert np.array_equal(pixels(saved.convert("RGB")), pixels(result.distilled))
    assert "True CFG: off" in saved.info["parameters"]
    three = Image.open(paths["side_by_side"])
    off = compare(flux_pipe, settings(1.0, steps=2), trace=False)
    two = Image.open(write_outputs(off, tmp_path / "off")["side_by_side"])
    assert three.width > two.width * 1.4  # a third panel, not only a wider label


@pytest.mark.slow  # three FLUX.1 calls
def test_flux_sweep_equals_each_start_on_its_own(flux_pipe):
    from negprompt_demo.sampling.engine import prepare
    from negprompt_demo.sampling.sweep import sweep_starts

    prepared = prepare(flux_pipe, settings(TRUE_CFG))
    resolved = prepared.settings
    sweep = sweep_starts(flux_pipe, prepared, (0.0, 0.5))
    assert sweep.start_steps == [0, 3]
    for start, image in zip((0.0, 0.5), sweep.with_negative):
        single = compare(flux_pipe, resolved.replace(negative_start=start), trace=False)
        assert np.abs(pixels(image) - pixels(single.with_negative)).max() <= 2
    assert np.abs(pixels(sweep.without_negative) - pixels(single.without_negative)).max() <= 2


def test_the_model_note_says_what_the_guidance_scale_is_on_flux(sd3_pipe, flux_pipe):
    from negprompt_demo.page.handlers import model_widgets
    from negprompt_demo.runner import model_info_of

    assert "ignores a negative prompt unless true CFG is on" in model_widgets(model_info_of(flux_pipe))["model_info"]
    assert "scheduler setting does not apply" in model_widgets(model_info_of(sd3_pipe))["model_info"]


def test_split_calls_refuse_a_third_call_in_one_step():
    """FLUX.1's hook tells its two calls apart by order; a loop that calls a third time must fail loudly, not
    silently take the third answer for a negative branch."""
    from negprompt_demo.sampling.guidance import NO_NEGATIVE, BranchHook

    class Denoiser(torch.nn.Module):
        def forward(self, hidden_states, timestep):
            return (hidden_states * 2,)

    denoiser, latents = Denoiser(), torch.ones(2, 4, 8)
    with BranchHook(denoiser, [NO_NEGATIVE, NO_NEGATIVE], [0, 1], capture=True, split_calls=True) as hook:
        denoiser(hidden_states=latents, timestep=torch.ones(2))  # text branch
        denoiser(hidden_states=latents, timestep=torch.ones(2))  # negative branch
        assert hook.captured.text.shape == (2, 4, 8)
        with pytest.raises(RuntimeError, match="more than twice in one step"):
            denoiser(hidden_states=latents, timestep=torch.ones(2))
        hook.step_done()
        denoiser(hidden_states=latents, timestep=torch.ones(2))  # the next step starts with its text call again
