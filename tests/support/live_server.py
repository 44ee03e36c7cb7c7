"""The Gradio app launched in this process on a free 127.0.0.1 port (the fixtures in tests/app/conftest.py use it)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_app(config, cache_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Launch the Gradio app for `config` on a free 127.0.0.1 port, examples cached under `cache_dir` and `env` set
    while it is built and launched; yields the URL and closes the server afterwards."""
    from negprompt_demo.page.app import build_app, launch_options

    with pytest.MonkeyPatch.context() as patch:  # examples cache in a temporary folder, not the working directory
        patch.setenv("GRADIO_EXAMPLES_CACHE", str(cache_dir))
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        demo = build_app(config)
        port = free_port()
        demo.launch(
            server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(config)
        )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
