"""Where things lie, for tests that start a fresh interpreter or read a repository file."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: what a fresh interpreter needs on PYTHONPATH
EMBEDDED_PRESENT = (ROOT / "negprompt_demo/embedded/model/model_index.json").is_file()
