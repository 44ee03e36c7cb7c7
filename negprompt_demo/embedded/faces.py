"""Procedural cartoon portraits, their ground-truth labels, and prompt-like captions.

The training data of the embedded model. Every portrait is drawn with Pillow at 128 px and
downsampled to 64 px (anti-aliased edges look more like photos than hard pixels do). Six binary
attributes are independent and present with probability 1/2 each, so a plain "portrait photo of
a man" covers faces with and without each of them, as in a real data set.

The captions follow three lessons from the feasibility runs (see docs/EMBEDDED.md):

1. mixed caption forms: full templates, bare attribute phrases ("mustache", "a red hat, glasses"),
   short subjects ("a man") and empty captions, so that a bare negative prompt is in distribution;
2. present attributes are mentioned rarely (MENTION_P), so the plain prompt still yields a real
   share of mustaches that a negative prompt can remove;
3. "without <attribute>" is inserted as filler regardless of the image, so negation is a known but
   uninformative word, as it is for CLIP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

ATTRIBUTES: tuple[str, ...] = ("mustache", "beard", "glasses", "hat", "earrings", "smile")
"""The binary attributes, in the order of the label vectors and of the probe's outputs."""

SIZE = 64
_DRAW = 128  # drawing resolution; downsampled to SIZE

MENTION_P = 0.2
WITHOUT_FILLER_P = 0.1

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 45, 45),
    "green": (60, 160, 70),
    "blue": (50, 90, 200),
    "yellow": (235, 205, 60),
    "purple": (130, 60, 170),
    "orange": (240, 140, 40),
    "pink": (240, 150, 190),
    "gray": (140, 140, 140),
    "white": (240, 240, 240),
    "black": (30, 30, 30),
}
BACKGROUNDS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "gray", "white")
HAT_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHIRT_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "gray", "white", "black")
HAIR: dict[str, tuple[int, int, int]] = {
    "black": (25, 22, 20),
    "brown": (100, 60, 30),
    "blond": (225, 190, 100),
    "red": (180, 70, 30),
    "gray": (150, 150, 150),
}
SKIN: tuple[tuple[int, int, int], ...] = ((250, 215, 185), (230, 180, 140), (190, 135, 95), (130, 85, 55))


# Pose jitter of draw_portrait, in drawing (128 px) pixels: x shift, y shift, face half-width change.
JITTER_X, JITTER_Y, JITTER_W = 4, 3, 3
_RESAMPLE_REACH = 3  # LANCZOS (a = 3) at a 2x reduction mixes source pixels up to 3 output pixels away


