"""The app under real use, through its public API with `gradio_client`, on a server on 127.0.0.1 (tiny model):
concurrent clients get exactly their own images, a cancel frees the worker at the step it was on while other
jobs wait, faults and bad input end in clear errors, and the server keeps serving after every one of them.

The server runs two generations at once (`--concurrency 2`) so jobs both queue and contend for the pipeline.
"""

from __future__ import annotations

import json
import shutil
import threading

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.page.handlers import INPUT_NAMES
from negprompt_demo.runner import requests as runner_requests
from negprompt_demo.sampling.engine import GenerationCancelled
from negprompt_demo.settings import DEFAULTS
from tests.support.api_calls import TIMEOUT, request
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # live servers (tests/app/conftest.py): --concurrency 2, and --max-queue 1


@pytest.fixture(scope="module")
def server(live_app, tiny_sd_folder):
    """(url, model folder) of the app launched like `python demo.py --model <tiny> --concurrency 2`."""
    url, _ = live_app(concurrency=2, max_queue=16)
    return url, tiny_sd_folder


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[0], verbose=False)


def pixels(result) -> tuple[np.ndarray, np.ndarray]:
    """Both returned images as arrays (gradio_client hands back PNG file paths)."""
    arrays = []
    for path in result[:2]:
        with Image.open(path) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    return arrays[0], arrays[1]


def assert_serving(client: Client, folder) -> None:
    """The server still answers a normal request, with a correct result."""
    without, with_negative = pixels(client.submit(**request(folder), api_name="/compare").result(timeout=TIMEOUT))
    assert without.shape == (32, 32, 3) and not np.array_equal(without, with_negative)


# --- concurrency ----------------------------------------------------------------------------------------------


def test_eight_concurrent_clients_each_get_exactly_their_own_images(server):
    url, folder = server
    asks = [request(folder, seed=100 + i, negative=f"mustache, {word}") for i, word in enumerate("abcdefgh")]
    asks[3]["push_map"] = True  # a different batch shape in the middle of the queue
    clients = [Client(url, verbose=False) for _ in asks]
    jobs = [client.submit(**ask, api_name="/compare") for client, ask in zip(clients, asks)]
    together = [job.result(timeout=TIMEOUT) for job in jobs]

    alone = clients[0]
    for ask, result in zip(asks, together):
        reference = alone.submit(**ask, api_name="/compare").result(timeout=TIMEOUT)
        assert result[2] == ask["seed"] and result[3]["settings"]["negative"] == ask["negative"]
        for got, expected in zip(pixels(result), pixels(reference)):
            assert np.array_equal(got, expected), f"seed {ask['seed']}: concurrent result differs from a lone call"
    # and the jobs really differ from each other, so equality above means something
    assert len({pixels(result)[1].tobytes() for result in together}) == len(asks)


# --- cancel ---------------------------------------------------------------------------------------------------


class StepSpy:
    """Wraps the app's device call to see every step of every job; holds one job at a chosen step until the
    server has set its stop flag, so 'stops at the step it was on' is checked without timing anything."""

    def __init__(self, hold_negative: str, hold_at_step: int):
        self.hold_negative, self.hold_at_step = hold_negative, hold_at_step
        self.events: list[tuple[str, object]] = []
        self.held = threading.Event()
        self.real = runner_requests.run_paired

    def __call__(self, pipe, prepared, *, on_step, stop, **options):
        settings = prepared.settings

        def step(done, total, record):
            self.events.append((settings.negative, done))
            on_step(done, total, record)
            if settings.negative == self.hold_negative and done == self.hold_at_step:
                self.held.set()
                assert stop.wait(timeout=TIMEOUT), "the cancel never reached the worker"

        try:
            result = self.real(pipe, prepared, on_step=step, stop=stop, **options)
        except GenerationCancelled:
            self.events.append((settings.negative, "cancelled"))
            raise
        self.events.append((settings.negative, "done"))
        return result

    def of(self, negative: str) -> list:
        return [what for name, what in self.events if name == negative]


def test_cancel_mid_run_frees_the_worker_at_that_step_and_waiting_jobs_succeed(server, client, monkeypatch):
    url, folder = server
    spy = StepSpy(hold_negative="cancel me", hold_at_step=2)
    monkeypatch.setattr(runner_requests, "run_paired", spy)
    expected = {
        n: pixels(client.submit(**request(folder, negative=n), api_name="/compare").result(timeout=TIMEOUT))
        for n in ("later one", "later two")
    }

    long_job = Client(url, verbose=False).submit(**request(folder, negative="cancel me", steps=40), api_name="/compare")
    assert spy.held.wait(timeout=TIMEOUT), "the long job never reached step 2"
    waiting = {
        n: Client(url, verbose=False).submit(**request(folder, negative=n), api_name="/compare")
        for n in ("later one", "later two")
    }
    long_job.cancel()

    for negative, job in waiting.items():
        for got, reference in zip(pixels(job.result(timeout=TIMEOUT)), expected[negative]):
            assert np.array_equal(got, reference)
    assert spy.of("cancel me") == [1, 2, "cancelled"], "sampling went on after the cancel"
    for negative in waiting:
        assert spy.of(negative)[-1] == "done"
    assert_serving(client, folder)


