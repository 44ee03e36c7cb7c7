"""The built page (page/app.py): only /compare, /sweep and /seeds are public API, named like the settings fields; a
locked deployment shows no embedding upload."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

from negprompt_demo.page.app import build_app
from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.handlers import INPUT_NAMES
from tests.support.handler_calls import Session, collect, inputs, make, named


def test_only_compare_sweep_and_seeds_are_public_api(config):
    demo = build_app(config)
    api = demo.get_api_info()
    assert set(api["named_endpoints"]) == {"/compare", "/sweep", "/seeds"}
    assert not api.get("unnamed_endpoints")
    for endpoint in ("/compare", "/sweep", "/seeds"):  # named like the settings fields, declared once
        parameters = [parameter["parameter_name"] for parameter in api["named_endpoints"][endpoint]["parameters"]]
        extra = ["seed_count", "phrased"] if endpoint == "/seeds" else []
        assert parameters == [*INPUT_NAMES, *extra]


def embedding_upload(demo: gr.Blocks) -> gr.File:
    (upload,) = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "negative-embedding"]
    return upload


def test_locked_deployment_takes_no_embedding(tiny_sd_folder, tmp_path_factory):
    """A shared instance never opens a file a client names: no upload on the page, and the API refuses a path."""
    locked = AppConfig(default_model=str(tiny_sd_folder), models=[], lock_models=True)
    assert not embedding_upload(build_app(locked)).visible
    events = make(locked, tmp_path_factory)
    with pytest.raises(gr.Error, match="does not take negative embeddings"):
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, negative_embedding="/etc/passwd.safetensors")))
    (only,) = [
        named(values)
        for values in collect(
            events.compare_ui(Session(), **inputs(tiny_sd_folder, negative_embedding="x.safetensors"))
        )
    ]
    assert "does not take negative embeddings" in only["status"]
    assert asyncio.run(events.compare_api(**inputs(tiny_sd_folder, steps=1, negative_embedding="")))[2] == 7
