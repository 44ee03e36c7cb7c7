"""Images on the embedded model for a fixed set of settings, pinned by the hash of their pixels: a refactor (a new
layout, a new hook beside the guidance hook) must leave them bit-identical. When a change alters an image on
purpose, regenerate with `python -m tests.unit.sampling.test_golden_images` and say why in the commit."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest

from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings
from tests.support.paths import ROOT

GOLDEN = ROOT / "tests" / "support" / "golden" / "embedded_images.json"
PROMPT = "portrait photo of a man"
CASES = {
    "default": CompareSettings(PROMPT, "mustache", seed=3),
    "hat, other seed, Euler a": CompareSettings(PROMPT, "hat", seed=11, scheduler="Euler a", steps=12),
    "strength 2": CompareSettings(PROMPT, "mustache", seed=3, negative_strength=2.0, steps=10),
    "Perp-Neg": CompareSettings(PROMPT, "glasses", seed=5, perp_neg=True, steps=10),
    "no push map, guidance 4": CompareSettings(PROMPT, "mustache", seed=7, push_map=False, guidance=4.0, steps=10),
    "weighted negative": CompareSettings(PROMPT, "(mustache:1.3), hat", seed=9, steps=10),
    "attention maps on": CompareSettings(PROMPT, "mustache", seed=3, attention_maps=True, steps=8),
}


def image_hashes(settings: CompareSettings) -> dict[str, str]:
    result = compare(load_pipeline("embedded"), settings)
    return {
        run: hashlib.sha256(np.asarray(image, dtype=np.uint8).tobytes()).hexdigest()[:16]
        for run, image in (("without", result.without_negative), ("with", result.with_negative))
    }


@pytest.mark.parametrize("case", list(CASES))
def test_images_are_bit_identical_to_the_pinned_ones(case):
    pinned = json.loads(GOLDEN.read_text())
    assert image_hashes(CASES[case]) == pinned[case]


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({case: image_hashes(s) for case, s in CASES.items()}, indent=1) + "\n")
    sys.exit(0)