# --- faults ---------------------------------------------------------------------------------------------------


@pytest.fixture
def server_pipe(server):
    """The pipeline object the server itself uses (same process, same model cache)."""
    pipe = load_pipeline(str(server[1]))
    yield pipe
    assert not pipe.unet._forward_hooks and not pipe.unet._forward_pre_hooks


def test_nan_producing_run_is_a_clear_error_and_the_next_request_is_served(client, server, server_pipe):
    handle = server_pipe.unet.register_forward_hook(lambda m, a, output: (output[0] * float("nan"),))
    try:
        with pytest.raises(AppError, match="became NaN/inf at step 1 of 3"):
            client.submit(**request(server[1]), api_name="/compare").result(timeout=TIMEOUT)
    finally:
        handle.remove()
    assert_serving(client, server[1])


def test_exception_inside_the_pipeline_is_a_clear_error_and_the_next_request_is_served(client, server, server_pipe):
    def explode(module, args, output):
        raise RuntimeError("simulated out of memory")

    handle = server_pipe.vae.decoder.register_forward_hook(explode)
    try:
        with pytest.raises(AppError, match=r"comparison failed \(RuntimeError: simulated out of memory\)"):
            client.submit(**request(server[1]), api_name="/compare").result(timeout=TIMEOUT)
    finally:
        handle.remove()
    assert_serving(client, server[1])


