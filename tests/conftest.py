"""Fixtures for every test: tiny random-weight pipelines (built once per session) and a saved tiny model folder.
The live app's fixtures are in tests/app/conftest.py; plain helpers in tests/support/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

from negprompt_demo.models.loading import limit_cpu_threads  # noqa: E402
from tests.support.tiny_models import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline  # noqa: E402

# The app's CPU thread policy (all cores but one, docs/BENCHMARKS.md "CPU threads") from the first test on, not
# only once some test has gone through `load_pipeline`: on a small machine shared with other work, a full team of
# OpenMP threads makes every comparison several times slower, and which tests happened to run first would decide it.
limit_cpu_threads()


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
