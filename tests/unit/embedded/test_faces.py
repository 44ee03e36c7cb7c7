"""faces.ATTRIBUTE_REGIONS: every pixel an attribute changes lies in its box, checked on redrawn portraits."""

from __future__ import annotations

import random

import numpy as np
import pytest

from negprompt_demo.embedded.faces import ATTRIBUTE_REGIONS, ATTRIBUTES, SIZE, draw_portrait, make_dataset

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
