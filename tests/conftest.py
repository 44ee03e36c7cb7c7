"""Shared fixtures: tiny random-weight pipelines (built once per session) and a saved tiny model folder."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline  # noqa: E402

from negprompt_demo.models.loading import limit_cpu_threads  # noqa: E402

# The app's CPU thread policy (all cores but one, docs/BENCHMARKS.md "CPU threads") from the first test on, not
# only once some test has gone through `load_pipeline`: on a small machine shared with other work, a full team of
# OpenMP threads makes every comparison several times slower, and which tests happened to run first would decide it.
limit_cpu_threads()

EMBEDDED_PRESENT = (Path(__file__).parents[1] / "negprompt_demo/embedded/model/model_index.json").is_file()


@pytest.fixture(scope="session")
def sd_pipe(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_tokenizer"))


@pytest.fixture(scope="session")
def sdxl_pipe(tmp_path_factory):
    return tiny_sdxl_pipeline(tmp_path_factory.mktemp("tiny_sdxl_tokenizer"))


@pytest.fixture(scope="session")
def sd3_pipe(tmp_path_factory):
    return tiny_sd3_pipeline(tmp_path_factory.mktemp("tiny_sd3_tokenizer"))


@pytest.fixture(scope="session")
def flux_pipe(tmp_path_factory):
    return tiny_flux_pipeline(tmp_path_factory.mktemp("tiny_flux_tokenizer"))


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory) -> Path:
    """A tiny SD-1.x model saved as a diffusers folder (safetensors), loadable with `--model <folder>`."""
    folder = tmp_path_factory.mktemp("tiny_sd_model")
    tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_tok2")).save_pretrained(folder)
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_app(config, cache_dir: Path):
    """Launch the Gradio app for `config` on a free 127.0.0.1 port, examples cached under `cache_dir`; yields the
    URL and closes the server afterwards."""
    from negprompt_demo.page.app import build_app, launch_options

    with pytest.MonkeyPatch.context() as patch:  # examples cache in a temporary folder, not the working directory
        patch.setenv("GRADIO_EXAMPLES_CACHE", str(cache_dir))
        demo = build_app(config)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(config)
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def app_server(tiny_sd_folder, tmp_path_factory):
    """The Gradio app on the tiny SD model, launched on 127.0.0.1 for one test module: yields (url, config)."""
    from negprompt_demo.page.app_config import AppConfig

    config = AppConfig(default_model=str(tiny_sd_folder), models=[str(tiny_sd_folder)])
    with running_app(config, tmp_path_factory.mktemp("cached_examples")) as url:
        yield url, config
