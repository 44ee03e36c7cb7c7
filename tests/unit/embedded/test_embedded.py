"""The embedded default model: it loads like any hub model, its probe reads drawn portraits, and its negative prompt
does what the table says (the portraits and captions it was trained on: test_faces.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from negprompt_demo.embedded import MODEL_DIR
from negprompt_demo.embedded.faces import ATTRIBUTES, make_dataset
from tests.support.paths import ROOT


@pytest.mark.slow  # a fresh interpreter
def test_runtime_package_imports_no_engine_loader_or_tools():
    """loading.py imports negprompt_demo.embedded, so the package must not import the engine or loader back
    (an import loop), nor the training and evaluation tools."""
    code = (
        "import importlib, pkgutil, sys, negprompt_demo.embedded as e\n"
        "for m in pkgutil.iter_modules(e.__path__): importlib.import_module(f'negprompt_demo.embedded.{m.name}')\n"
        "print(*sorted(sys.modules))"
    )
    root = ROOT
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    modules = run.stdout.split()
    forbidden = {f"negprompt_demo.{name}" for name in ("engine", "loading", "settings", "embedded_tools")}
    assert not [m for m in modules if m in forbidden or m.startswith("negprompt_demo.embedded_tools.")]


def test_folder_is_a_plain_stable_diffusion_pipeline():
    from diffusers import StableDiffusionPipeline

    files = [f for f in MODEL_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 40 * 2**20
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".ckpt", ".pth")]
    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR)
    assert pipe.tokenizer("portrait photo of a man").input_ids == [49406, 5352, 1125, 539, 320, 786, 49407]
    image = pipe("portrait photo of a man", num_inference_steps=2, output_type="pil").images[0]
    assert image.size == (64, 64)
    defaults = json.loads((MODEL_DIR / "negprompt_defaults.json").read_text())
    assert {"guidance", "steps", "scheduler", "width", "height"} <= set(defaults)


def test_probe_reads_drawn_portraits():
    from negprompt_demo.embedded.probe import Probe

    images, labels, _ = make_dataset(300, seed=999)
    pred = Probe().predict(images)
    for k, attribute in enumerate(ATTRIBUTES):
        assert (pred[attribute] == labels[:, k]).mean() >= 0.93, attribute
    assert pred["face"].mean() >= 0.97


SEEDS = list(range(1000, 1024))


@pytest.fixture(scope="module")
def embedded_pipe():
    from negprompt_demo.models.loading import load_pipeline

    return load_pipeline(None)


def _mustache_rates(pipe, prompt: str):
    """Mustache rates over SEEDS at the model's defaults, without and with the negative "mustache"."""
    from negprompt_demo.embedded.probe import Probe
    from negprompt_demo.embedded_tools.evaluate import probe_pairs
    from negprompt_demo.models.loading import model_defaults

    d = model_defaults(pipe)
    rates, _ = probe_pairs(
        pipe,
        prompt,
        "mustache",
        SEEDS,
        Probe(),
        guidance=d["guidance"],
        steps=d["steps"],
        scheduler=d["scheduler"],
    )
    return rates


@pytest.fixture(scope="module")
def mustache_pairs(embedded_pipe):
    """(a) "portrait photo of a man" and (c) the same + negative "mustache", seed by seed in one paired call."""
    from negprompt_demo.embedded_tools.evaluate import BASE_PROMPT

    return _mustache_rates(embedded_pipe, BASE_PROMPT)


@pytest.mark.slow  # 24 seeds through the embedded model
def test_negative_prompt_removes_mustaches(mustache_pairs):
    # the targets: (a) 15-60 % mustaches, (c) at most 10 % and a third of (a), faces kept
    assert 4 / len(SEEDS) <= mustache_pairs.without["mustache"] <= 0.75
    assert mustache_pairs.with_negative["mustache"] <= min(3 / len(SEEDS), mustache_pairs.without["mustache"] / 3)
    assert mustache_pairs.with_negative["face"] >= 0.9


@pytest.mark.slow  # 24 seeds through the embedded model
def test_negation_in_the_prompt_does_not_remove_mustaches(embedded_pipe, mustache_pairs):
    """The article's point: "...without mustache" still gets mustaches (the text encoder ignores negation)."""
    from negprompt_demo.embedded_tools.evaluate import BASE_PROMPT

    negated = _mustache_rates(embedded_pipe, f"{BASE_PROMPT} without mustache")
    assert negated.without["mustache"] >= mustache_pairs.without["mustache"] - 0.2  # 24 seeds: 2 sigma
    assert negated.with_negative["mustache"] <= 3 / len(SEEDS)  # the negative prompt does remove them


@pytest.mark.slow  # 24 seeds through the embedded model
def test_docs_table_describes_the_shipped_model(embedded_pipe, mustache_pairs):
    """The committed results table was measured on this model at its defaults: a handful of other seeds
    must give rates within sampling noise of the table's rows (a) and (c)."""
    from negprompt_demo.models.loading import model_defaults

    results = ROOT / "docs" / "embedded_results.json"
    res = json.loads(results.read_text())
    defaults = model_defaults(embedded_pipe)
    assert (res["guidance"], res["steps"], res["scheduler"]) == (
        defaults["guidance"],
        defaults["steps"],
        defaults["scheduler"],
    )
    m = res["attributes"]["mustache"]
    # 24 seeds: binomial standard deviation <= 0.1, so 0.25 is 2.5 sigma
    assert abs(mustache_pairs.without["mustache"] - m["a"]["rate"]) <= 0.25
    assert abs(mustache_pairs.with_negative["mustache"] - m["c"]["rate"]) <= 0.25
    assert abs(mustache_pairs.without["face"] - m["a"]["face"]) <= 0.25