def _region(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """A 64 px box from the 128 px hull (inclusive pixels, face-width jitter already included) of some shapes."""
    low_x, low_y = (x0 - JITTER_X) // 2 - _RESAMPLE_REACH, (y0 - JITTER_Y) // 2 - _RESAMPLE_REACH
    high_x, high_y = (x1 + JITTER_X) // 2 + 1 + _RESAMPLE_REACH, (y1 + JITTER_Y) // 2 + 1 + _RESAMPLE_REACH
    return max(0, low_x), max(0, low_y), min(SIZE, high_x), min(SIZE, high_y)


ATTRIBUTE_REGIONS: dict[str, tuple[int, int, int, int]] = {
    "mustache": _region(44, 70, 84, 82),  # upper half of the chord (48, 70, 80, 84) and the two tips
    "beard": _region(33, 76, 95, 98),  # the chord (36 - w, 46, 92 + w, 98) from 10 to 170 degrees
    "glasses": _region(28, 50, 100, 68),  # two rims (ex ± 11, 50, 68), bridge, temples to 33 - w and 95 + w
    "hat": _region(23, 6, 105, 39),  # crown (44, 6, 84, 34) and brim (26 - w, 30, 102 + w, 39)
    "earrings": _region(27, 72, 101, 82),  # discs (ex ± 5, 72, 82) at ex = 35 - w and 93 + w
    "smile": _region(52, 70, 76, 94),  # the mouth: smile arc (52, 70, 76, 86) or frown arc (52, 80, 76, 94)
}
"""Per attribute, the box (x0, y0, x1, y1) of a SIZE px portrait that holds every pixel the attribute changes,
for any pose jitter; x1 and y1 are exclusive (numpy: image[y0:y1, x0:x1]).

Derived from draw_portrait's drawing code: the hull of the attribute's shapes at 128 px (face-width jitter w
included), widened by the shift jitter (±JITTER_X, ±JITTER_Y), halved to 64 px, and widened by the 3 pixels that
the LANCZOS downsampling spreads an edge over. tests/unit/embedded/test_faces.py checks it against redrawn
portraits. For "smile" the box is the mouth, which also holds the frown drawn when it is absent."""


@dataclass
class Portrait:
    """One drawn portrait: the image, its binary labels (ATTRIBUTES order) and the colours used."""

    image: Image.Image
    labels: dict[str, bool]
    background: str
    hair: str
    hat_colour: str


def _darker(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(c * f) for c in rgb)  # type: ignore[return-value]


def draw_portrait(rng: random.Random, labels: dict[str, bool] | None = None) -> Portrait:
    """Draw one random portrait; every attribute independently present with probability 1/2.

    `labels` overrides some of the coin flips (they are still drawn, so colours and jitter stay those of the
    same rng state): the same portrait with and without an attribute, as ATTRIBUTE_REGIONS' test compares."""
    labels = {a: rng.random() < 0.5 for a in ATTRIBUTES} | (labels or {})
    background = rng.choice(BACKGROUNDS)
    hair = rng.choice(tuple(HAIR))
    hat_colour = rng.choice([c for c in HAT_COLOURS if c != background])
    shirt = rng.choice([c for c in SHIRT_COLOURS if c != background])
    skin = rng.choice(SKIN)
    hair_rgb = HAIR[hair]
    facial_hair = _darker(hair_rgb, 0.55) if hair != "gray" else (95, 95, 95)

    img = Image.new("RGB", (_DRAW, _DRAW), COLOURS[background])
    dx, dy = rng.randint(-JITTER_X, JITTER_X), rng.randint(-JITTER_Y, JITTER_Y)  # small pose jitter
    w = rng.randint(-JITTER_W, JITTER_W)  # face width jitter
    pen = _Pen(ImageDraw.Draw(img), dx, dy, w)
    _draw_head(pen, COLOURS[shirt], skin, hair_rgb)
    _draw_features(pen, labels, skin, facial_hair)
    _draw_accessories(pen, labels, COLOURS[hat_colour])

    small = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return Portrait(small, labels, background, hair, hat_colour)


@dataclass(frozen=True)
class _Pen:
    """Draws on the large canvas with one portrait's pose jitter (`dx`, `dy`) and face width jitter (`w`)."""

    draw: ImageDraw.ImageDraw
    dx: int
    dy: int
    w: int

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (x0 + self.dx, y0 + self.dy, x1 + self.dx, y1 + self.dy)


def _draw_head(pen: _Pen, shirt: tuple, skin: tuple, hair_rgb: tuple) -> None:
    """Body, neck, hair behind the head, ears, face and fringe."""
    d, box, w = pen.draw, pen.box, pen.w
    d.ellipse(box(14, 104, 114, 170), fill=shirt)
    d.rectangle(box(54, 88, 74, 110), fill=_darker(skin, 0.92))
    d.ellipse(box(32 - w, 20, 96 + w, 78), fill=hair_rgb)
    d.ellipse(box(29 - w, 56, 41 - w, 74), fill=skin)
    d.ellipse(box(87 + w, 56, 99 + w, 74), fill=skin)
    d.ellipse(box(36 - w, 30, 92 + w, 98), fill=skin)
    d.chord(box(36 - w, 26, 92 + w, 62), 180, 360, fill=hair_rgb)  # fringe


def _draw_features(pen: _Pen, labels: dict[str, bool], skin: tuple, facial_hair: tuple) -> None:
    """Beard, eyes, glasses, nose, mouth and mustache, each drawn over what it covers."""
    d, box, dx, dy, w = pen.draw, pen.box, pen.dx, pen.dy, pen.w
    if labels["beard"]:  # jaw and chin in facial-hair colour
        d.chord(box(36 - w, 46, 92 + w, 98), 10, 170, fill=facial_hair)
        d.ellipse(box(52, 78, 76, 88), fill=skin)  # skin around the mouth
    # eyes
    for ex in (50, 78):
        d.ellipse(box(ex - 6, 55, ex + 6, 63), fill=(255, 255, 255))
        d.ellipse(box(ex - 3, 56, ex + 3, 62), fill=(40, 30, 30))
    if labels["glasses"]:
        for ex in (50, 78):
            d.ellipse(box(ex - 11, 50, ex + 11, 68), outline=(20, 20, 20), width=4)
        d.line([(61 + dx, 57 + dy), (67 + dx, 57 + dy)], fill=(20, 20, 20), width=4)
        d.line([(39 - w + dx, 57 + dy), (33 - w + dx, 60 + dy)], fill=(20, 20, 20), width=3)
        d.line([(89 + w + dx, 57 + dy), (95 + w + dx, 60 + dy)], fill=(20, 20, 20), width=3)
    d.ellipse(box(60, 64, 68, 74), fill=_darker(skin, 0.8))  # nose
    # mouth: an arc open upwards (smile) or downwards (frown)
    lips = (150, 40, 50)
    if labels["smile"]:
        d.arc(box(52, 70, 76, 86), 20, 160, fill=lips, width=4)
    else:
        d.arc(box(52, 80, 76, 94), 200, 340, fill=lips, width=4)
    if labels["mustache"]:
        d.chord(box(48, 70, 80, 84), 180, 360, fill=facial_hair)
        d.polygon([(48 + dx, 77 + dy), (44 + dx, 82 + dy), (54 + dx, 77 + dy)], fill=facial_hair)
        d.polygon([(80 + dx, 77 + dy), (84 + dx, 82 + dy), (74 + dx, 77 + dy)], fill=facial_hair)


def _draw_accessories(pen: _Pen, labels: dict[str, bool], hat: tuple) -> None:
    """Earrings and the hat, drawn last (the hat's brim covers the hair)."""
    d, box, w = pen.draw, pen.box, pen.w
    if labels["earrings"]:
        gold = (255, 200, 20)
        for ex in (35 - w, 93 + w):
            d.ellipse(box(ex - 5, 72, ex + 5, 82), fill=gold, outline=(150, 100, 0), width=1)
    if labels["hat"]:
        d.rectangle(box(44, 6, 84, 34), fill=hat)
        d.rectangle(box(26 - w, 30, 102 + w, 39), fill=hat)
        d.rectangle(box(44, 26, 84, 31), fill=_darker(hat, 0.6))  # band


def draw_non_face(rng: random.Random) -> Image.Image:
    """A SIZE x SIZE image with no face: blobs, stripes or a shuffled portrait (negatives for the probe)."""
    kind = rng.randrange(3)
    if kind == 0:  # shuffled 16 px tiles of a portrait: right colours, no face
        arr = np.asarray(draw_portrait(rng).image).copy()
        tiles = [arr[y : y + 16, x : x + 16].copy() for y in range(0, SIZE, 16) for x in range(0, SIZE, 16)]
        rng.shuffle(tiles)
        for i, t in enumerate(tiles):
            y, x = divmod(i, 4)
            arr[y * 16 : y * 16 + 16, x * 16 : x * 16 + 16] = t
        return Image.fromarray(arr)
    img = Image.new("RGB", (SIZE, SIZE), COLOURS[rng.choice(BACKGROUNDS)])
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 8)):
        colour = rng.choice(list(COLOURS.values()) + list(SKIN) + list(HAIR.values()))
        x0, y0 = rng.randint(-10, 60), rng.randint(-10, 60)
        x1, y1 = x0 + rng.randint(4, 50), y0 + rng.randint(4, 50)
        if kind == 1:
            d.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            d.rectangle((x0, y0, x1, y1), fill=colour)
    return img


