"""Shared fixtures: tiny random-weight pipelines (built once per session) and a saved tiny model folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import tiny_sd_pipeline, tiny_sdxl_pipeline  # noqa: E402

EMBEDDED_PRESENT = (Path(__file__).parents[1] / "negprompt_demo/embedded/model/model_index.json").is_file()


@pytest.fixture(scope="session")
def sd_pipe(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_tokenizer"))


@pytest.fixture(scope="session")
def sdxl_pipe(tmp_path_factory):
    return tiny_sdxl_pipeline(tmp_path_factory.mktemp("tiny_sdxl_tokenizer"))


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory) -> Path:
    """A tiny SD-1.x model saved as a diffusers folder (safetensors), loadable with `--model <folder>`."""
    folder = tmp_path_factory.mktemp("tiny_sd_model")
    tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_tok2")).save_pretrained(folder)
    return folder
