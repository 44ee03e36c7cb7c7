"""The per-step trace: shapes, values checked against a hand-made UNet call, x0, hooks, no effect on images."""

from __future__ import annotations

import copy
import json
import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from negprompt_demo.models.previews import decode_previews, fill_previews
from negprompt_demo.sampling.engine import compare
from negprompt_demo.sampling.trace import GuidanceTracer
from negprompt_demo.settings import CompareSettings

PROMPT, NEGATIVE, SEED, STEPS = "portrait photo of a man", "mustache", 7, 6


@pytest.fixture(scope="module")
def traced(sd_pipe):
    result = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, push_map=True))
    assert all(step.previews is None for step in result.trace.steps)  # pictures are drawn on demand
    fill_previews(sd_pipe, result.trace.steps)
    return result


def test_trace_shapes(traced):
    trace = traced.trace
    assert len(trace.steps) == STEPS and trace.cfg_active
    for index, step in enumerate(trace.steps):
        assert step.index == index
        assert step.guidance_map.shape == (2, 16, 16) and step.guidance_map.dtype == torch.float16
        assert step.x0_latents.shape == (2, 4, 16, 16)  # both runs
        assert step.branch_x0_latents.shape == (3, 4, 16, 16)  # the with-run's three branches alone
        assert step.push_map.shape == (16, 16)
        assert step.previews.shape == (2, 32, 32, 3) and step.previews.dtype == np.uint8
        assert step.branch_previews.shape == (3, 32, 32, 3) and step.branch_previews.dtype == np.uint8
        assert step.guidance_mean[0] == pytest.approx(step.guidance_map[0].float().mean().item(), rel=1e-2)
        assert -1 <= step.guidance_cosine <= 1
    timesteps = [step.timestep for step in trace.steps]
    assert timesteps == sorted(timesteps, reverse=True)
    sigmas = [step.sigma for step in trace.steps]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] > 1


def test_guidance_map_matches_a_hand_made_unet_call(sd_pipe, traced):
    """Step 1 recomputed by hand: same starting noise, text embeddings for each branch, one UNet call each."""
    pipe = sd_pipe
    scheduler = pipe.scheduler  # compare() installed Euler for this run; rebuild its first-step state
    scheduler.set_timesteps(STEPS)
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(SEED)) * scheduler.init_noise_sigma
    t = scheduler.timesteps[0]
    model_input = scheduler.scale_model_input(latents, t)

    def eps(text: str) -> torch.Tensor:
        embeds = pipe.encode_prompt(text, "cpu", 1, False)[0]
        with torch.no_grad():
            return pipe.unet(model_input, t, encoder_hidden_states=embeds).sample[0]

    text, empty, negative = eps(PROMPT), eps(""), eps(NEGATIVE)
    step = traced.trace.steps[0]
    expected_without = (text - empty).norm(dim=0)
    expected_with = (text - negative).norm(dim=0)
    torch.testing.assert_close(step.guidance_map[0].float(), expected_without, rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(step.guidance_map[1].float(), expected_with, rtol=2e-2, atol=1e-3)
    # at step 1 both runs sit on the same latents, so the push map is ‖ε_empty − ε_neg‖ there
    torch.testing.assert_close(step.push_map.float(), (empty - negative).norm(dim=0), rtol=2e-2, atol=1e-3)
    assert step.divergence > 0


def test_last_x0_equals_the_final_latents_for_euler(sd_pipe, traced):
    """Euler's last step lands exactly on the x0 it predicts, which checks the x0 formula end to end."""
    final = sd_pipe(
        prompt=[PROMPT, PROMPT],
        negative_prompt=["", NEGATIVE],
        generator=[torch.Generator().manual_seed(SEED) for _ in range(2)],
        num_inference_steps=STEPS,
        width=32,
        height=32,
        output_type="latent",
    ).images
    torch.testing.assert_close(traced.trace.steps[-1].x0_latents.float(), final, rtol=1e-2, atol=1e-2)


def test_the_guided_x0_is_the_branches_mixed_by_the_guidance_scale(traced):
    """x0 is affine in ε, so the with-run's x0 is its negative branch's plus s × (prompt's − negative's); and at
    the first step, where both runs share their sample, the without-run's is the empty prompt's mixed the same
    way (its negative branch is the empty prompt)."""
    s = traced.trace.guidance_scale
    for step in traced.trace.steps:
        x0 = step.x0_latents.float()
        prompt, _, negative = step.branch_x0_latents.float()  # BRANCHES
        rounding = 2 * s * 2**-10 * x0.abs().max()  # stored in float16: s times its rounding of the largest value
        torch.testing.assert_close(x0[1], negative + s * (prompt - negative), rtol=0, atol=rounding)
    first = traced.trace.steps[0].x0_latents.float()
    prompt, empty, negative = traced.trace.steps[0].branch_x0_latents.float()
    rounding = 2 * s * 2**-10 * first.abs().max()
    torch.testing.assert_close(first[0], empty + s * (prompt - empty), rtol=0, atol=rounding)
    assert (negative - empty).abs().max() > 0.01  # the negative's prediction is not the empty prompt's


def test_identical_runs_have_zero_divergence(sd_pipe):
    result = compare(sd_pipe, CompareSettings(PROMPT, "", seed=SEED, steps=4))
    assert all(step.divergence == 0 for step in result.trace.steps)
    assert all(step.guidance_cosine == pytest.approx(1.0, abs=1e-5) for step in result.trace.steps)


@pytest.mark.slow  # six comparisons, SDXL among them
def test_tracing_does_not_change_images(sd_pipe, sdxl_pipe):
    for pipe, guidance in ((sd_pipe, 7.5), (sdxl_pipe, 5.0)):
        settings = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=guidance)
        plain = compare(pipe, settings, trace=False)
        traced = compare(pipe, settings, trace=True)
        pushed = compare(pipe, settings.replace(push_map=True), trace=True)
        for run in ("without_negative", "with_negative"):
            untraced = np.asarray(getattr(plain, run), dtype=np.int16)
            assert np.array_equal(untraced, np.asarray(getattr(traced, run), dtype=np.int16))
            # the push map adds a batch item, which may reorder float sums: equal within 2/255
            assert np.abs(untraced - np.asarray(getattr(pushed, run), dtype=np.int16)).max() <= 2


