"""Attention maps of the negative's and the prompt's words: words from tokens, the recorded probabilities against
diffusers' own, the rows read, images unchanged, processors restored, the memory bound and the trace's store (the
page and API: tests/unit/page/test_handlers.py)."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch

from negprompt_demo.models.previews import fill_previews
from negprompt_demo.page.tracefile import TraceStore
from negprompt_demo.sampling import attention
from negprompt_demo.sampling.attention import (
    MAX_MAP_BYTES,
    attention_probabilities,
    map_size_for,
    map_stride,
    text_words,
)
from negprompt_demo.sampling.engine import GenerationCancelled, compare
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views.visualize import curves_picture
from tests.support.paths import EMBEDDED_PRESENT

PROMPT, NEGATIVE, SEED, STEPS = "portrait photo of a man", "mustache, hat", 5, 4
ON = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, attention_maps=True)


@pytest.fixture(scope="module")
def sd_maps(sd_pipe):
    """The same comparison with the maps off and on."""
    return compare(sd_pipe, ON.replace(attention_maps=False)), compare(sd_pipe, ON)


def words(tokenizer, text: str, source: str = "negative") -> list[tuple[str, tuple[int, ...]]]:
    return [(word.text, word.positions) for word in text_words(tokenizer, text, source)]


def test_words_are_what_the_user_typed_with_all_their_tokens(sd_pipe):
    """The tiny tokenizer spells every letter as a token: a word is several tokens; punctuation and the start
    token belong to no word; edge punctuation is trimmed from the label but inner hyphens stay."""
    tokenizer = sd_pipe.tokenizer
    assert words(tokenizer, "hat, big-ears") == [("hat", (1, 2, 3)), ("big-ears", (5, 6, 7, 9, 10, 11, 12))]
    assert words(tokenizer, "a  a") == [("a", (1,)), ("a", (2,))]  # a repeated word is two chips
    assert words(tokenizer, "") == [] and words(tokenizer, " , ; ") == []
    long = " ".join(["abcd"] * 30)  # 120 letters: two chunks of 77 places (start, 75 tokens, end)
    found = words(tokenizer, long)
    assert len(found) == 30 and found[18] == ("abcd", (73, 74, 75, 78))  # the 19th word spans both chunks
    assert found[-1] == ("abcd", (119, 120, 121, 122))  # 45 tokens in chunk 2: places 78-122


def test_words_are_read_as_the_encoder_reads_a1111_syntax(sd_pipe):
    """Weights, brackets and BREAK are syntax: "(mustache:1.4)" is the word "mustache" at the places its tokens
    take in the chunk (not "(", ":", "1", "4"); a word after BREAK is in the second chunk (77 + 1 + j)."""
    tokenizer = sd_pipe.tokenizer
    assert words(tokenizer, "(mustache:1.4), [hat] BREAK glasses") == [
        ("mustache", tuple(range(1, 9))),
        ("hat", (10, 11, 12)),
        ("glasses", tuple(range(78, 85))),
    ]
    assert words(tokenizer, "\\(hat\\)") == [("hat", (2, 3, 4))]  # escaped: "(" is text (place 1)


def test_an_embeddings_trigger_word_owns_its_vectors(sd_pipe, tmp_path):
    """A three-vector embedding "badthing" in the negative: its word maps the three places the vectors take in
    the chunk, and the words after it keep their own places."""
    from safetensors.torch import save_file

    path = tmp_path / "badthing.safetensors"
    save_file({"emb_params": torch.randn(3, 32)}, str(path))
    plan = attention.plan_attention(
        sd_pipe, compare_settings(sd_pipe, negative="(badthing:1.2), hat", negative_embedding=str(path))
    )
    negative = [(word.text, word.positions) for word in plan.words if word.source == "negative"]
    assert negative == [("badthing", (1, 2, 3)), ("hat", (5, 6, 7))]  # place 4: the comma


@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="the embedded model is not in this checkout")
def test_words_with_the_real_clip_vocabulary():
    from transformers import AutoTokenizer

    from negprompt_demo.embedded import MODEL_DIR

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR / "tokenizer")
    assert words(tokenizer, "Portrait photo of a man.", "prompt") == [
        ("Portrait", (1,)),
        ("photo", (2,)),
        ("of", (3,)),
        ("a", (4,)),
        ("man", (5,)),
    ]
    assert words(tokenizer, "mustache, bad-anatomy über") == [
        ("mustache", (1,)),
        ("bad-anatomy", (3, 5)),
        ("über", (6, 7)),  # two BPE tokens, one word
    ]
    assert words(tokenizer, "(mustache:1.4), hat") == [("mustache", (1,)), ("hat", (3,))]


def test_probabilities_equal_diffusers_own_attention_scores(sd_pipe):
    layer = next(module for name, module in sd_pipe.unet.named_modules() if name.endswith("attn2"))
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 64, layer.to_q.in_features, generator=generator)
    context = torch.randn(3, 77, layer.to_k.in_features, generator=generator)
    with torch.no_grad():
        query = layer.head_to_batch_dim(layer.to_q(hidden))
        key = layer.head_to_batch_dim(layer.to_k(context))
        expected = layer.get_attention_scores(query, key).view(3, layer.heads, 64, 77)  # per head
        ours = attention_probabilities(layer, hidden, context)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours.sum(-1), torch.ones(3, layer.heads, 64))  # each head's row sums to 1


@pytest.mark.parametrize("pipe_name", ["sd_pipe", "sdxl_pipe"])
def test_images_and_trace_are_identical_with_maps_on_and_off(pipe_name, request):
    pipe = request.getfixturevalue(pipe_name)
    off = compare(pipe, ON.replace(attention_maps=False, guidance=5.0))
    on = compare(pipe, ON.replace(guidance=5.0))
    for name in ("without_negative", "with_negative"):
        assert np.array_equal(np.asarray(getattr(off, name)), np.asarray(getattr(on, name))), name
    assert on.trace.to_json()["steps"] == off.trace.to_json()["steps"]
    assert off.trace.attention is None and all(step.attention_maps is None for step in off.trace.steps)
    plan = on.trace.attention
    assert [(word.text, word.source) for word in plan.words] == [
        *(("mustache", "negative"), ("hat", "negative")),
        *(("portrait", "prompt"), ("photo", "prompt"), ("of", "prompt"), ("a", "prompt"), ("man", "prompt")),
    ]
    assert plan.map_size == (16, 16) and plan.recorded_steps == list(range(STEPS))
    for step in on.trace.steps:
        assert step.attention_maps.shape == (7, 16, 16) and step.attention_maps.dtype == torch.float16
        assert (step.attention_maps.float() > 0).all()
    if pipe_name == "sdxl_pipe":
        assert "SDXL" in plan.note and "both text encoders" in plan.note


def daam_rule_maps(pipe, settings: CompareSettings, plan, calls: list, mid_block: bool) -> list[torch.Tensor]:
    """DAAM 0.2.0's aggregation restated (castorini/daam `daam/hook.py`, `daam/trace.py`), per step: the
    cross-attention layers of the UNet's down and up blocks (the mid block only when asked); the attention
    probabilities of each head, from diffusers' own `get_attention_scores`; each (layer, head) map of a token
    upsampled bicubic to the map size and clamped at 0; the mean over all (layer, head) pairs; a word's map the
    mean over its tokens. With push_map off and the window open the batch is [negative ×2, text ×2], so the
    with-run's negative item is row 1 and its text item row 3. `calls`: (layer name, hidden, context) in order."""
    layers = {name for name, module in pipe.unet.named_modules() if name.endswith("attn2")}
    per_step = len(layers)
    wanted = ("down_blocks.", "up_blocks.", "mid_block.") if mid_block else ("down_blocks.", "up_blocks.")
    steps = []
    for step in range(settings.steps):
        sums, pairs = torch.zeros(len(plan.words), *plan.map_size), 0
        for name, hidden, context in calls[step * per_step : (step + 1) * per_step]:
            if not name.startswith(wanted):
                continue
            layer = pipe.unet.get_submodule(name)
            query = layer.head_to_batch_dim(layer.to_q(hidden))
            key = layer.head_to_batch_dim(layer.to_k(context))
            probabilities = layer.get_attention_scores(query, key).view(len(hidden), layer.heads, -1, 77)
            side = int(probabilities.shape[2] ** 0.5)
            pairs += layer.heads
            for index, word in enumerate(plan.words):
                row = 1 if word.source == "negative" else 3
                for position in word.positions:
                    maps = probabilities[row, :, :, position].reshape(layer.heads, 1, side, side)
                    upsampled = torch.nn.functional.interpolate(maps, plan.map_size, mode="bicubic").clamp(min=0)
                    sums[index] += upsampled.sum((0, 1)) / len(word.positions)
        steps.append(sums / pairs)
    return steps