def test_model_that_fails_to_load_is_a_clear_error_and_the_next_request_is_served(client, server, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(server[1], broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(AppError, match="Could not load .*Unable to load weights"):
        client.submit(**request(server[1], model=str(broken)), api_name="/compare").result(timeout=TIMEOUT)
    assert_serving(client, server[1])


# --- bad input through the public API --------------------------------------------------------------------------


# One case per check a request meets on its way in (the whole matrix of bad values is tests/test_settings.py,
# model names tests/test_loading.py): it must arrive there through the public API and come back as one message.
BAD_INPUTS = {
    "empty prompt": ({"prompt": ""}, "prompt is empty"),
    "huge prompt": ({"prompt": "word " * 40_000}, "200000 characters long; the limit is 2000"),
    "too many steps": ({"steps": 10**9}, "steps must be between 1 and 150"),
    "huge guidance": ({"guidance": 1e300}, "guidance scale must be between 0 and 30, got 1e\\+300"),
    "seed 1e308": ({"seed": 1e308}, r"seed must be between 0 and 4294967295 \(or -1 for random\), got \d{39}…\.$"),
    "tiny width": ({"width": 8}, "width must be between 16 and 64 px for this model, got 8"),
    "scheduler as a list": ({"scheduler": ["Euler"]}, r"Unknown scheduler \['Euler'\]"),
    "push_map as text": ({"push_map": "false"}, "push_map must be true or false, got 'false'"),
    "window reversed": ({"negative_start": 0.9, "negative_end": 0.1}, "starts at 0.9 of the steps but ends at 0.1"),
    "path traversal model": ({"model": "../../../etc/passwd"}, "neither an existing local folder nor"),
    "system folder model": ({"model": "/etc"}, "is not a diffusers model folder"),
    "hub id while offline": ({"model": "someone/some-model"}, "Hugging Face Hub cannot be reached"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_error(client, server, case):
    changes, message = BAD_INPUTS[case]
    with pytest.raises(AppError, match=message):
        client.submit(**request(server[1], **changes), api_name="/compare").result(timeout=TIMEOUT)


def test_pickle_only_and_custom_code_models_are_refused(client, server, sd_pipe, tmp_path):
    sd_pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(AppError, match="no safetensors weights; pickle"):
        client.submit(**request(server[1], model=str(tmp_path / "pickled")), api_name="/compare").result(TIMEOUT)
    custom = tmp_path / "custom"
    shutil.copytree(server[1], custom)
    index = (custom / "model_index.json").read_text().replace('"diffusers",\n    "UNet', '"evil_module",\n    "UNet')
    assert "evil_module" in index
    (custom / "model_index.json").write_text(index)
    with pytest.raises(AppError, match="never runs code from a model repository"):
        client.submit(**request(server[1], model=str(custom)), api_name="/compare").result(timeout=TIMEOUT)


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "портрет 👩‍🚀 فتاة 女の子 e\u0301 \u202eevil"},  # scripts, emoji ZWJ, combining mark, RTL override
        {"prompt": "a\x00b\x1b[31m red\r\nhat", "negative": "\x07blue\x7f"},  # control characters are dropped
        {"negative": "🙂" * 500},  # far past CLIP's 77 tokens: truncated with a warning, not an error
        {"width": 0, "height": 0},  # 0 means the model's native size
        {"width": 24, "height": 56},  # odd aspect ratio within the limits
        {"seed": -1, "guidance": 0},  # random seed; guidance off is allowed (both images alike)
    ],
    ids=["unicode", "control-characters", "long-emoji-negative", "native-size", "odd-aspect", "edge-values"],
)
def test_unusual_but_valid_input_is_served(client, server, changes):
    result = client.submit(**request(server[1], **changes), api_name="/compare").result(timeout=TIMEOUT)
    without, with_negative = pixels(result)
    width = changes.get("width") or 32
    height = changes.get("height") or 32
    assert without.shape == with_negative.shape == (height, width, 3)
    assert 0 <= result[2] <= 2**32 - 1


def test_server_is_alive_after_all_of_it(client, server):
    assert_serving(client, server[1])  # within TIMEOUT: a hang fails, a slow machine does not


def test_pipeline_is_free_after_all_of_it(server_pipe):
    from negprompt_demo.models.loading import pipeline_lock

    assert not pipeline_lock(server_pipe).locked()
    assert torch.isfinite(server_pipe.unet.conv_out.weight).all()


# --- what a shared instance does not let a client do --------------------------------------------------------------


def test_uploads_over_the_limit_are_refused(server):
    """The app takes no file from users: Gradio refuses an upload over MAX_UPLOAD before it is kept."""
    url = server[0].rstrip("/") + "/gradio_api/upload"
    small = httpx.post(url, files={"files": ("a.npz", b"x" * 1000)}, timeout=30)
    assert small.status_code == 200
    big = httpx.post(url, files={"files": ("a.npz", b"x" * 2_000_000)}, timeout=30)
    assert big.status_code == 413 and "maximum allowed size of 1048576 bytes" in big.text


def test_a_lone_surrogate_sent_as_raw_json_is_a_clear_error(server):
    """gradio_client cannot even encode one, a hand-written request can: JSON's \\ud800 escape."""
    base = server[0].rstrip("/") + "/gradio_api/call/compare"
    values = request(server[1])
    data = [values.get(name, DEFAULTS.get(name)) for name in INPUT_NAMES]  # the endpoint's parameter order
    body = json.dumps({"data": data}).replace("portrait", "portrait \\ud800")
    event = httpx.post(base, content=body, headers={"content-type": "application/json"}, timeout=30).json()
    answer = httpx.get(f"{base}/{event['event_id']}", timeout=TIMEOUT).text
    assert "event: error" in answer and "invalid character (a lone UTF-16 surrogate)" in answer


def test_a_full_queue_refuses_with_gradios_message(live_app, tiny_sd_folder, monkeypatch):
    """--max-queue 1: one job sampling (held at its first step), one waiting, the next refused at once."""
    holding, release = threading.Event(), threading.Event()
    real = runner_requests.run_paired

    def held(pipe, prepared, *, on_step, stop, **options):
        def step(done, total, record):
            on_step(done, total, record)
            if prepared.settings.negative == "hold":
                holding.set()
                release.wait(timeout=TIMEOUT)

        return real(pipe, prepared, on_step=step, stop=stop, **options)

    monkeypatch.setattr(runner_requests, "run_paired", held)
    url, _ = live_app(max_queue=1)
    client = Client(url, verbose=False)
    sampling = client.submit(**request(tiny_sd_folder, negative="hold", steps=2), api_name="/compare")
    assert holding.wait(timeout=TIMEOUT), "the first job never started"
    waiting = client.submit(**request(tiny_sd_folder), api_name="/compare")
    wait_until(lambda: waiting.status().code.name in ("IN_QUEUE", "QUEUE_FULL"), "the server to queue the second job")
    with pytest.raises(QueueError, match="Queue is full! Please try again."):
        client.submit(**request(tiny_sd_folder), api_name="/compare").result(timeout=TIMEOUT)
    release.set()
    assert sampling.result(timeout=TIMEOUT)[2] == 5 and waiting.result(timeout=TIMEOUT)[2] == 5
