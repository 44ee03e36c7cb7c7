"""The public `/compare` endpoint through `gradio_client`, against the app launched on 127.0.0.1 (tiny model)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from negprompt_demo.page import handlers
from negprompt_demo.runner import Done, Step
from tests.support.api_calls import request

pytestmark = pytest.mark.slow  # a live server (and gradio_client) for the module


@pytest.fixture(scope="module")
def client(app_server) -> Client:
    url, _ = app_server
    return Client(url, verbose=False)


def call(client: Client, folder, **changes):
    """A small /compare job: "a red hat" / "blue", seed 11, 4 steps, unless changed."""
    values = request(folder, prompt="a red hat", negative="blue", seed=11, steps=4)
    return client.submit(**(values | changes), api_name="/compare")


def test_compare_returns_both_images_the_seed_and_the_trace(client, tiny_sd_folder):
    without_path, with_path, seed, trace = call(client, tiny_sd_folder).result(timeout=120)
    with Image.open(without_path) as without, Image.open(with_path) as with_negative:
        assert without.format == with_negative.format == "PNG"
        assert without.size == with_negative.size == (32, 32)
        assert not np.array_equal(np.asarray(without), np.asarray(with_negative))
    assert seed == 11
    assert trace["settings"]["negative"] == "blue" and len(trace["steps"]) == 4
    assert trace["cfg_active"] is True and "guidance_mean" in trace["steps"][0]


def test_negative_embedding_by_path_and_the_reading_in_the_trace(client, tiny_sd_folder, tmp_path):
    """Unlocked (this server), the API names an embedding file like the CLI; the trace says how the negative was
    read (the locked refusal is in test_app)."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "badhand.safetensors"
    save_file({"emb_params": torch.randn(2, 32)}, str(path))
    job = call(client, tiny_sd_folder, negative="(badhand:1.3), blue", negative_embedding=str(path))
    _, _, _, trace = job.result(timeout=120)
    first = trace["negative_reading"]["chunks"][0][0]
    assert first == {"text": "badhand: 2 vectors", "weight": 1.3, "embedding": True}
    assert trace["settings"]["negative_embedding"] == str(path)


def test_random_seed_and_native_size_are_the_defaults(client, tiny_sd_folder):
    job = client.submit(prompt="a red hat", negative="blue", steps=1, api_name="/compare")
    without_path, _, seed, trace = job.result(timeout=120)
    assert 0 <= seed < 2**32 and trace["settings"]["seed"] == seed
    assert Image.open(without_path).size == (32, 32) and trace["model"] == str(tiny_sd_folder)


def test_bad_input_returns_a_clear_error_and_the_server_keeps_working(client, tiny_sd_folder):
    with pytest.raises(AppError, match="guidance scale must be between 0 and 30, got 99"):
        call(client, tiny_sd_folder, guidance=99).result(timeout=120)
    with pytest.raises(AppError, match="steps must be a whole number, got 2.5"):
        call(client, tiny_sd_folder, steps=2.5).result(timeout=120)
    with pytest.raises(AppError, match="width must be between 16 and 64 px for this model, got 512"):
        call(client, tiny_sd_folder, width=512).result(timeout=120)
    with pytest.raises(AppError, match="neither an existing local folder nor a Hugging Face model id"):
        call(client, tiny_sd_folder, model="no such model").result(timeout=120)
    assert call(client, tiny_sd_folder, steps=1).result(timeout=120)[2] == 11