def test_maps_equal_daams_rule_over_the_down_and_up_blocks_and_the_mid_block_is_an_option(sd_pipe):
    """DAAM leaves the UNet's mid block out: the default maps equal DAAM's aggregation over the down and up
    blocks' cross-attention; with `attention_mid_block` they equal it over all three, and differ. The images
    are the same with the maps off, on, and on with the mid block."""
    settings = ON.replace(steps=2, push_map=False, guidance=5.0)
    calls = []

    def keep(name):
        def hook(module, args, kwargs):
            calls.append((name, args[0].detach().clone(), kwargs["encoder_hidden_states"].detach().clone()))

        return hook

    handles = [
        module.register_forward_pre_hook(keep(name), with_kwargs=True)
        for name, module in sd_pipe.unet.named_modules()
        if name.endswith("attn2")
    ]
    try:
        results = {}
        for mid_block in (False, True):
            calls.clear()
            results[mid_block] = compare(sd_pipe, settings.replace(attention_mid_block=mid_block))
            plan = results[mid_block].trace.attention
            assert plan.mid_block is mid_block and plan.layers in plan.note
            with torch.no_grad():
                expected = daam_rule_maps(sd_pipe, settings, plan, calls, mid_block)
            for step, want in zip(results[mid_block].trace.steps, expected):
                torch.testing.assert_close(step.attention_maps.float(), want, rtol=2e-3, atol=2e-5)
    finally:
        for handle in handles:
            handle.remove()
    assert "down and up blocks (as DAAM)" in results[False].trace.attention.note
    assert "mid" in results[True].trace.attention.note and results[True].trace.to_json()["attention"]["mid_block"]
    daam, mid = (results[flag].trace.steps[-1].attention_maps.float() for flag in (False, True))
    assert (daam - mid).abs().max() > 0.01 * daam.max()  # the mid block changes the maps
    off = compare(sd_pipe, settings.replace(attention_maps=False))
    for name in ("without_negative", "with_negative"):
        for result in results.values():
            assert np.array_equal(np.asarray(getattr(off, name)), np.asarray(getattr(result, name))), name


