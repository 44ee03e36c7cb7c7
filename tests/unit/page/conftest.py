"""The page's configuration for the page tests: the tiny SD model, unlocked (as `python demo.py --model <tiny>`)."""

from __future__ import annotations

import pytest

from negprompt_demo.page.app_config import AppConfig


@pytest.fixture(scope="module")
def config(tiny_sd_folder) -> AppConfig:
    return AppConfig(default_model=str(tiny_sd_folder), models=[str(tiny_sd_folder)])