def test_only_compare_sweep_and_seeds_are_listed(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert sorted(api["named_endpoints"]) == ["/compare", "/seeds", "/sweep"]
    assert not api["unnamed_endpoints"]


def test_seeds_returns_every_image_and_the_document(client, tiny_sd_folder):
    job = client.submit(
        prompt="a red hat", negative="blue", seed=4, steps=2, seed_count=4, model=str(tiny_sd_folder), api_name="/seeds"
    )
    gallery, document = job.result(timeout=120)
    assert len(gallery) == 12 and [item["caption"] for item in gallery][:2] == ["without · seed 4", "without · seed 5"]
    assert gallery[-1]["caption"] == "with · seed 7"  # the article's order: no negative, phrased, negative
    assert document["seeds"] == [4, 5, 6, 7] and document["columns"]["phrased"]["prompt"] == "a red hat without blue"
    with pytest.raises(AppError, match="seeds must be between 4 and 64, got 2"):
        client.predict(prompt="a", seed_count=2, model=str(tiny_sd_folder), api_name="/seeds")


def test_sweep_returns_each_start_in_one_call(client, tiny_sd_folder):
    job = client.submit(
        prompt="a red hat", negative="blue", seed=4, steps=10, model=str(tiny_sd_folder), api_name="/sweep"
    )
    gallery, info = job.result(timeout=120)
    assert len(gallery) == 7 and info["start_steps"] == [1, 3, 4, 5, 7, 9] and info["seed"] == 4
    assert [item["caption"] for item in gallery][:2] == ["no negative", "from step 1/10"]
    first, last = (np.asarray(Image.open(gallery[i]["image"])) for i in (1, 6))
    assert not np.array_equal(first, last)


def test_a_second_comparison_waits_for_the_first(client, tiny_sd_folder, monkeypatch):
    """One generation at a time: a short job sent while a long one samples starts only after the long one ended.

    Ordered on the server (when each handler's comparison began and when its result was ready), because the
    order in which the client sees jobs finish also depends on its own downloads of the result files."""
    order, sampling = [], threading.Event()
    original = handlers.astream

    async def spied(model, job, **options):  # options: the cost limits and the client-gone check
        order.append(("began", job.settings.steps))
        async for event in original(model, job, **options):
            if isinstance(event, Step):
                sampling.set()
            elif isinstance(event, Done):
                order.append(("ready", job.settings.steps))
            yield event

    monkeypatch.setattr(handlers, "astream", spied)
    first = call(client, tiny_sd_folder, steps=30, width=64, height=64)
    assert sampling.wait(timeout=120), "the first run never streamed a step"
    second = call(client, tiny_sd_folder, steps=1)
    first.result(timeout=120), second.result(timeout=120)
    assert order == [("began", 30), ("ready", 30), ("began", 1), ("ready", 1)]


# --- the download that came back truncated ----------------------------------------------------------------------


def test_equal_results_of_two_jobs_never_rewrite_a_file_being_served(client, tiny_sd_folder, monkeypatch):
    """Two users running the same seed get equal images. Gradio writes a returned PIL image to a cache path made
    from the hash of its bytes, in place (truncate, then write): the second job rewrote the file the first job's
    client was still downloading, which then came back short ('peer closed connection without sending complete
    message body'). The app returns PNG files written per job instead; Gradio copies a file to its cache under a
    temporary name and renames it, and leaves an existing copy alone.

    Forced without timing: the first job's served file is held open at a partial read while the second job, with
    equal images, completes; the held file must then read to its end unchanged, and no result may have gone
    through Gradio's in-place PIL path at all."""
    from gradio import processing_utils

    pil_writes, served = [], []
    real_pil, real_file = processing_utils.save_pil_to_cache, processing_utils.save_file_to_cache
    monkeypatch.setattr(
        processing_utils, "save_pil_to_cache", lambda *a, **k: pil_writes.append(1) or real_pil(*a, **k)
    )
    monkeypatch.setattr(
        processing_utils, "save_file_to_cache", lambda *a, **k: served.append(real_file(*a, **k)) or served[-1]
    )

    call(client, tiny_sd_folder, seed=5).result(timeout=120)
    first = [path for path in served if path.endswith("without_negative.png")][-1]
    expected = open(first, "rb").read()
    stat = os.stat(first)
    with open(first, "rb") as download:  # a client part-way through its download
        head = download.read(len(expected) // 2)
        call(client, tiny_sd_folder, seed=5).result(timeout=120)  # the second user's equal result
        rest = download.read()
    assert head + rest == expected
    after = os.stat(first)
    assert (after.st_ino, after.st_size) == (stat.st_ino, stat.st_size)  # same file; Gradio only touches its time
    assert not pil_writes, "a result went through Gradio's in-place PIL cache write"


def test_attention_maps_option_through_the_client(client, tiny_sd_folder):
    *_, trace = call(client, tiny_sd_folder, attention_maps=True).result(timeout=120)
    assert [(word["word"], word["source"]) for word in trace["attention"]["words"]] == [
        *(("blue", "negative"), ("a", "prompt"), ("red", "prompt"), ("hat", "prompt")),
    ]
    assert np.array(trace["attention"]["maps"]).shape == (4, 4, 16, 16) and trace["attention"]["steps"] == [1, 2, 3, 4]
    *_, plain = call(client, tiny_sd_folder).result(timeout=120)
    assert "attention" not in plain  # off by default
