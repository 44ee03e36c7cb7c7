"""The one live app for every test that talks to a server (here and in tests/browser/): the Gradio app on the tiny
SD model, launched in this process on a free 127.0.0.1 port, its example cache in a fresh temporary folder."""

from __future__ import annotations

import contextlib

import pytest

from tests.support.live_server import running_app


@pytest.fixture(scope="module")
def live_app(tiny_sd_folder, tmp_path_factory):
    """`live_app(env=None, **changes)` gives (url, config) of the app whose AppConfig is the tiny model's with
    `changes` (`concurrency=2`, `shared=True`, …) and `env` set while it starts. One server per distinct call,
    started on first use and closed at the end of the test module, so a module's tests share their servers and no
    module sees another's queue, example cache or visitors."""
    from negprompt_demo.page.app_config import AppConfig

    started: dict[str, tuple[str, AppConfig]] = {}
    with contextlib.ExitStack() as servers:

        def start(env: dict[str, str] | None = None, **changes) -> tuple[str, AppConfig]:
            key = repr((sorted(changes.items()), sorted((env or {}).items())))
            if key not in started:
                config = AppConfig(default_model=str(tiny_sd_folder), models=[str(tiny_sd_folder)], **changes)
                cache = tmp_path_factory.mktemp("cached_examples")
                started[key] = (servers.enter_context(running_app(config, cache, env)), config)
            return started[key]

        yield start


@pytest.fixture(scope="module")
def app_server(live_app):
    """The app as `python demo.py --model <tiny>` runs it: (url, config)."""
    return live_app()
