"""The live app for every test that talks to a server (here and in tests/browser/)."""

from __future__ import annotations

import pytest

from tests.support.live_server import running_app


@pytest.fixture(scope="module")
def app_server(tiny_sd_folder, tmp_path_factory):
    """The Gradio app on the tiny SD model, launched on 127.0.0.1 for one test module: yields (url, config)."""
    from negprompt_demo.page.app_config import AppConfig

    config = AppConfig(default_model=str(tiny_sd_folder), models=[str(tiny_sd_folder)])
    with running_app(config, tmp_path_factory.mktemp("cached_examples")) as url:
        yield url, config
