"""The page's examples: their rows, the folder of their lazy cache (one per model weights and code) and warming
the first one before the server starts."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from unittest import mock

import gradio as gr

from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.handlers import EXAMPLE_NAMES, UI_OUTPUTS
from negprompt_demo.settings import DEFAULTS

EXAMPLES_FILE = Path(__file__).resolve().parents[2] / "examples" / "examples.json"


def example_rows(path: Path, defaults: dict, model: str) -> tuple[list[list], list[str]]:
    """Example rows in `EXAMPLE_NAMES` order, and their labels. Inputs an example leaves out take the page's
    defaults (the model's steps, guidance, scheduler and size), so an example shows what the defaults do."""
    entries = json.loads(path.read_text(encoding="utf-8"))["examples"]
    page_defaults = {**DEFAULTS, "model": model, "seed": 0, "negative_embedding": None, **defaults}
    rows = [[entry.get(name, page_defaults[name]) for name in EXAMPLE_NAMES] for entry in entries]
    return rows, [entry.get("label", entry["prompt"]) for entry in entries]


def example_cache_folder(label: str, fingerprint: bytes) -> Path:
    """Where Gradio keeps the lazily cached examples and their step-view traces: one folder per model (its `label`
    and `runner.weights_fingerprint`), examples file and app code, so a retrained model, edited examples or changed
    drawing code never show stale results."""
    digest = hashlib.sha256()
    digest.update(f"{label}\n".encode())
    for source in sorted(Path(__file__).parents[1].rglob("*.py")):  # the code that computes and draws every output
        digest.update(source.read_bytes())
    digest.update(fingerprint)
    digest.update(EXAMPLES_FILE.read_bytes())
    base = Path(os.environ.get("GRADIO_EXAMPLES_CACHE", ".gradio/cached_examples"))
    return base / f"negprompt-{digest.hexdigest()[:16]}"


def examples_section(events, inputs: dict, shown: dict, defaults: dict, config: AppConfig, cache: Path):
    """The examples under the Compare button, lazily cached on disk in `cache` (see `example_cache_folder`)."""
    rows, labels = example_rows(EXAMPLES_FILE, defaults, config.default_model)
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(cache)}):  # Gradio reads its folder from here
        return gr.Examples(
            rows,
            [inputs[name] for name in EXAMPLE_NAMES],
            [shown[name] for name in UI_OUTPUTS],
            fn=cacheable(events.compare_example),
            cache_examples=True,
            cache_mode="lazy",
            example_labels=labels,
            label="examples (click one)",
            api_visibility="private",
        )


def cacheable(compute):
    """`compute` for Gradio's example cache, with every output that has no value (an image not recorded, such as the
    attention maps of an example without them) returned as an explicit `gr.update(value=None)`.

    Why: Gradio 6's cache writes a bare None as an empty CSV cell and reads a file component's cell back with
    `json.loads`, which fails on "" (JSONDecodeError in `read_from_flag`), so the example failed on every click and
    after every restart. An update is written as its Python literal and read back as the same update."""

    async def compute_for_cache(*values) -> tuple:
        return tuple(gr.update(value=None) if value is None else value for value in await compute(*values))

    return compute_for_cache


def warm_example(examples: gr.Examples, index: int) -> None:
    """Fill Gradio's lazy cache for one example, exactly as a first click would (same lock, same files)."""
    print(f"Preparing example {index + 1} (computed once per model, then served from the cache)…", flush=True)
    try:
        examples.load_from_cache(index)
    except Exception as error:  # a failing example must not stop the app; clicking it shows the message
        print(f"warning: could not pre-compute example {index + 1}: {error}", file=sys.stderr)