def test_only_the_mapped_layers_get_the_recording_processor(sd_pipe):
    from negprompt_demo.sampling.attention import AttentionRecorder, RecordingProcessor, plan_attention
    from negprompt_demo.sampling.hooks import DenoiserCall

    for mid_block, expected in (
        (False, {"down_blocks", "up_blocks"}),
        (True, {"down_blocks", "up_blocks", "mid_block"}),
    ):
        plan = plan_attention(sd_pipe, compare_settings(sd_pipe, attention_mid_block=mid_block))
        with AttentionRecorder(sd_pipe.unet, plan, DenoiserCall()):
            swapped = {
                name.split(".")[0]
                for name, processor in sd_pipe.unet.attn_processors.items()
                if isinstance(processor, RecordingProcessor)
            }
            assert all("attn2" in name for name, processor in sd_pipe.unet.attn_processors.items()
                       if isinstance(processor, RecordingProcessor))  # fmt: skip
        assert swapped == expected


def compare_settings(pipe, **changes) -> CompareSettings:
    from negprompt_demo.sampling.engine import prepare

    return prepare(pipe, ON.replace(**changes)).settings


def test_negative_words_read_the_negative_branch_and_prompt_words_the_text_branch(sd_pipe):
    """With the negative equal to the prompt, the with-run's negative and text items are the same input: each
    word's map on the negative branch equals its map on the text branch. And while the negative's window is
    closed, its words get no map at all (that branch is the empty prompt's)."""
    same = compare(sd_pipe, CompareSettings(PROMPT, PROMPT, seed=SEED, steps=3, attention_maps=True))
    for step in same.trace.steps:
        negative, prompt = step.attention_maps[:5], step.attention_maps[5:]
        torch.testing.assert_close(negative, prompt, rtol=0, atol=0)
    late = compare(sd_pipe, ON.replace(negative_start=0.5))
    for step in late.trace.steps:
        negative_mass = step.attention_maps[:2].float().sum().item()
        assert (negative_mass > 0) == step.negative_active, step.index
        assert step.attention_maps[2:].float().sum() > 0  # the prompt's words are mapped at every step
    no_cfg = compare(sd_pipe, ON.replace(guidance=1.0, steps=2))  # no negative branch at all: the batch is text only
    for step in no_cfg.trace.steps:
        assert step.attention_maps[:2].float().sum() == 0 and (step.attention_maps[2:].float() > 0).all()