def test_hooks_are_removed(sd_pipe, traced):
    assert len(sd_pipe.unet._forward_hooks) == 0
    assert len(sd_pipe.unet._forward_pre_hooks) == 0


def test_sdxl_trace_and_push_map(sdxl_pipe):
    result = compare(sdxl_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=4, guidance=5.0, push_map=True))
    assert len(result.trace.steps) == 4
    assert all(step.push_map is not None and step.push_mean > 0 for step in result.trace.steps)


def test_previews_are_the_decoded_x0_of_each_step(traced, sd_pipe):
    step = traced.trace.steps[2]
    assert np.array_equal(step.previews, decode_previews(sd_pipe, step.x0_latents))
    assert np.array_equal(step.branch_previews, decode_previews(sd_pipe, step.branch_x0_latents))
    assert not np.array_equal(traced.trace.steps[0].previews, traced.trace.steps[-1].previews)


def test_trace_scalars_serialise_to_json(traced):
    document = json.loads(json.dumps(traced.trace.to_json()))
    assert document["runs"] == ["without", "with"]
    assert len(document["steps"]) == STEPS
    first = document["steps"][0]
    assert set(first) >= {"step", "timestep", "sigma", "guidance_mean", "guidance_cosine", "divergence", "push_mean"}


def test_trace_stays_small_at_sdxl_scale(traced):
    """Per latent pixel and step the trace keeps a fixed number of bytes; at SDXL's 128×128 latents (1024 px),
    50 steps, push map on and latent-resolution previews, that must stay under 50 MB."""
    step = traced.trace.steps[0]
    latent_pixels = step.guidance_map.shape[1] * step.guidance_map.shape[2]
    kept = (step.guidance_map, step.x0_latents, step.branch_x0_latents, step.push_map)
    tensor_bytes = sum(t.numel() * t.element_size() for t in kept)
    per_pixel = tensor_bytes / latent_pixels + 2 * 3  # + two RGB previews at latent resolution (big models)
    sdxl_total = per_pixel * 128 * 128 * 50
    assert sdxl_total < 50e6, f"{sdxl_total / 1e6:.1f} MB"


def euler(prediction_type: str, **config) -> EulerDiscreteScheduler:
    """The tiny pipelines' Euler schedule, for a model trained to predict `prediction_type`."""
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=prediction_type, **config
    )


