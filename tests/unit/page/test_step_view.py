"""The step view's choices: which step it opens at, the rule each caption states, and the step slider's bounds."""

from __future__ import annotations

import math

from negprompt_demo.page.step_view import branch_note, guidance_rule, step_slider, telling_step
from negprompt_demo.sampling.trace import GuidanceTrace, StepRecord


def record(index: int, divergence: float, active: bool = True) -> StepRecord:
    return StepRecord(index, 999.0 - index, 1.0, None, (1.0, 1.0), 1.0, 0.9, divergence, None, negative_active=active)


def trace_of(divergences, active=None, **negative) -> GuidanceTrace:
    active = active or [True] * len(divergences)
    steps = [record(i, d, a) for i, (d, a) in enumerate(zip(divergences, active, strict=True))]
    trace = GuidanceTrace(7.5, True, "epsilon", steps=steps)
    for name, value in negative.items():
        setattr(trace, name, value)
    return trace


def test_the_view_opens_where_the_runs_part():
    assert telling_step(trace_of([0.0, 0.03, 0.08, 0.35, 0.50])) == 2  # the first step past 5 % (as the reading)
    # the negative acts only from step 4 on: the runs part there
    assert telling_step(trace_of([0.0, 0.0, 0.0, 0.2, 0.25], [False, False, False, True, True])) == 3
    assert telling_step(trace_of([0.0, 0.01, 0.02])) == 2  # never part: the last step
    assert telling_step(trace_of([0.0, math.nan, 0.1])) == 2
    off = trace_of([0.0, 0.2, 0.3])
    off.cfg_active = False
    assert telling_step(off) == 2


def test_each_caption_states_the_rule_that_was_applied():
    plain = trace_of([0.0, 0.1])
    assert guidance_rule(plain, 0) == "negative + 7.5 × (prompt − negative): the negative took the empty prompt's place"
    stronger = trace_of([0.0, 0.1], negative_strength=1.5)
    assert guidance_rule(stronger, 1) == "empty + 7.5 × (prompt − empty) − 1.5 × (7.5 − 1) × (negative − empty)"
    perp = guidance_rule(trace_of([0.0, 0.1], perp_neg=True), 1)
    assert "perpendicular" in perp and "Perp-Neg" in perp and perp.startswith("empty + 7.5 × (prompt − empty) − 1 ×")
    outside = guidance_rule(trace_of([0.0, 0.1], [False, True]), 0)
    assert "does not act at this step" in outside and outside.startswith("empty + 7.5 × (prompt − empty)")


def test_the_step_slider_of_a_one_step_run_is_a_valid_slider():
    one = step_slider(1, 1)
    assert one["minimum"] < one["maximum"] and one["value"] == 1 and one["interactive"] is False
    many = step_slider(20, 7)
    assert (many["minimum"], many["maximum"], many["value"], many["interactive"]) == (1, 20, 7, True)


def test_the_caption_says_when_the_negative_acts_in_attention():
    nag = guidance_rule(trace_of([0.0, 0.1], negative_mode="nag"), 1)
    assert nag.startswith("empty + 7.5 × (prompt′ − empty)") and "NAG" in nag  # CFG's branch stays the empty one
    both = guidance_rule(trace_of([0.0, 0.1], negative_mode="both", negative_strength=2.0), 1)
    assert both.startswith("empty + 7.5 × (prompt − empty) − 2 × (7.5 − 1)") and both.endswith("(NAG)")
    outside = guidance_rule(trace_of([0.0, 0.1], [False, True], negative_mode="nag"), 0)
    assert "does not act at this step" in outside
    unguided = trace_of([0.0, 0.1], [False, True], negative_mode="nag")
    unguided.cfg_active = False
    assert "acts in attention at this step" in branch_note(unguided, 1, True)
    assert "acts in attention" not in branch_note(unguided, 0, True)
