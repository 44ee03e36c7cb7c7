"""The app under real use, through its public API with `gradio_client`, on a server on 127.0.0.1 (tiny model):
concurrent clients get exactly their own images, a cancel frees the worker at the step it was on while other
jobs wait, faults and bad input end in clear errors, and the server keeps serving after every one of them.

The server runs two generations at once (`--concurrency 2`) so jobs both queue and contend for the pipeline.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

from negprompt_demo import runner
from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.page.door import ONE_TURN
from negprompt_demo.page.handlers import INPUT_NAMES
from negprompt_demo.sampling.cost import device_rates
from negprompt_demo.sampling.engine import GenerationCancelled
from negprompt_demo.settings import DEFAULTS

pytestmark = pytest.mark.slow  # live servers (tests/app/conftest.py), three configurations
TIMEOUT = 120  # seconds any single job may take before the test fails (a hang, not a speed check)


@pytest.fixture(scope="module")
def server(live_app, tiny_sd_folder):
    """(url, model folder) of the app launched like `python demo.py --model <tiny> --concurrency 2`."""
    url, _ = live_app(concurrency=2, max_queue=16)
    return url, tiny_sd_folder


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[0], verbose=False)


def request(folder, **changes) -> dict:
    values = {
        "prompt": "portrait photo of a man",
        "negative": "mustache",
        "seed": 5,
        "steps": 3,
        "guidance": 7.5,
        "scheduler": "Euler",
        "width": 32,
        "height": 32,
        "model": str(folder),
        "push_map": False,
    }
    values.update(changes)
    return values


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
        self.real = runner.run_paired

    def __call__(self, pipe, settings, *, on_step, stop, **options):
        def step(done, total, record):
            self.events.append((settings.negative, done))
            on_step(done, total, record)
            if settings.negative == self.hold_negative and done == self.hold_at_step:
                self.held.set()
                assert stop.wait(timeout=TIMEOUT), "the cancel never reached the worker"

        try:
            result = self.real(pipe, settings, on_step=step, stop=stop, **options)
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
    monkeypatch.setattr(runner, "run_paired", spy)
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
    real = runner.run_paired

    def held(pipe, settings, *, on_step, stop, **options):
        def step(done, total, record):
            on_step(done, total, record)
            if settings.negative == "hold":
                holding.set()
                release.wait(timeout=TIMEOUT)

        return real(pipe, settings, on_step=step, stop=stop, **options)

    monkeypatch.setattr(runner, "run_paired", held)
    url, _ = live_app(max_queue=1)
    client = Client(url, verbose=False)
    sampling = client.submit(**request(tiny_sd_folder, negative="hold", steps=2), api_name="/compare")
    assert holding.wait(timeout=TIMEOUT), "the first job never started"
    waiting = client.submit(**request(tiny_sd_folder), api_name="/compare")
    deadline = time.monotonic() + TIMEOUT
    while waiting.status().code.name not in ("IN_QUEUE", "QUEUE_FULL"):  # the server has queued it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(QueueError, match="Queue is full! Please try again."):
        client.submit(**request(tiny_sd_folder), api_name="/compare").result(timeout=TIMEOUT)
    release.set()
    assert sampling.result(timeout=TIMEOUT)[2] == 5 and waiting.result(timeout=TIMEOUT)[2] == 5


# --- a shared instance under hostile load (README "What a shared instance promises") ------------------------------


@pytest.fixture(scope="module")
def shared_server(live_app, tiny_sd_folder):
    """(url, model folder) of a shared instance (as on a Space): locked models, direct routes closed, one job per
    visitor, a 2 s device-time budget per request; Gradio's heartbeat every 0.5 s so that a client that is gone
    is noticed while its job is held between two steps."""
    url, _ = live_app(env={"GRADIO_HEARTBEAT_INTERVAL": "0.5"}, lock_models=True, shared=True, max_request_seconds=2.0)
    return url, tiny_sd_folder


def page_config(url: str) -> dict:
    return httpx.get(url.rstrip("/") + "/config", timeout=30).json()


def fn_index(config: dict, api_name: str | None = None, elem_id: str | None = None) -> int:
    """The queue's function index of a public endpoint (by name) or of a page button's click (by elem_id)."""
    if api_name is not None:
        return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    component = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    return next(d["id"] for d in config["dependencies"] if [component, "click"] in d["targets"])


def fn_data(config: dict, index: int, by_label: dict) -> list:
    """The inputs of a function in order: each component's value from `by_label`, else its default."""
    components = {c["id"]: c.get("props", {}) for c in config["components"]}
    dependency = next(d for d in config["dependencies"] if d["id"] == index)
    return [by_label.get(components[i].get("label"), components[i].get("value")) for i in dependency["inputs"]]