def tracer_for(prediction_type: str) -> GuidanceTracer:
    """A tracer on a stand-in pipeline: `predict_x0` reads only the scheduler's prediction type."""
    return GuidanceTracer(SimpleNamespace(scheduler=euler(prediction_type)), 7.5, True, False)


@pytest.mark.parametrize("sigma", [0.03, 1.0, 14.6])
def test_predict_x0_for_v_and_sample_prediction(sigma):
    generator = torch.Generator().manual_seed(0)
    x_t, output = torch.randn((2, 4, 3, 3), generator=generator), torch.randn((2, 4, 3, 3), generator=generator)
    alpha_bar = 1 / (1 + sigma**2)  # x_t = √ᾱ·x0 + √(1−ᾱ)·ε with σ² = (1−ᾱ)/ᾱ
    expected_v = math.sqrt(alpha_bar) * x_t - math.sqrt(1 - alpha_bar) * output
    torch.testing.assert_close(tracer_for("v_prediction").predict_x0(x_t, output, sigma), expected_v)
    torch.testing.assert_close(tracer_for("sample").predict_x0(x_t, output, sigma), output)
    expected_eps = (x_t - math.sqrt(1 - alpha_bar) * output) / math.sqrt(alpha_bar)
    torch.testing.assert_close(tracer_for("epsilon").predict_x0(x_t, output, sigma), expected_eps)
    # v = √ᾱ·ε − √(1−ᾱ)·x0: a v made from a known x0 and ε gives that x0 back
    x0, eps = torch.randn((2, 4, 3, 3), generator=generator), torch.randn((2, 4, 3, 3), generator=generator)
    noisy = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps
    v = math.sqrt(alpha_bar) * eps - math.sqrt(1 - alpha_bar) * x0
    torch.testing.assert_close(tracer_for("v_prediction").predict_x0(noisy, v, sigma), x0)


def test_last_x0_equals_the_final_latents_for_euler_with_v_prediction(sd_pipe):
    """A v-prediction model (SD 2.x 768 px): Euler's last x0 is the final latents, as for epsilon above.

    Trailing spacing ends on a noise level high enough (σ ≈ 0.5) that reading v as ε would miss by far."""
    pipe = copy.deepcopy(sd_pipe)  # a model of its own: a pipeline's first scheduler is the one its runs start from
    pipe.scheduler = euler("v_prediction", timestep_spacing="trailing")
    result = compare(pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS))
    assert result.trace.prediction_type == "v_prediction"
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # the run's own scheduler kept it
    final = pipe(
        prompt=[PROMPT, PROMPT],
        negative_prompt=["", NEGATIVE],
        generator=[torch.Generator().manual_seed(SEED) for _ in range(2)],
        num_inference_steps=STEPS,
        width=32,
        height=32,
        output_type="latent",
    ).images
    torch.testing.assert_close(result.trace.steps[-1].x0_latents.float(), final, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("scheduler", ["DDIM", "UniPC"])
def test_sigma_is_the_noise_level_of_each_steps_timestep(sd_pipe, scheduler):
    result = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, scheduler=scheduler))
    used = sd_pipe.scheduler  # compare() left this run's scheduler installed
    assert type(used).__name__.startswith(scheduler)
    steps = result.trace.steps
    assert [step.timestep for step in steps] == [float(t) for t in used.timesteps]
    for step in steps:
        alpha_bar = float(used.alphas_cumprod[int(step.timestep)])
        assert step.timestep == int(step.timestep)  # these schedulers step on integer timesteps
        assert step.sigma == pytest.approx(math.sqrt((1 - alpha_bar) / alpha_bar), rel=1e-6)
    sigmas = [step.sigma for step in steps]
    assert all(later < earlier for earlier, later in zip(sigmas, sigmas[1:]))


def test_a_record_crosses_a_process_boundary_as_arrays(traced):
    """A ZeroGPU worker pickles each record to the server: every tensor goes as a numpy array (never as a file
    descriptor of the worker) and comes back the same tensor, the branches' x0 included."""
    record = traced.trace.steps[0]
    assert not any(torch.is_tensor(value) for value in record.__getstate__().values())
    copied = pickle.loads(pickle.dumps(record))
    for name in ("guidance_map", "x0_latents", "branch_x0_latents", "push_map"):
        assert torch.equal(getattr(copied, name), getattr(record, name)), name