def test_processors_are_restored_after_a_run_and_after_an_error(sd_pipe):
    originals = sd_pipe.unet.attn_processors
    compare(sd_pipe, ON.replace(steps=2))
    assert all(sd_pipe.unet.attn_processors[name] is processor for name, processor in originals.items())
    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationCancelled):
        compare(sd_pipe, ON, stop=stop)
    assert all(sd_pipe.unet.attn_processors[name] is processor for name, processor in originals.items())


def test_memory_bound_holds_for_sdxl_at_1024_px():
    """150 words (two texts of 75 one-token words) at SDXL's 1024 px: maps at 64x64 (its largest
    cross-attention layer), every step kept while the maps fit in MAX_MAP_BYTES, else every k-th."""
    size = map_size_for((128, 128))
    assert size == (64, 64) and map_size_for((16, 16)) == (16, 16) and map_size_for((96, 160)) == (24, 40)
    for steps in (1, 20, 50, 150):
        stride = map_stride(150, size, steps)
        kept = len(range(0, steps, stride))
        assert kept * 150 * 64 * 64 * 2 <= MAX_MAP_BYTES, steps
        assert stride == 1 or len(range(0, steps, stride - 1)) * 150 * 64 * 64 * 2 > MAX_MAP_BYTES  # smallest
    assert map_stride(150, size, 20) == 1 and map_stride(150, size, 50) == 2 and map_stride(150, size, 150) == 6


def test_a_run_keeps_every_kth_step_within_the_bound(sd_pipe, monkeypatch, tmp_path):
    budget = 7 * 16 * 16 * 2 * 3  # room for three steps of the seven words' maps
    monkeypatch.setattr(attention, "MAX_MAP_BYTES", budget)
    result = compare(sd_pipe, ON.replace(steps=8))
    plan = result.trace.attention
    assert plan.stride == 3 and plan.recorded_steps == [0, 3, 6]
    kept = [step.attention_maps for step in result.trace.steps if step.attention_maps is not None]
    assert len(kept) == 3 and sum(maps.numel() * maps.element_size() for maps in kept) <= budget
    fill_previews(sd_pipe, result.trace.steps)
    store = TraceStore(tmp_path)
    trace_id = store.save(result.trace, curves_picture(result.trace))
    trace, _ = store.load(trace_id, 5)  # step 6 shows the map of step 4, the last kept before it
    assert trace.steps[3].attention_maps is not None and trace.steps[5].attention_maps is None
    assert np.array_equal(trace.steps[3].attention_maps.numpy(), result.trace.steps[3].attention_maps.numpy())
    assert np.array_equal(store.word_maps(trace_id, 1), np.stack([maps[1].numpy() for maps in kept]))


def test_maps_survive_the_trip_from_a_zerogpu_worker(sd_maps):
    record = sd_maps[1].trace.steps[0]
    copied = pickle.loads(pickle.dumps(record))
    assert torch.equal(copied.attention_maps, record.attention_maps)


def test_trace_json_lists_the_words_and_holds_the_maps(sd_maps):
    off, on = (result.trace.to_json() for result in sd_maps)
    assert "attention" not in off
    document = on["attention"]
    assert [word["word"] for word in document["words"]][:2] == ["mustache", "hat"]
    assert document["words"][0] == {"word": "mustache", "source": "negative", "token_positions": list(range(1, 9))}
    assert document["steps"] == [1, 2, 3, 4] and document["map_size"] == [16, 16] and document["stride"] == 1
    maps = np.array(document["maps"])
    assert maps.shape == (STEPS, 7, 16, 16)
    expected = sd_maps[1].trace.steps[2].attention_maps.float().numpy()
    assert np.allclose(maps[2], expected, atol=1e-4)