class Recorder:
    """Every comparison and seed grid the server samples, in order: (negative, "start" | "end"); optionally holds
    the job with a chosen negative at its first step until released."""

    def __init__(self, monkeypatch, hold: str | None = None):
        self.log: list[tuple[str, str]] = []
        self.hold, self.holding, self.release = hold, threading.Event(), threading.Event()
        for name in ("run_paired", "sample_grid"):
            monkeypatch.setattr(runner, name, self.wrap(getattr(runner, name)))

    def wrap(self, real):
        def spied(pipe, target, *args, on_step=None, **options):
            settings = getattr(target, "settings", target)  # a SeedGrid carries its settings

            def step(*values):
                if on_step is not None:
                    on_step(*values)
                if settings.negative == self.hold:
                    self.holding.set()
                    assert self.release.wait(timeout=TIMEOUT)

            self.log.append((settings.negative, "start"))
            try:
                return real(pipe, target, *args, on_step=step, **options)
            finally:
                self.log.append((settings.negative, "end"))

        return spied


def test_an_attacker_gets_no_direct_call_one_slot_and_a_small_comparison_waits_for_one_bounded_job(
    shared_server, monkeypatch
):
    url, folder = shared_server
    recorder = Recorder(monkeypatch, hold="attacker")
    base = url.rstrip("/") + "/gradio_api"
    config = page_config(url)
    data = [request(folder, negative="direct").get(name, DEFAULTS.get(name)) for name in INPUT_NAMES]

    # 1. direct REST calls beside the queue: by name and by the page's function index, none served
    page_compare = fn_index(config, elem_id="compare-button")
    direct = [httpx.post(f"{base}/run/{name}", json={"data": data}, timeout=30) for name in ("compare", "sweep")] * 10
    direct += [httpx.post(f"{base}/run/predict", json={"data": [], "fn_index": page_compare}, timeout=30)] * 10
    assert [answer.status_code for answer in direct] == [404] * 30
    assert "does not accept direct HTTP POST requests" in direct[0].text

    # 2. the attacker's max-cost job is refused up front; an allowed one takes its one slot, the rest are refused
    attacker = Client(url, verbose=False)
    with pytest.raises(AppError, match=r"about \d+ s of device time \(64 seeds × 150 steps at 32×32 px\)"):
        attacker.submit(**request(folder, steps=150), seed_count=64, api_name="/seeds").result(timeout=TIMEOUT)
    first = attacker.submit(**request(folder, negative="attacker", steps=10), api_name="/compare")
    assert recorder.holding.wait(timeout=TIMEOUT)
    amplified = ("a man BREAK " * 170)[:2000]
    for changes in [{"negative": "attacker 2"}] * 4 + [{"prompt": amplified}]:
        with pytest.raises(
            httpx.HTTPStatusError
        ) as refused:  # gradio_client hides the text of a 400; the page shows it
            attacker.submit(**request(folder, **changes), api_name="/compare").result(timeout=TIMEOUT)
        assert refused.value.response.status_code == 400 and refused.value.response.json()["detail"] == ONE_TURN

    # 3. a second visitor's small comparison waits for the attacker's one job only
    victim = Client(url, verbose=False).submit(**request(folder, negative="victim"), api_name="/compare")
    recorder.release.set()
    assert victim.result(timeout=TIMEOUT)[2] == 5 and first.result(timeout=TIMEOUT)[2] == 5
    assert recorder.log == [("attacker", "start"), ("attacker", "end"), ("victim", "start"), ("victim", "end")]

    with pytest.raises(
        AppError, match="The prompt fills 167 chunks of 75 tokens; this shared instance reads at most 3"
    ):
        attacker.submit(**request(folder, prompt=amplified, attention_maps=True), api_name="/compare").result(TIMEOUT)
    with pytest.raises(AppError, match="gives “face” a weight of 4.97e\\+20"):
        attacker.submit(**request(folder, negative="(" * 500 + "face"), api_name="/compare").result(TIMEOUT)
    assert ("direct", "start") not in recorder.log and len(recorder.log) == 4


