"""Every example row caches and reloads: on a fresh cache folder and again after a restart on the same folder.

Gradio's lazy example cache writes each output to a CSV cell and reads it back per component; an output with no
value (e.g. the attention maps of an example that does not record them) once came back as a JSONDecodeError, so
every example but the first failed on every click, and kept failing after a restart. Each "start" here is a new
process, as a restart is (Gradio names the cache's subfolder after the example list's component id)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

CLICK_EVERY_EXAMPLE = """
import json, sys
from negprompt_demo.page.app import build_app
from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.handlers import UI_OUTPUTS
model = sys.argv[1]
examples = build_app(AppConfig(default_model=model, models=[model])).page_examples
shown = []
for index in range(len(examples.examples)):
    outputs = dict(zip(UI_OUTPUTS, examples.load_from_cache(index), strict=True))
    shown.append({
        "images": [outputs[name].path for name in ("image_without", "image_with")],
        "status": outputs["status"],
        "trace_id": outputs["trace_id"],
        "attention": outputs["attention"] if isinstance(outputs["attention"], dict) else "picture",
    })
print("RESULT " + json.dumps(shown))
"""


def start_and_click_every_example(model: Path, cache: Path) -> list[dict]:
    env = {**os.environ, "GRADIO_EXAMPLES_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CLICK_EVERY_EXAMPLE, str(model)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow
def test_every_example_caches_and_reloads_after_a_restart(tiny_sd_folder, tmp_path):
    cache = tmp_path / "cache"
    first = start_and_click_every_example(tiny_sd_folder, cache)
    again = start_and_click_every_example(tiny_sd_folder, cache)  # a restart on the same cache folder
    assert len(first) >= 4
    for before, after in zip(first, again, strict=True):
        assert all(Path(path).is_file() for path in before["images"] + after["images"])
        assert "Done in" in before["status"]
        assert after == before, "a restart recomputed an example or read it back differently"
    without_maps = [shown for shown in first if shown["attention"] != "picture"]
    assert without_maps, "no example without attention maps: the case that broke the cache is not exercised"
    assert all(shown["attention"] == {"__type__": "update", "value": None} for shown in without_maps)
