"""A shared instance's cost bounds (sampling/cost.py), without a server: prompt chunks counted as the encoding
reads them, the device-time estimate and budget per request, the chunk cap. The other bounds are tested by their modules
(settings: weights; page/jobs, page/tracefile, page/door, page/app_config); the live attacks are in
tests/app/test_load.py."""

from __future__ import annotations

import pytest

from negprompt_demo.sampling import cost
from negprompt_demo.sampling.cost import CostLimits, Workload, check_request, estimate_seconds
from negprompt_demo.sampling.engine import prepare
from negprompt_demo.settings import CompareSettings, InputError


def resolved(**changes) -> CompareSettings:
    values = dict(prompt="a man", negative="mustache", seed=1, steps=20, guidance=7.5, scheduler="Euler")
    return CompareSettings(**{**values, "width": 32, "height": 32, **changes})


def chunks_of(pipe, negative: str) -> dict[str, int]:
    return prepare(pipe, resolved(negative=negative)).chunks


def test_chunks_are_counted_as_a1111_counts_them(sd_pipe):
    """The chunks the cap counts are those the encoding reads (engine.prepare → prompts.tokenize_chunks)."""
    assert chunks_of(sd_pipe, "a man") == {"prompt": 1, "negative": 1}
    assert chunks_of(sd_pipe, "a man BREAK a man BREAK a man")["negative"] == 3
    long = chunks_of(sd_pipe, "word " * 200)["negative"]
    assert long == -(-len(sd_pipe.tokenizer("word " * 200, add_special_tokens=False).input_ids) // 75) >= 2
    assert chunks_of(sd_pipe, "[a man BREAK a man BREAK a man:hat:0.5]")["negative"] == 3  # its longest step text


@pytest.fixture
def fixed_rates(sd_pipe, monkeypatch):
    """The device rates of the tiny pipeline fixed (1 µs per UNet item per latent pixel, 1 µs per decoded one)."""
    monkeypatch.setitem(cost._rates, sd_pipe, (1e-6, 1e-6, 1e-6))
    return sd_pipe


def test_the_estimate_grows_with_steps_seeds_pixels_and_chunks(fixed_rates):
    pipe, base = fixed_rates, estimate_seconds(fixed_rates, resolved(), Workload())
    assert estimate_seconds(pipe, resolved(steps=40), Workload()) == pytest.approx(2 * base)
    assert estimate_seconds(pipe, resolved(width=64, height=64), Workload()) == pytest.approx(4 * base)
    assert estimate_seconds(pipe, resolved(), Workload(), chunks=5) > base
    seeds = estimate_seconds(pipe, resolved(), Workload("seeds", runs=3, seeds=64))
    assert seeds > 30 * base


def test_a_shared_instance_refuses_a_request_over_budget_up_front(fixed_rates):
    limits = CostLimits(max_seconds=0.05)
    one = {"prompt": 1, "negative": 1}
    check_request(fixed_rates, resolved(), one, Workload(), limits)  # a small comparison passes
    with pytest.raises(
        InputError, match=r"about \d+ s of device time \(64 seeds × 150 steps at 32×32 px\).*at most 0 s"
    ):
        check_request(fixed_rates, resolved(steps=150), one, Workload("seeds", runs=3, seeds=64), limits)
    check_request(
        fixed_rates, resolved(steps=150), one, Workload("seeds", runs=3, seeds=64), None
    )  # local: today's limits


def test_a_shared_instance_caps_prompt_chunks(fixed_rates):
    four = chunks_of(fixed_rates, "x BREAK x BREAK x BREAK x")
    with pytest.raises(InputError, match="The negative prompt fills 4 chunks of 75 tokens; .* at most 3 "):
        check_request(fixed_rates, resolved(), four, Workload(), CostLimits())
    check_request(fixed_rates, resolved(), four, Workload(), None)


def test_device_rates_are_measured_once_per_pipeline(sd_pipe):
    cost._rates.pop(sd_pipe, None)
    first = cost.device_rates(sd_pipe)
    assert all(rate > 0 for rate in first) and cost.device_rates(sd_pipe) is first
