"""SD3 and FLUX.1 with the views and inputs built for SD 1.x/2.x and SDXL: the many-seeds grid (its phrased third
column included), the reading of the negative prompt, and the A1111 syntax and negative embeddings they refuse."""

from __future__ import annotations

import re

import numpy as np
import pytest

from negprompt_demo.sampling.engine import compare, prepare
from negprompt_demo.sampling.many_seeds import new_grid, sample_grid
from negprompt_demo.settings import CompareSettings, InputError
from tests.support.tiny_models import NEGATIVE, PROMPT, SD3_GUIDANCE, TRUE_CFG

FAMILIES = [("sd3_pipe", SD3_GUIDANCE, "SD3"), ("flux_pipe", TRUE_CFG, "FLUX.1")]


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize(("pipe_name", "guidance", "name"), FAMILIES)
def test_every_grid_column_equals_its_own_run(request, pipe_name, guidance, name):
    pipe = request.getfixturevalue(pipe_name)
    settings = CompareSettings(PROMPT, NEGATIVE, seed=5, steps=3, guidance=guidance)
    prepared = prepare(pipe, settings)
    resolved = prepared.settings
    grid = sample_grid(pipe, prepared, new_grid(resolved, name, True), 3)
    assert grid.columns == ("without", "phrased", "with") and grid.seeds == [5, 6, 7]
    phrased_prompt = grid.prompts["phrased"][0]
    for i, seed in enumerate(grid.seeds):
        single = compare(pipe, settings.replace(seed=seed), trace=False)
        assert np.abs(pixels(grid.images["without"][i]) - pixels(single.without_negative)).max() <= 2
        assert np.abs(pixels(grid.images["with"][i]) - pixels(single.with_negative)).max() <= 2
        phrased = compare(pipe, settings.replace(seed=seed, prompt=phrased_prompt, negative=""), trace=False)
        assert np.abs(pixels(grid.images["phrased"][i]) - pixels(phrased.without_negative)).max() <= 2
    assert np.abs(pixels(grid.images["with"][0]) - pixels(grid.images["without"][0])).max() > 10
    assert np.abs(pixels(grid.images["phrased"][0]) - pixels(grid.images["without"][0])).max() > 2


@pytest.mark.parametrize(("pipe_name", "guidance", "name"), FAMILIES)
@pytest.mark.parametrize(
    "changes",
    [
        {"negative": "(mustache:1.3)"},
        {"prompt": f"{PROMPT} BREAK hat"},
        {"prompt": f"[{PROMPT}]"},
        {"negative_embedding": "EasyNegative.safetensors"},
    ],
)
def test_a1111_syntax_and_embeddings_are_refused(request, pipe_name, guidance, name, changes):
    pipe = request.getfixturevalue(pipe_name)
    settings = CompareSettings(PROMPT, NEGATIVE, seed=1, steps=2, guidance=guidance).replace(**changes)
    expected = f"A1111 weights / negative embeddings are for SD 1.x/2.x and SDXL; this {name} model reads the text"
    with pytest.raises(InputError, match=re.escape(expected)):
        prepare(pipe, settings)


@pytest.mark.parametrize(("pipe_name", "guidance", "name"), FAMILIES)
def test_the_negative_is_read_as_plain_text_in_t5_tokens(request, pipe_name, guidance, name):
    pipe = request.getfixturevalue(pipe_name)
    negative = "x" * 100  # past CLIP's 75 tokens, within T5's: no chunks, no note, only CLIP cuts
    result = compare(pipe, CompareSettings(PROMPT, negative, seed=1, steps=1, guidance=guidance), trace=False)
    reading = result.negative_reading
    assert reading.plain and len(reading.chunks) == 1 and reading.token_count >= 100
    assert reading.chunk_length == {"SD3": 255, "FLUX.1": 511}[name]  # what T5 reads, its end token left out
    assert reading.markdown().startswith("read as plain text:")
    assert not [warning for warning in result.warnings if "chunks" in warning or "for T5" in warning]
    clip_cut = [warning for warning in result.warnings if "were cut" in warning]
    assert len(clip_cut) == 1 and "T5 reads further and reads them" in clip_cut[0]
