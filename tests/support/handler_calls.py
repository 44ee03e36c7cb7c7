"""Calling the page's event functions directly, as Gradio would (no server): the inputs of a comparison, the
request's session, a Handlers object with its own folders, and the outputs by name."""

from __future__ import annotations

import asyncio

import numpy as np
from PIL import Image

from negprompt_demo.page import handlers
from negprompt_demo.page.handlers import UI_OUTPUTS
from negprompt_demo.page.tracefile import TraceStore

STEPS = 4


def inputs(folder, **changes) -> dict:
    values = {
        "prompt": "a red hat",
        "negative": "blue",
        "seed": 7,
        "steps": STEPS,
        "guidance": 7.5,
        "scheduler": "Euler",
        "width": 32,
        "height": 32,
        "model": str(folder),
        "push_map": True,
    }
    values.update(changes)
    return values


class Session:
    """What gr.Request gives a handler: the browser session's id."""

    def __init__(self, session_hash: str = "session-a"):
        self.session_hash = session_hash


def make(config, tmp_path_factory) -> handlers.Handlers:
    folder = tmp_path_factory.mktemp("app")
    (folder / "jobs").mkdir()
    return handlers.Handlers(config, TraceStore(folder / "runs", folder / "examples"), folder / "jobs")


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def collect(agen) -> list:
    async def run():
        return [item async for item in agen]

    return asyncio.run(run())


def named(values: tuple, names=UI_OUTPUTS) -> dict:
    """Outputs by name, without the ones left unchanged."""
    return {name: value for name, value in zip(names, values, strict=True) if not is_skip(value)}


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1