# ---------------------------------------------------------------- captions


def _phrase(attr: str, p: Portrait, rng: random.Random, bare: bool = False) -> str:
    """How a caption names one attribute, e.g. "a red hat", "glasses" or (bare) "mustache"."""
    article = "" if bare and rng.random() < 0.5 else "a "
    if attr == "hat":
        colour = f"{p.hat_colour} " if rng.random() < 0.7 else ""
        return f"{article}{colour}hat"
    if attr == "smile":
        word = ("smiling", "smile") if p.labels["smile"] else ("frowning", "frown")
        return rng.choice([word[0], f"{article}{word[1]}"]) if bare else f"a {word[1]}"
    if attr in ("glasses", "earrings"):
        return attr
    return f"{article}{attr}"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


_SUBJECTS = (
    "portrait photo of a man",
    "a photo of a man",
    "portrait of a man",
    "a drawing of a man",
    "close-up portrait photo of a man",
    "photo of a man",
    "a man",
)
_SHORT = ("a man", "portrait", "a portrait", "man", "a photo of a man", "portrait photo")
_FILLER_WORDS = (
    "mustache",
    "beard",
    "glasses",
    "hat",
    "earrings",
    "a smile",
    "a frown",
    "a mustache",
    "a beard",
    "a hat",
    "a red hat",
    "a blue hat",
)


