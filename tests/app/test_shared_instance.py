"""A shared instance (as on a Space) under hostile load, through its public API and the page's queue on 127.0.0.1
(tiny model): no direct REST call, one bounded job per visitor while others are served, no upload, and a client
that leaves stops its job within one step (README "What a shared instance promises"; the pieces without a server
are in tests/unit: settings, sampling/cost, page/door, page/jobs, page/tracefile, page/app_config)."""

from __future__ import annotations

import threading

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.page.door import ONE_TURN
from negprompt_demo.page.handlers import INPUT_NAMES
from negprompt_demo.runner import device
from negprompt_demo.runner import requests as runner_requests
from negprompt_demo.sampling.cost import device_rates
from negprompt_demo.settings import DEFAULTS
from tests.support.api_calls import TIMEOUT, request
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # a live server (tests/app/conftest.py)


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
            monkeypatch.setattr(runner_requests, name, self.wrap(getattr(runner_requests, name)))

    def wrap(self, real):
        def spied(pipe, target, *args, on_step=None, **options):
            settings = target.settings  # the prepared run's

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
        flags = device.stop_flags
        wait_until(lambda: flags and all(flag.is_set() for flag in flags.values()), "the stop of a gone client's job")
        held_at = calls.count
        calls.release.set()
        wait_until(lambda: not flags, "the job to end")
    finally:
        calls.release.set()
        calls.handle.remove()
    assert calls.count == held_at, f"{calls.count - held_at} UNet calls after the client left"
