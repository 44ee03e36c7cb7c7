"""Normalized Attention Guidance: the engine's images equal a sampling loop written out here that applies the paper's
formula in every cross-attention layer; s = 1 and α = 0 are the plain run; the window; the processors are removed
after a run and after an error; the trace's ‖Z − Z⁺‖ map (SD3/FLUX.1: test_nag_joint.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from negprompt_demo.models.previews import fill_previews
from negprompt_demo.page.tracefile import TraceStore
from negprompt_demo.sampling.engine import GenerationCancelled, compare, generate_pairs, prepare
from negprompt_demo.sampling.many_seeds import new_grid, sample_grid
from negprompt_demo.sampling.nag import NagProcessor, nag_blend
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views.visualize import curves_picture, describe, step_views

PROMPT, NEGATIVE, SEED, STEPS, SIZE = "portrait photo of a man", "mustache", 1234, 6, 32


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def nag_settings(**changes) -> CompareSettings:
    base = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=1.0, negative_mode="nag")
    return base.replace(**changes)


class PaperNag:
    """The paper's Algorithm on one cross-attention layer, written plainly: per-head softmax(q·kᵀ/√d)·v against the
    prompt's and the negative's tokens; on the rows `rows`, Z̃ = s·Z⁺ − (s − 1)·Z⁻, L1 ratio clipped at τ, blended
    with α. `active` is switched per step by the loop (the window)."""

    def __init__(self, negative: torch.Tensor, scale: float, tau: float, alpha: float, rows: list[int]):
        self.negative, self.scale, self.tau, self.alpha, self.rows = negative, scale, tau, alpha, rows
        self.active = True

    def attend(self, attn, hidden, context):
        heads = attn.heads
        q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
        split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        out = weights @ v
        return out.permute(0, 2, 1, 3).reshape(hidden.shape[0], hidden.shape[1], -1)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        z = self.attend(attn, hidden_states, encoder_hidden_states)
        if self.active:
            z_neg = self.attend(attn, hidden_states, self.negative.expand(hidden_states.shape[0], -1, -1))
            for row in self.rows:
                pos, neg = z[row], z_neg[row]
                tilde = self.scale * pos - (self.scale - 1) * neg
                ratio = tilde.abs().sum(-1, keepdim=True) / pos.abs().sum(-1, keepdim=True)
                tilde = torch.where(ratio > self.tau, tilde * self.tau / ratio, tilde)
                z = z.clone()
                z[row] = self.alpha * tilde + (1 - self.alpha) * pos
        return attn.to_out[1](attn.to_out[0](z))


@torch.no_grad()
def hand_loop(pipe, guidance: float, cfg_negative: str | None, nag: dict, start_step: int = 0) -> np.ndarray:
    """One image sampled step by step: Euler, CFG with `cfg_negative` when guidance > 1 (batch [negative, text]),
    PaperNag on the text item from `start_step` on. SD 1.x and SDXL."""
    sdxl = hasattr(pipe, "text_encoder_2")
    device, dtype = pipe.device, pipe.unet.dtype
    cfg = guidance > 1
    encoded = pipe.encode_prompt(
        prompt=PROMPT, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
        negative_prompt=cfg_negative,
    )  # fmt: skip
    negative_tokens = pipe.encode_prompt(
        prompt=NEGATIVE, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )[0]
    text, uncond = encoded[0], encoded[1]
    context = torch.cat([uncond, text]) if cfg else text
    rows = [1] if cfg else [0]
    extra = {}
    if sdxl:
        pooled, negative_pooled = encoded[2], encoded[3]
        width = pipe.text_encoder_2.config.projection_dim
        time_ids = pipe._get_add_time_ids((SIZE, SIZE), (0, 0), (SIZE, SIZE), dtype, text_encoder_projection_dim=width)
        time_ids = time_ids.repeat(2 if cfg else 1, 1)
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.cat([negative_pooled, pooled]) if cfg else pooled,
            "time_ids": time_ids,
        }
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS, device=device)
    generator = torch.Generator().manual_seed(SEED)
    latents = pipe.prepare_latents(1, 4, SIZE, SIZE, dtype, device, [generator], None)
    processor = PaperNag(negative_tokens, nag["scale"], nag["tau"], nag["alpha"], rows)
    originals = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(
        {name: processor if name.endswith("attn2.processor") else p for name, p in originals.items()}
    )
    try:
        for step, t in enumerate(scheduler.timesteps):
            processor.active = step >= start_step
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
            prediction = pipe.unet(model_input, t, encoder_hidden_states=context, **extra).sample
            if cfg:
                negative, positive = prediction.chunk(2)
                prediction = negative + guidance * (positive - negative)
            latents = scheduler.step(prediction, t, latents).prev_sample
    finally:
        pipe.unet.set_attn_processor(dict(originals))
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    image = pipe.image_processor.postprocess(image, output_type="np")[0]
    return (image * 255).round().astype(np.int16)


def nag_inputs(settings: CompareSettings) -> dict:
    return {"scale": settings.nag_scale, "tau": settings.nag_tau, "alpha": settings.nag_alpha}


def assert_no_nag_processors(pipe) -> None:
    assert not any(isinstance(p, NagProcessor) for p in pipe.unet.attn_processors.values())


def test_formula_matches_the_paper_on_numbers():
    positive = torch.tensor([[1.0, -2.0, 0.5]])
    negative = torch.tensor([[0.0, 1.0, 0.5]])
    # s = 3: Z̃ = 3·Z⁺ − 2·Z⁻ = [3, −8, 0.5], ‖Z̃‖₁ = 11.5, ‖Z⁺‖₁ = 3.5, ratio 3.29 > τ = 2 → Z̃·2/3.29
    clipped = torch.tensor([[3.0, -8.0, 0.5]]) * (2 / (11.5 / 3.5))
    expected = 0.25 * clipped + 0.75 * positive
    assert torch.allclose(nag_blend(positive, negative, 3.0, 2.0, 0.25), expected)
    # under τ nothing is clipped; s = 1 is Z⁺
    assert torch.allclose(nag_blend(positive, negative, 3.0, 5.0, 1.0), torch.tensor([[3.0, -8.0, 0.5]]))
    assert torch.equal(nag_blend(positive, negative, 1.0, 2.0, 0.5), positive)


@pytest.mark.parametrize("pipe_name", ["sd_pipe", "sdxl_pipe"])
def test_nag_at_guidance_1_equals_the_hand_written_loop(pipe_name, request):
    pipe = request.getfixturevalue(pipe_name)
    assert compare(pipe, nag_settings(steps=1)).settings.nag_alpha == 0.5  # the authors' cross-attention default
    settings = nag_settings(nag_scale=8.0, nag_tau=4.0, nag_alpha=0.9)  # stronger: random weights barely react
    result = compare(pipe, settings)
    expected = hand_loop(pipe, 1.0, None, nag_inputs(result.settings))
    assert np.abs(pixels(result.with_negative) - expected).max() <= 2
    plain = compare(pipe, settings.replace(negative_mode="cfg"))  # CFG at guidance 1: both images equal
    assert np.array_equal(pixels(result.without_negative), pixels(plain.without_negative))  # "without" unchanged
    assert np.abs(pixels(result.with_negative) - pixels(plain.with_negative)).max() > 4, "NAG must act"
    assert not any("no effect" in w for w in result.warnings)
    assert_no_nag_processors(pipe)


@pytest.mark.parametrize("mode", ["nag", "both"])
def test_nag_beside_cfg_equals_the_hand_written_loop(sd_pipe, mode):
    settings = nag_settings(guidance=7.5, negative_mode=mode, nag_scale=3.0, nag_tau=2.0, nag_alpha=0.25)
    result = compare(sd_pipe, settings)
    cfg_negative = NEGATIVE if mode == "both" else ""  # NAG alone: the CFG branch stays the empty prompt's
    expected = hand_loop(sd_pipe, 7.5, cfg_negative, nag_inputs(result.settings))
    assert np.abs(pixels(result.with_negative) - expected).max() <= 2
    cfg_only = compare(sd_pipe, settings.replace(negative_mode="cfg"))
    assert np.array_equal(pixels(result.without_negative), pixels(cfg_only.without_negative))
    assert np.abs(pixels(result.with_negative) - pixels(cfg_only.with_negative)).max() > 4


def test_the_window_applies_to_nag(sd_pipe):
    settings = nag_settings(negative_start=0.5)
    result = compare(sd_pipe, settings)
    # A1111's counting: [mustache:0.5] at 6 steps acts on k > int(0.5·6) = 3, i.e. steps 4 and 5
    expected = hand_loop(sd_pipe, 1.0, None, nag_inputs(result.settings), start_step=4)
    assert np.abs(pixels(result.with_negative) - expected).max() <= 2
    steps = result.trace.steps
    assert [step.nag_map is not None for step in steps] == [False] * 4 + [True] * 2
    assert [step.negative_active for step in steps] == [False] * 4 + [True] * 2
    assert all(step.nag_mean > 0 for step in steps[4:]) and steps[4].nag_map.shape == (16, 16)
    assert "nag_mean" in steps[4].scalars() and "nag_mean" not in steps[0].scalars()


@pytest.mark.parametrize("mode", ["nag", "both"])
@pytest.mark.parametrize("changes", [{"nag_scale": 1.0}, {"nag_alpha": 0.0}])
def test_scale_1_or_alpha_0_is_the_plain_run_bit_for_bit(sd_pipe, mode, changes):
    guidance = 1.0 if mode == "nag" else 7.5
    off = compare(sd_pipe, nag_settings(negative_mode=mode, guidance=guidance, **changes))
    plain = compare(sd_pipe, nag_settings(negative_mode="cfg", guidance=guidance))
    assert np.array_equal(pixels(off.with_negative), pixels(plain.with_negative))
    assert any("turns NAG off" in warning for warning in off.warnings)


def test_processors_are_removed_after_an_error(sd_pipe):
    before = sd_pipe.unet.attn_processors
    stop = threading.Event()

    def stop_at_once(done, total, record):
        stop.set()

    with pytest.raises(GenerationCancelled):
        compare(sd_pipe, nag_settings(), on_step=stop_at_once, stop=stop)
    assert_no_nag_processors(sd_pipe)
    assert {name: type(p) for name, p in sd_pipe.unet.attn_processors.items()} == {
        name: type(p) for name, p in before.items()
    }


def test_many_seeds_with_nag_equal_single_runs(sd_pipe):
    settings = nag_settings()
    pairs = generate_pairs(sd_pipe, settings, [SEED, 99])
    single = compare(sd_pipe, settings)
    assert np.abs(pixels(pairs[0][1]) - pixels(single.with_negative)).max() <= 2
    assert np.abs(pixels(pairs[0][0]) - pixels(single.without_negative)).max() <= 2


def test_nag_composes_with_attention_maps(sd_pipe):
    settings = nag_settings(attention_maps=True)
    with_maps = compare(sd_pipe, settings)
    without_maps = compare(sd_pipe, settings.replace(attention_maps=False))
    assert np.array_equal(pixels(with_maps.with_negative), pixels(without_maps.with_negative))
    assert with_maps.trace.attention is not None and with_maps.trace.steps[0].attention_maps is not None


def test_cfg_at_guidance_1_offers_nag(sd_pipe):
    result = compare(sd_pipe, nag_settings(negative_mode="cfg", steps=2))
    assert any("set “how the negative acts” to nag" in warning for warning in result.warnings)


def test_step_view_draws_the_nag_map_also_from_a_stored_trace(sd_pipe, tmp_path):
    result = compare(sd_pipe, nag_settings(negative_start=0.5))
    fill_previews(sd_pipe, result.trace.steps)
    assert "nag" not in step_views(result.trace, 0) and "nag" in step_views(result.trace, 4)
    assert "acted in attention (NAG) on steps 5–6" in describe(result.trace)
    store = TraceStore(tmp_path)
    trace_id = store.save(result.trace, curves_picture(result.trace))
    stored, _ = store.load(trace_id, 4)  # the step slider's path: one step's arrays, every step's scalars
    assert torch.equal(stored.steps[4].nag_map, result.trace.steps[4].nag_map)
    assert stored.steps[4].nag_peak == result.trace.steps[4].nag_peak and stored.steps[0].nag_mean is None
    assert "nag" in step_views(stored, 4) and "nag" not in step_views(store.load(trace_id, 1)[0], 1)


def test_the_many_seeds_grid_takes_nag(sd_pipe):
    prepared = prepare(sd_pipe, nag_settings(nag_scale=8.0, nag_tau=4.0, nag_alpha=0.9))
    settings = prepared.settings
    grid = sample_grid(sd_pipe, prepared, new_grid(settings, "tiny", True), 2)
    pairs = generate_pairs(sd_pipe, settings, [SEED, SEED + 1])
    for k, (without, with_nag) in enumerate(pairs):
        assert np.abs(pixels(grid.images["with"][k]) - pixels(with_nag)).max() <= 2
        assert np.abs(pixels(grid.images["without"][k]) - pixels(without)).max() <= 2
    assert np.abs(pixels(grid.images["with"][0]) - pixels(grid.images["without"][0])).max() > 4
