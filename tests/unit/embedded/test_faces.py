"""The drawn portraits and their captions (embedded/faces.py): every pixel an attribute changes lies in its box
(ATTRIBUTE_REGIONS, checked on redrawn portraits), attributes are independent coin flips, captions mix forms with
negation as filler, and the caption vocabulary holds every word a caption can write."""

from __future__ import annotations

import random

import numpy as np
import pytest

from negprompt_demo.embedded.faces import (
    ATTRIBUTE_REGIONS,
    ATTRIBUTES,
    SIZE,
    caption,
    caption_vocabulary,
    caption_words,
    draw_portrait,
    make_dataset,
)

PORTRAITS = 200


def _redrawn(state: tuple, labels: dict[str, bool]) -> np.ndarray:
    """The portrait drawn from rng state `state` with some labels overridden, as int pixels."""
    rng = random.Random()
    rng.setstate(state)
    return np.asarray(draw_portrait(rng, labels).image).astype(int)


@pytest.fixture(scope="module")
def portraits() -> list[tuple[tuple, np.ndarray, dict[str, bool]]]:
    """(rng state before drawing, image, labels) of the first PORTRAITS portraits of make_dataset(seed=3)."""
    rng = random.Random(3)
    drawn = []
    for _ in range(PORTRAITS):
        state = rng.getstate()
        portrait = draw_portrait(rng)
        drawn.append((state, np.asarray(portrait.image).astype(int), portrait.labels))
    images, _, _ = make_dataset(PORTRAITS, seed=3)
    assert np.array_equal(images, np.stack([image for _, image, _ in drawn]))  # the same portraits as the data
    return drawn


def test_boxes_are_inside_the_image_and_cover_every_attribute():
    assert set(ATTRIBUTE_REGIONS) == set(ATTRIBUTES)
    for x0, y0, x1, y1 in ATTRIBUTE_REGIONS.values():
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        assert (x1 - x0) * (y1 - y0) < 0.4 * SIZE * SIZE  # a box, not the whole image


def test_redrawing_with_the_drawn_labels_gives_the_same_portrait(portraits):
    state, image, labels = portraits[0]
    assert np.array_equal(_redrawn(state, dict(labels)), image)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_the_pixels_an_attribute_changes_lie_in_its_box(portraits, attribute):
    x0, y0, x1, y1 = ATTRIBUTE_REGIONS[attribute]
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[y0:y1, x0:x1] = False
    checked = 0
    for state, image, labels in portraits:
        if not labels[attribute]:
            continue
        changed = np.abs(image - _redrawn(state, {attribute: False})).max(axis=-1) > 0
        assert changed.sum() > 10, "the attribute is drawn"
        assert not (changed & outside).any(), f"{attribute} changes pixels outside {ATTRIBUTE_REGIONS[attribute]}"
        checked += 1
    assert checked > PORTRAITS // 3


def test_portrait_attributes_are_independent_coin_flips():
    _, labels, _ = make_dataset(400, seed=7)
    rates = labels.mean(0)
    assert ((rates > 0.4) & (rates < 0.6)).all(), dict(zip(ATTRIBUTES, rates))
    corr = np.corrcoef(labels.T.astype(float))
    assert np.abs(corr[np.triu_indices(len(ATTRIBUTES), 1)]).max() < 0.2


@pytest.mark.slow  # 6000 drawn portraits
def test_captions_mix_forms_and_negation_is_filler():
    rng = random.Random(3)
    portraits = [draw_portrait(rng) for _ in range(6000)]
    caps = [caption(p, rng) for p in portraits]
    assert 0.06 < sum(c == "" for c in caps) / len(caps) < 0.14  # unconditional share for CFG
    assert "mustache" in caps or any(c.startswith("mustache") for c in caps)  # bare phrases exist
    # "without X" says nothing about X: the mustache rate is the same with and without it
    with_filler = [p.labels["mustache"] for p, c in zip(portraits, caps, strict=True) if "without" in c]
    assert 400 < len(with_filler) < 700
    assert 0.35 < np.mean(with_filler) < 0.65
    # the plain prompt covers faces with and without a mustache
    plain = [p.labels["mustache"] for p, c in zip(portraits, caps, strict=True) if c == "portrait photo of a man"]
    assert len(plain) > 60 and 0.3 < np.mean(plain) < 0.55


def test_the_caption_vocabulary_holds_every_word_a_caption_can_write():
    rng = random.Random(0)
    vocabulary = caption_vocabulary()
    for _ in range(3000):
        words = caption_words(caption(draw_portrait(rng), rng))
        assert set(words) <= vocabulary, set(words) - vocabulary
    assert {"mustache", "hat", "without", "purple"} <= vocabulary and "blurry" not in vocabulary