def caption(p: Portrait, rng: random.Random, mention_p: float = MENTION_P) -> str:
    """A random prompt-like caption of portrait p (55 % template, 25 % bare, 10 % short, 10 % empty).

    `mention_p` is the chance that a template names each present attribute (and the hair and background
    colours); training raises it for a while to bootstrap the text conditioning (train.py).
    """
    u = rng.random()
    if u < 0.10:
        return ""
    if u < 0.20:
        text = rng.choice(_SHORT)
    elif u < 0.45:  # bare phrases of present attributes (smile/frown always describable)
        present = [a for a in ATTRIBUTES if p.labels[a] or a == "smile"]
        chosen = [a for a in present if rng.random() < 0.5] or [rng.choice(present)]
        rng.shuffle(chosen)
        parts = [_phrase(a, p, rng, bare=True) for a in chosen]
        if rng.random() < 0.15:
            parts.append(f"{p.background} background")
        text = ", ".join(parts)
    else:
        mentioned = [a for a in ATTRIBUTES if (p.labels[a] or a == "smile") and rng.random() < mention_p]
        rng.shuffle(mentioned)
        phrases = [_phrase(a, p, rng) for a in mentioned]
        if rng.random() < mention_p:
            phrases.append(f"{p.hair} hair")
        text = rng.choice(_SUBJECTS)
        if phrases:
            text += " with " + _join(phrases)
        if rng.random() < max(0.3, mention_p):
            text += f", {p.background} background"
    if rng.random() < WITHOUT_FILLER_P:  # negation as meaningless filler: says nothing about the image
        text += " without " + rng.choice(_FILLER_WORDS)
    return text


def caption_vocabulary() -> frozenset[str]:
    """Every word `caption` can write: the only words the embedded model's text encoder was trained to mean. Its
    tokenizer is CLIP's, so any other word tokenizes fine but was never paired with an image."""
    texts = [*_SUBJECTS, *_SHORT, *_FILLER_WORDS, *ATTRIBUTES, *BACKGROUNDS, *HAT_COLOURS, *HAIR]
    texts += ["with and without a background hair smiling frowning smile frown hat"]
    return frozenset(word for text in texts for word in caption_words(text))


def caption_words(text: str) -> list[str]:
    """A text's words as `caption_vocabulary` counts them: lower case, punctuation dropped."""
    return "".join(ch if ch.isalnum() or ch == "-" else " " for ch in text.lower()).split()


def make_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[Portrait]]:
    """n portraits as (uint8 images N x 64 x 64 x 3, bool labels N x len(ATTRIBUTES), portraits)."""
    rng = random.Random(seed)
    portraits = [draw_portrait(rng) for _ in range(n)]
    images = np.stack([np.asarray(p.image) for p in portraits])
    labels = np.array([[p.labels[a] for a in ATTRIBUTES] for p in portraits], dtype=bool)
    return images, labels, portraits
