"""NAG on SD3's and FLUX.1's joint attention: the engine's images equal diffusers' own sampling loop whose
transformer forward is written out here, block by block, with the paper's formula in every joint attention layer
(the NAG authors' scheme: the negative's text stream computed alongside, image tokens guided, SD3 clipping with the
L1 norm and FLUX.1 with L2); s = 1 and α = 0 are the plain run; the window; FLUX.1's true CFG (two calls per step);
processors and hooks removed after a run and after an error; the trace's ‖Z − Z⁺‖ map."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from diffusers.models.embeddings import apply_rotary_emb

from negprompt_demo.models.families import FLUX_DISTILLED_GUIDANCE, family_of
from negprompt_demo.sampling.engine import GenerationCancelled, compare, generate_pairs
from negprompt_demo.sampling.guidance import NegativePlan
from negprompt_demo.sampling.hooks import BatchRows, DenoiserCall
from negprompt_demo.sampling.nag_joint import JointNag
from negprompt_demo.settings import CompareSettings

PROMPT, NEGATIVE, SEED, STEPS = "portrait photo of a man", "mustache", 1234, 4
STRONG = {"nag_scale": 20.0, "nag_tau": 1.5, "nag_alpha": 0.9}  # random weights barely react to the defaults


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def nag_settings(**changes) -> CompareSettings:
    base = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=1.0, negative_mode="nag", **STRONG)
    return base.replace(**changes)


def paper_nag(positive, negative, nag: dict, p: int):
    """Z̃ = s·Z⁺ − (s − 1)·Z⁻; where ‖Z̃‖ₚ/‖Z⁺‖ₚ > τ, Z̃ scaled back to τ; Z = α·Z̃ + (1 − α)·Z⁺."""
    tilde = nag["scale"] * positive - (nag["scale"] - 1) * negative
    ratio = torch.linalg.vector_norm(tilde, ord=p, dim=-1, keepdim=True) / torch.linalg.vector_norm(
        positive, ord=p, dim=-1, keepdim=True
    )
    tilde = torch.where(ratio > nag["tau"], tilde * nag["tau"] / ratio, tilde)
    return nag["alpha"] * tilde + (1 - nag["alpha"]) * positive


def attend(attn, image, text, image_first: bool, rotary=None):
    """Joint attention by hand: per head softmax(q·kᵀ/√d)·v over the joined tokens; (image part, text part) before
    the output projections. `text` None: one sequence, attending to itself (FLUX.1's single blocks)."""

    def heads(states, projection, norm):
        found = projection(states)
        found = found.reshape(found.shape[0], found.shape[1], attn.heads, -1)
        return norm(found) if norm is not None else found

    q, k, v = heads(image, attn.to_q, attn.norm_q), heads(image, attn.to_k, attn.norm_k), heads(image, attn.to_v, None)
    if text is not None:
        tq = heads(text, attn.add_q_proj, attn.norm_added_q)
        tk, tv = heads(text, attn.add_k_proj, attn.norm_added_k), heads(text, attn.add_v_proj, None)
        join = (lambda a, b: torch.cat([a, b], dim=1)) if image_first else (lambda a, b: torch.cat([b, a], dim=1))
        q, k, v = join(q, tq), join(k, tk), join(v, tv)
    if rotary is not None:
        q, k = apply_rotary_emb(q, rotary, sequence_dim=1), apply_rotary_emb(k, rotary, sequence_dim=1)
    q, k, v = (x.permute(0, 2, 1, 3) for x in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3).flatten(2)
    if text is None:
        return out, None
    split = image.shape[1] if image_first else -image.shape[1]
    return (out[:, :split], out[:, split:]) if image_first else (out[:, split:], out[:, :split])


def text_update(block, text, text_out, modulation):
    gate, shift, scale, gate_mlp = modulation
    text = text + gate[:, None] * block.attn.to_add_out(text_out)
    normed = block.norm2_context(text) * (1 + scale[:, None]) + shift[:, None]
    return text + gate_mlp[:, None] * block.ff_context(normed)


def image_update(block, image, z, modulation):
    gate, shift, scale, gate_mlp = modulation
    image = image + gate[:, None] * block.attn.to_out[0](z)
    return image + gate_mlp[:, None] * block.ff(block.norm2(image) * (1 + scale[:, None]) + shift[:, None])


def sd3_forward(model, sample, text_embeds, pooled, timestep, negative_embeds, nag):
    """SD3's transformer for one item, the negative's text stream beside the prompt's (same time embedding)."""
    height, width = sample.shape[-2:]
    image = model.pos_embed(sample)
    temb = model.time_text_embed(timestep, pooled)
    texts = [model.context_embedder(text_embeds), model.context_embedder(negative_embeds)]
    for block in model.transformer_blocks:
        normed, *modulation = block.norm1(image, emb=temb)
        answers = []
        for text in texts:
            if block.context_pre_only:
                normed_text, text_modulation = block.norm1_context(text, temb), None
            else:
                normed_text, *text_modulation = block.norm1_context(text, emb=temb)
            answers.append((*attend(block.attn, normed, normed_text, image_first=True), text_modulation))
        image = image_update(block, image, paper_nag(answers[0][0], answers[1][0], nag, p=1), modulation)
        if not block.context_pre_only:
            texts = [text_update(block, text, out, mod) for text, (_, out, mod) in zip(texts, answers)]
    out = model.proj_out(model.norm_out(image, temb))
    patch, channels = model.config.patch_size, model.out_channels
    out = out.reshape(out.shape[0], height // patch, width // patch, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(out.shape[0], channels, height, width)


def flux_forward(model, hidden, text_embeds, pooled, timestep, guidance, ids, negative, nag):
    """FLUX.1's transformer for one item: the negative's text stream with its own pooled embedding; image tokens
    shared through the double blocks; in the single blocks each stream has its image copy, both set to NAG's Z."""
    negative_embeds, negative_pooled = negative
    image = model.x_embedder(hidden)
    timestep = timestep * 1000
    guidance = None if guidance is None else guidance * 1000

    def embed_time(pooled_projection):
        if guidance is None:
            return model.time_text_embed(timestep, pooled_projection)
        return model.time_text_embed(timestep, guidance, pooled_projection)

    tembs = [embed_time(pooled), embed_time(negative_pooled)]
    texts = [model.context_embedder(text_embeds), model.context_embedder(negative_embeds)]
    rotary = model.pos_embed(ids)
    for block in model.transformer_blocks:
        normed, *modulation = block.norm1(image, emb=tembs[0])
        answers = []
        for text, temb in zip(texts, tembs):
            normed_text, *text_modulation = block.norm1_context(text, emb=temb)
            answers.append(
                (*attend(block.attn, normed, normed_text, image_first=False, rotary=rotary), text_modulation)
            )
        image = image_update(block, image, paper_nag(answers[0][0], answers[1][0], nag, p=2), modulation)
        texts = [text_update(block, text, out, mod) for text, (_, out, mod) in zip(texts, answers)]
    length = texts[0].shape[1]
    sequences = [torch.cat([text, image], dim=1) for text in texts]
    for block in model.single_transformer_blocks:
        normed = [block.norm(sequence, emb=temb) for sequence, temb in zip(sequences, tembs)]
        outs = [attend(block.attn, states, None, image_first=True, rotary=rotary)[0] for states, _ in normed]
        z = paper_nag(outs[0][:, length:], outs[1][:, length:], nag, p=2)
        updated = []
        for sequence, (states, gate), out in zip(sequences, normed, outs):
            out = torch.cat([out[:, :length], z], dim=1)
            mlp = block.act_mlp(block.proj_mlp(states))
            updated.append(sequence + gate[:, None] * block.proj_out(torch.cat([out, mlp], dim=2)))
        sequences = updated
    return model.proj_out(model.norm_out(sequences[0][:, length:], tembs[0]))


@torch.no_grad()
def hand_loop(pipe, family: str, settings: CompareSettings, nag: dict, start_step: int = 0) -> np.ndarray:
    """The with-run's image: diffusers' pipeline loop (its CFG negative the empty prompt), its transformer forward
    replaced by the functions above on items conditioned on the prompt, from step `start_step` on."""
    model = pipe.transformer
    original_forward = model.forward
    device = pipe._execution_device
    if family == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, None, None, device=device, do_classifier_free_guidance=False)
        negative, _, negative_pooled, _ = pipe.encode_prompt(
            NEGATIVE, None, None, device=device, do_classifier_free_guidance=False
        )
    else:
        embeds, pooled, _ = pipe.encode_prompt(PROMPT, None, device=device)
        negative, negative_pooled, _ = pipe.encode_prompt(NEGATIVE, None, device=device)

    def forward(**kwargs):
        step = pipe.scheduler.step_index or 0
        outputs = []
        for row in range(kwargs["hidden_states"].shape[0]):
            one = {name: value[row : row + 1] if _batched(value, kwargs) else value for name, value in kwargs.items()}
            prompt_item = torch.equal(one["encoder_hidden_states"], embeds)
            if not prompt_item or step < start_step:
                outputs.append(original_forward(**one)[0])
            elif family == "sd3":
                args = (one["pooled_projections"], one["timestep"], negative, nag)
                outputs.append(sd3_forward(model, one["hidden_states"], one["encoder_hidden_states"], *args))
            else:
                ids = torch.cat([one["txt_ids"], one["img_ids"]])
                args = (one["timestep"], one["guidance"], ids, (negative, negative_pooled), nag)
                outputs.append(flux_forward(model, one["hidden_states"], embeds, one["pooled_projections"], *args))
        return (torch.cat(outputs),)

    arguments = {"guidance_scale": settings.guidance}
    if family == "flux":
        arguments = {"true_cfg_scale": settings.guidance, "guidance_scale": FLUX_DISTILLED_GUIDANCE}
    model.forward = forward
    try:
        image = pipe(
            PROMPT,
            negative_prompt="",
            num_inference_steps=settings.steps,
            height=settings.height,
            width=settings.width,
            generator=torch.Generator().manual_seed(SEED),
            output_type="np",
            **arguments,
        ).images[0]
    finally:
        del model.forward
    return (image * 255).round().astype(np.int16)


def _batched(value, kwargs) -> bool:
    return torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == kwargs["hidden_states"].shape[0]


@pytest.fixture(scope="module")
def deep_flux_pipe(flux_pipe):
    """The tiny FLUX.1 with two double and two single blocks: the companions' own image tokens in the single blocks
    (set to NAG's Z in each, then modulated by the negative's pooled embedding) reach a second single block."""
    torch.manual_seed(1)
    config = dict(flux_pipe.transformer.config) | {"num_layers": 2, "num_single_layers": 2}
    config = {name: value for name, value in config.items() if not name.startswith("_")}
    pipe = FluxPipeline(**(flux_pipe.components | {"transformer": FluxTransformer2DModel(**config)}))
    pipe.default_sample_size = flux_pipe.default_sample_size
    pipe.set_progress_bar_config(disable=True)
    return pipe


def nag_inputs(settings: CompareSettings) -> dict:
    return {"scale": settings.nag_scale, "tau": settings.nag_tau, "alpha": settings.nag_alpha}


def no_nag_left(pipe, before: dict) -> None:
    model = pipe.transformer
    assert {name: type(p) for name, p in model.attn_processors.items()} == before
    assert not any(module._forward_pre_hooks for module in model.modules())


@pytest.mark.parametrize(
    ("pipe_name", "guidance"),
    [("sd3_pipe", 1.0), ("sd3_pipe", 4.0), ("flux_pipe", 1.0), ("flux_pipe", 4.0), ("deep_flux_pipe", 4.0)],
)
def test_nag_equals_the_hand_written_loop(pipe_name, guidance, request):
    pipe = request.getfixturevalue(pipe_name)
    family = "sd3" if pipe_name == "sd3_pipe" else "flux"
    before = {name: type(p) for name, p in pipe.transformer.attn_processors.items()}
    result = compare(pipe, nag_settings(guidance=guidance))
    expected = hand_loop(pipe, family, result.settings, nag_inputs(result.settings))
    assert np.abs(pixels(result.with_negative) - expected).max() <= 2
    plain = compare(pipe, result.settings.replace(negative_mode="cfg", negative=""))
    assert np.array_equal(pixels(result.without_negative), pixels(plain.without_negative))  # "without" unchanged
    moved = np.abs(pixels(result.with_negative) - pixels(plain.with_negative)).max()
    assert moved > 2, "NAG must move the image by more than the comparison's tolerance"
    no_nag_left(pipe, before)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_authors_family_defaults(family, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    settings = compare(pipe, CompareSettings(PROMPT, NEGATIVE, steps=1, negative_mode="nag")).settings
    assert (settings.nag_scale, settings.nag_tau) == (5.0, 2.5)
    assert settings.nag_alpha == {"sd3": 0.125, "flux": 0.25}[family]


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("changes", [{"nag_scale": 1.0}, {"nag_alpha": 0.0}])
def test_scale_1_or_alpha_0_is_the_plain_run_bit_for_bit(family, changes, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    off = compare(pipe, nag_settings(**changes))
    plain = compare(pipe, nag_settings(negative_mode="cfg"))
    assert np.array_equal(pixels(off.with_negative), pixels(plain.with_negative))


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_window_applies_to_joint_nag(family, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    result = compare(pipe, nag_settings(negative_start=0.5))
    # A1111's counting: [mustache:0.5] at 4 steps acts on k > int(0.5·4) = 2, i.e. the last step
    expected = hand_loop(pipe, family, result.settings, nag_inputs(result.settings), start_step=3)
    assert np.abs(pixels(result.with_negative) - expected).max() <= 2
    steps = result.trace.steps
    assert [step.nag_map is not None for step in steps] == [False, False, False, True]
    latent = (result.settings.height // pipe.vae_scale_factor, result.settings.width // pipe.vae_scale_factor)
    assert steps[3].nag_map.shape == latent and steps[3].nag_mean > 0


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_processors_and_hooks_are_removed_after_an_error(family, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    before = {name: type(p) for name, p in pipe.transformer.attn_processors.items()}
    stop = threading.Event()

    def stop_at_once(done, total, record):
        stop.set()

    with pytest.raises(GenerationCancelled):
        compare(pipe, nag_settings(), on_step=stop_at_once, stop=stop)
    no_nag_left(pipe, before)


# The branch hook's view of a transformer call holding one with-run text item (row 0), at step 0.
ONE_TEXT_ROW = DenoiserCall(step=0, rows=BatchRows.text_only(1))


@torch.no_grad()
@pytest.mark.parametrize("pipe_name", ["sd3_pipe", "deep_flux_pipe"])
def test_one_transformer_call_equals_the_hand_written_forward_closely(pipe_name, request):
    """Tighter than pixels: one call's prediction (the differences NAG makes on random weights are small)."""
    pipe = request.getfixturevalue(pipe_name)
    model, generator = pipe.transformer, torch.Generator().manual_seed(0)
    nag = {"scale": 20.0, "tau": 1.5, "alpha": 0.9}
    if pipe_name == "sd3_pipe":
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, None, None, do_classifier_free_guidance=False)
        negative, _, negative_pooled, _ = pipe.encode_prompt(NEGATIVE, None, None, do_classifier_free_guidance=False)
        sample = torch.randn(1, 16, 16, 16, generator=generator)
        inputs = {"hidden_states": sample, "encoder_hidden_states": embeds, "pooled_projections": pooled}
        inputs["timestep"] = torch.tensor([500.0])
        expected = sd3_forward(model, sample, embeds, pooled, inputs["timestep"], negative, nag)
    else:
        embeds, pooled, txt_ids = pipe.encode_prompt(PROMPT, None)
        negative, negative_pooled, _ = pipe.encode_prompt(NEGATIVE, None)
        img_ids = FluxPipeline._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32)
        hidden = torch.randn(1, 64, 64, generator=generator)
        timestep, guidance = torch.tensor([0.5]), torch.tensor([3.5])
        inputs = {"hidden_states": hidden, "encoder_hidden_states": embeds, "pooled_projections": pooled}
        inputs |= {"timestep": timestep, "guidance": guidance, "txt_ids": txt_ids, "img_ids": img_ids}
        ids = torch.cat([txt_ids, img_ids])
        expected = flux_forward(
            model, hidden, embeds, pooled, timestep, guidance, ids, (negative, negative_pooled), nag
        )
    family = family_of(pipe)
    joint = JointNag(
        model, ONE_TEXT_ROW, [NegativePlan(0, 1)], [0], negative, negative_pooled, family, latent_size=(16, 16),
        traced=None, **nag,
    )  # fmt: skip
    plain = model(**inputs, return_dict=False)[0]
    with joint:
        found = model(**inputs, return_dict=False)[0]
    assert torch.allclose(found, expected, atol=1e-5, rtol=1e-4)
    assert (found - plain).abs().max() > 100 * (found - expected).abs().max()


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_many_seeds_with_joint_nag_equal_single_runs(family, request):
    """Two with-run items in one call: two companion rows, each guiding its own item."""
    pipe = request.getfixturevalue(f"{family}_pipe")
    settings = nag_settings()
    pairs = generate_pairs(pipe, settings, [SEED, 99])
    for seed, (without, with_nag) in zip([SEED, 99], pairs):
        single = compare(pipe, settings.replace(seed=seed))
        assert np.abs(pixels(with_nag) - pixels(single.with_negative)).max() <= 2
        assert np.abs(pixels(without) - pixels(single.without_negative)).max() <= 2
