"""The article's point on the page's first screen: one seed three ways — no negative prompt, the negative phrased in
the prompt ("…without mustache") and the negative prompt — with one sentence that reads them.

The three images are real samples of the page's model: the first example's prompt, negative and seed through the
runner's many-seeds run (one batched call, the same engine as every other view), computed once per model before
the server starts and kept on disk beside the example cache (`examples.example_cache_folder`), so a restart reads
them back instead of sampling again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from negprompt_demo.runner import COLUMNS, SeedsDone, SeedsRequest, stream
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views.attributes import attribute_present, probed_attribute
from negprompt_demo.views.seed_pictures import column_titles


@dataclass
class Article:
    """One seed three ways (in the article's order, `many_seeds.COLUMNS`), each run's prompts and the reading."""

    pictures: dict[str, Path]  # column → PNG
    prompts: dict[str, list[str]]  # column → [prompt, negative prompt]
    seed: int
    reading: str

    def caption(self, column: str) -> str:
        prompt, negative = self.prompts[column]
        shown = f"“{prompt}”" + (f" · negative “{negative}”" if negative else " · no negative")
        return f"**{column_titles(self.prompts['with'][1])[column]}**<br><small>{shown}</small>"


def article_row(model: str, values: dict, folder: Path) -> Article:
    """The article row for the example inputs `values` (prompt, negative, seed and settings), read from `folder`
    when it was made before, else sampled now and written there."""
    index = folder / "article.json"
    if index.is_file():
        stored = json.loads(index.read_text(encoding="utf-8"))
        pictures = {column: folder / f"{column}.png" for column in COLUMNS}
        if all(path.is_file() for path in pictures.values()):
            return Article(pictures, stored["prompts"], stored["seed"], stored["reading"])
    job = SeedsRequest(CompareSettings(**values), count=1, phrased=True)
    grid = next(event.grid for event in stream(model, job) if isinstance(event, SeedsDone))
    folder.mkdir(parents=True, exist_ok=True)
    images = {column: grid.images[column][0] for column in COLUMNS}
    pictures = {column: folder / f"{column}.png" for column in COLUMNS}
    for column, image in images.items():
        image.save(pictures[column], format="PNG")
    prompts = {column: list(grid.prompts[column]) for column in COLUMNS}
    article = Article(pictures, prompts, grid.seeds[0], reading(grid.model, prompts["with"][1], images))
    stored = {"prompts": article.prompts, "seed": article.seed, "reading": article.reading}
    index.write_text(json.dumps(stored), encoding="utf-8")
    return article


def reading(model: str, negative: str, images: dict[str, Image.Image]) -> str:
    """One sentence that reads the row: with the embedded model's probe, what it sees in each image; otherwise
    what to look for (the sentence never claims what nobody measured)."""
    attribute = probed_attribute(model, negative)
    if attribute is None:
        return (
            f"The same seed three ways: writing “without {negative}” in the prompt still puts the word "
            f"“{negative}” in front of the text encoder, while the negative prompt is the direction guidance "
            "steps away from. Compare the middle image with the right one."
        )
    present = attribute_present(attribute, [images[column] for column in COLUMNS])
    seen = dict(zip(COLUMNS, present, strict=True))
    titles = column_titles(negative)
    said = "; ".join(f"{titles[column]}: {'a' if seen[column] else 'no'} {attribute}" for column in COLUMNS)
    if seen["without"] and seen["phrased"] and not seen["with"]:
        verdict = f"writing “without {negative}” in the prompt did not remove it, the negative prompt did."
    else:
        verdict = "on this seed the three do not split as in the article's case; Many seeds below counts it over 16."
    return f"The attribute probe sees {said} — {verdict}"
