"""What the embedded model's attribute probe sees in images, for the views that can say "the mustache is gone".

Only the embedded model has a probe (it knows the attributes its procedural training portraits had); for any other
model these return nothing and the views fall back to image distances.
"""

from __future__ import annotations

import functools

from PIL import Image

from negprompt_demo.embedded.faces import ATTRIBUTES

EMBEDDED = "embedded"  # loading.EMBEDDED: the model label of the shipped model


def probed_attribute(model: str, negative: str) -> str | None:
    """The attribute of the embedded model's probe that a negative prompt names, if any."""
    if model != EMBEDDED:
        return None
    words = negative.lower().replace(",", " ").split()
    return next((attribute for attribute in ATTRIBUTES if attribute in words), None)


def attribute_present(attribute: str, images: list[Image.Image]) -> list[bool]:
    """Whether the probe sees `attribute` in each image."""
    return [bool(flag) for flag in _probe().predict(images)[attribute]]


@functools.cache
def _probe():
    from negprompt_demo.embedded.probe import Probe

    return Probe()


def sweep_reading(sweep) -> tuple[list[str] | None, str]:
    """Marks under a sweep's images and its reading (`visualize.describe_sweep`): with the probe when the
    negative names an attribute it knows, else by image distance."""
    from negprompt_demo.visualize import describe_sweep

    attribute = probed_attribute(sweep.model, sweep.settings.negative)
    if attribute is None:
        return None, describe_sweep(sweep)
    present = attribute_present(attribute, [sweep.without_negative, *sweep.with_negative])
    marks = [f"{attribute}: {'yes' if flag else 'no'}" for flag in present]
    return marks, describe_sweep(sweep, present, attribute)