def test_a_shared_instance_takes_no_upload(shared_server):
    answer = httpx.post(shared_server[0].rstrip("/") + "/gradio_api/upload", files={"files": ("a.npz", b"x")})
    assert answer.status_code == 413


class UnetCalls:
    """Counts the tiny UNet's calls; holds the N-th one until released."""

    def __init__(self, pipe, hold_at: int):
        self.count, self.hold_at = 0, hold_at
        self.holding, self.release = threading.Event(), threading.Event()
        self.handle = pipe.unet.register_forward_pre_hook(self.called)

    def called(self, module, args):
        self.count += 1
        if self.count == self.hold_at:
            self.holding.set()
            assert self.release.wait(timeout=TIMEOUT)


@pytest.mark.parametrize("door", ["api", "page"])
def test_a_killed_clients_many_seeds_job_stops_within_one_step(shared_server, door):
    """A client joins the queue with a many-seeds job (the public /seeds or the page's button), reads its event
    stream until sampling is under way, and vanishes; the job stops at the step it is on."""
    url, folder = shared_server
    pipe = load_pipeline(str(folder))
    config = page_config(url)
    index = fn_index(config, api_name="seeds") if door == "api" else fn_index(config, elem_id="seeds-button")
    labels = {"prompt": "a man", "negative prompt": "mustache", "negative": "mustache", "steps": 8}
    labels |= {"seeds": 4, "seed_count": 4}  # the page's label, the API's
    session = f"killed-{door}"
    body = {"data": fn_data(config, index, labels), "fn_index": index, "session_hash": session}
    base = url.rstrip("/") + "/gradio_api"
    device_rates(pipe)  # measured once per pipeline (a few UNet calls), not counted below
    calls = UnetCalls(pipe, hold_at=3)
    try:
        assert httpx.post(f"{base}/queue/join", json=body, timeout=30).status_code == 200
        with httpx.stream("GET", f"{base}/queue/data", params={"session_hash": session}, timeout=TIMEOUT) as stream:
            lines, seen = stream.iter_lines(), []
            while not calls.holding.is_set():
                seen.append(next(lines, None))  # the client reads its progress…
                assert seen[-1] is not None, f"the job ended before sampling: {seen[-4:]}"
        # …and is gone (connection closed); the server notices within a heartbeat and sets the run's stop flag
        deadline = time.monotonic() + TIMEOUT
        while not (runner._stop_flags and all(flag.is_set() for flag in runner._stop_flags.values())):
            assert time.monotonic() < deadline, "the server never stopped the job of a client that left"
            time.sleep(0.05)
        held_at = calls.count
        calls.release.set()
        while runner._stop_flags:  # the job ends
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        calls.release.set()
        calls.handle.remove()
    assert calls.count == held_at, f"{calls.count - held_at} UNet calls after the client left"
