"""Negative textual-inversion embeddings: small files made here, equal to diffusers' own loading, no leak into a
later run, SDXL's two encoders, and a clear message for every bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from negprompt_demo.sampling.engine import compare, prepare
from negprompt_demo.settings import CompareSettings, InputError
from tests.support.tiny_models import tiny_sd_pipeline, tiny_sdxl_pipeline

PROMPT, SEED, STEPS, WIDTH = "portrait photo of a man", 1234, 4, 32


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def embedding_file(folder, name: str, tensors: dict) -> str:
    path = folder / f"{name}.safetensors"
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path))
    return str(path)


def vectors(count: int, width: int = WIDTH, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed)) * 3


def plain_call(pipe, negative: str, guidance: float = 7.5) -> np.ndarray:
    image = pipe(
        prompt=PROMPT,
        negative_prompt=negative,
        generator=torch.Generator().manual_seed(SEED),
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        width=32,
        height=32,
        output_type="np",
    ).images[0]
    return (image * 255).round().astype(np.int16)


def text_state(pipe) -> tuple:
    """What an embedding could leave behind: vocabulary sizes, token-embedding shapes and values, hooks."""
    state = []
    for name in ("text_encoder", "text_encoder_2"):
        encoder, tokenizer = getattr(pipe, name, None), getattr(pipe, name.replace("text_encoder", "tokenizer"), None)
        if encoder is not None:
            table = encoder.get_input_embeddings()
            state += [len(tokenizer), tuple(table.weight.shape), float(table.weight.sum()), len(table._forward_hooks)]
    return tuple(state)


@pytest.mark.parametrize("count", [1, 3])
def test_sd_embedding_equals_diffusers_load_textual_inversion_and_does_not_leak(sd_pipe, tmp_path, count):
    path = embedding_file(tmp_path, "badhand", {"emb_params": vectors(count)})
    negative = "badhand, blurry"
    before = text_state(sd_pipe)
    settings = CompareSettings(PROMPT, negative, seed=SEED, steps=STEPS, negative_embedding=path)
    result = compare(sd_pipe, settings)
    # (a) the embedding acts: the same negative text without it reads "badhand" as letters
    text_only = compare(sd_pipe, settings.replace(negative_embedding=""))
    assert np.abs(pixels(result.with_negative) - pixels(text_only.with_negative)).max() > 2
    assert np.array_equal(pixels(result.without_negative), pixels(text_only.without_negative))
    # (c) nothing stays in the shared pipeline
    assert text_state(sd_pipe) == before
    # (b) what diffusers gives with the embedding loaded into a pipeline of the same weights (a lower-case token,
    # which it expands); a copy, because diffusers' unload_textual_inversion changes how the tokenizer decodes
    reference = tiny_sd_pipeline(tmp_path / "reference")
    reference.load_textual_inversion(vectors(count), token="badhand")
    assert np.abs(pixels(result.with_negative) - plain_call(reference, negative)).max() <= 2
    # (c) a following run without the embedding is a fresh plain call's
    after = compare(sd_pipe, CompareSettings(PROMPT, negative, seed=SEED, steps=STEPS))
    assert np.abs(pixels(after.with_negative) - plain_call(sd_pipe, negative)).max() <= 2
    reading = result.negative_reading
    expected_span = f"badhand: {count} vector{'s' * (count > 1)}"
    assert reading.chunks[0][0].embedding and reading.chunks[0][0].text == expected_span
    assert reading.token_count == count + len(", blurry".replace(" ", ""))


def test_trigger_matches_whole_words_in_any_case_and_takes_weights(sd_pipe, tmp_path):
    """A1111 reads the trigger word in any case; every vector is used (diffusers 0.42 with transformers 5 expands a
    mixed-case trigger to its first vector only)."""
    lower = embedding_file(tmp_path, "badhand", {"emb_params": vectors(3)})
    mixed_folder = tmp_path / "mixed"
    mixed_folder.mkdir()
    mixed = embedding_file(mixed_folder, "BadHand", {"emb_params": vectors(3)})
    base = CompareSettings(PROMPT, "badhand, blurry", seed=SEED, steps=STEPS, negative_embedding=lower)
    one = compare(sd_pipe, base, trace=False)
    other = compare(sd_pipe, base.replace(negative="BADHAND, blurry", negative_embedding=mixed), trace=False)
    assert np.array_equal(pixels(one.with_negative), pixels(other.with_negative))
    weighted = compare(sd_pipe, base.replace(negative="(badhand:1.5), blurry"), trace=False)
    assert np.abs(pixels(weighted.with_negative) - pixels(one.with_negative)).max() > 2
    assert weighted.negative_reading.chunks[0][0].weight == 1.5
    inside_a_word = compare(sd_pipe, base.replace(negative="xbadhand, blurry"), trace=False)  # token ids, as A1111
    assert any(span.embedding for span in inside_a_word.negative_reading.chunks[0])
    split_otherwise = compare(sd_pipe, base.replace(negative="badhands, blurry"), trace=False)  # "d" ≠ "d</w>"
    assert split_otherwise.negative_reading.plain


def test_triggers_are_found_by_token_ids_as_a1111_does():
    """A1111 looks for the name's token ids in the text's (CLIP's tokenizer, from the embedded model): a name
    inside a longer word is found where the word's tokens hold the name's, not where BPE splits it otherwise."""
    from pathlib import Path

    from transformers import CLIPTokenizer

    import negprompt_demo.embedded
    from negprompt_demo.models.embeddings import NegativeEmbedding, trigger_in

    tokenizer = CLIPTokenizer.from_pretrained(Path(negprompt_demo.embedded.__file__).parent / "model" / "tokenizer")
    named = lambda name: NegativeEmbedding(name, {}, Path(name))  # noqa: E731
    for name, text in [
        ("EasyNegative", "EasyNegative"),
        ("EasyNegative", "blurry, EASYNEGATIVE"),
        ("EasyNegative", "EasyNegative2"),
        ("EasyNegative", "_EasyNegative"),
        ("EasyNegative", "xEasyNegative"),
        ("bad-hands-5", "bad-hands-5x"),
        ("badhandv4", "badhandv4s"),
    ]:
        assert trigger_in(tokenizer, text, named(name)), (name, text)
    for name, text in [("EasyNegative", "EasyNegativeé"), ("EasyNegative", "easy negative"), ("badhandv4", "badhand")]:
        assert not trigger_in(tokenizer, text, named(name)), (name, text)


def test_sdxl_embedding_clip_l_and_clip_g(sdxl_pipe, tmp_path):
    path = embedding_file(tmp_path, "badhand", {"clip_l": vectors(2, seed=1), "clip_g": vectors(2, seed=2)})
    negative = "badhand, blurry"
    before = text_state(sdxl_pipe)
    result = compare(sdxl_pipe, CompareSettings(PROMPT, negative, seed=SEED, steps=STEPS, guidance=5.0,
                                                 negative_embedding=path))  # fmt: skip
    assert text_state(sdxl_pipe) == before
    reference = tiny_sdxl_pipeline(tmp_path / "reference")  # the same weights; diffusers' loading changes it
    for vector, encoder, tokenizer in (
        (vectors(2, seed=1), reference.text_encoder, reference.tokenizer),
        (vectors(2, seed=2), reference.text_encoder_2, reference.tokenizer_2),
    ):
        reference.load_textual_inversion(vector, token="badhand", text_encoder=encoder, tokenizer=tokenizer)
    assert np.abs(pixels(result.with_negative) - plain_call(reference, negative, guidance=5.0)).max() <= 2


def test_missing_trigger_warns(sd_pipe, tmp_path):
    path = embedding_file(tmp_path, "EasyNegative", {"emb_params": vectors(2)})
    warnings = prepare(sd_pipe, CompareSettings(PROMPT, "blurry", steps=2, negative_embedding=path)).warnings
    assert any("trigger word EasyNegative is not in the negative prompt" in warning for warning in warnings)


def bad_files(tmp_path) -> list[tuple[str, str]]:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file")
    pickle_file = tmp_path / "EasyNegative.pt"
    torch.save({"emb_params": vectors(1)}, pickle_file)
    spaced = tmp_path / "my emb.safetensors"
    save_file({"emb_params": vectors(1)}, str(spaced))
    return [
        (str(garbage), "is not a readable safetensors file"),
        (embedding_file(tmp_path, "narrow", {"emb_params": vectors(2, width=16)}), "vectors of width 32"),
        (embedding_file(tmp_path, "xl", {"clip_l": vectors(1), "clip_g": vectors(1)}), "is an SDXL embedding"),
        (embedding_file(tmp_path, "two", {"a": vectors(1), "b": vectors(1)}), "not a textual-inversion embedding"),
        (embedding_file(tmp_path, "many", {"emb_params": vectors(76)}), "1–75 vectors"),
        (embedding_file(tmp_path, "nan", {"emb_params": torch.full((1, WIDTH), float("nan"))}), "NaN"),
        (str(pickle_file), "pickle files are refused"),
        (str(tmp_path / "bad.bin"), "pickle files are refused"),
        (str(spaced), "rename the file"),
        (str(tmp_path / "missing.safetensors"), "does not exist"),
        ("notes.txt", "must be a .safetensors file"),
        ("gsdf/EasyNegative/EasyNegative.safetensors", "Hub cannot be reached"),  # tests run offline
    ]


def test_bad_files_get_clear_messages(sd_pipe, tmp_path):
    before = text_state(sd_pipe)
    for source, message in bad_files(tmp_path):
        with pytest.raises(InputError, match=message):
            prepare(sd_pipe, CompareSettings(PROMPT, "x", steps=2, negative_embedding=source))
    assert text_state(sd_pipe) == before
    ok = compare(sd_pipe, CompareSettings(PROMPT, "mustache", seed=SEED, steps=STEPS), trace=False)
    assert np.abs(pixels(ok.with_negative) - plain_call(sd_pipe, "mustache")).max() <= 2


def test_sd_embedding_refused_by_sdxl(sdxl_pipe, tmp_path):
    path = embedding_file(tmp_path, "badhand", {"emb_params": vectors(1)})
    with pytest.raises(InputError, match="not an SDXL embedding"):
        prepare(sdxl_pipe, CompareSettings(PROMPT, "badhand", steps=2, negative_embedding=path))
