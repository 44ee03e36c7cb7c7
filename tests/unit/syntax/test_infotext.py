"""The PNG `parameters` read back as A1111 reads them: the negative line's schedule (A1111's step counting, both
its default scheduling and its older "use_old_scheduling") and each step's weights give the steps and text that
ran, for every window the page can set; settings A1111 lacks are extra keys."""

from __future__ import annotations

import json
import re

import pytest

from negprompt_demo.settings import CompareSettings, resolve_settings
from negprompt_demo.syntax import prompt_editing
from negprompt_demo.syntax.prompt_editing import step_texts, window_steps
from negprompt_demo.syntax.prompt_syntax import parse_weights

NEGATIVES = [
    "mustache",
    "blurry, bad hands, lowres",
    "(worst quality:1.4), lowres",
    "((sky)), [hat]",
    "cat:dog",
    "ratio 16:9",
    "a|b",
    "(unbalanced",
    "deformed] hands",
    "(a [b) c]",
    "text BREAK watermark",
    "(a BREAK b)",
    "back\\\\slash \\\\(literal\\\\)",
    "[mustache:0.3]",
    "[beard:mustache:0.5], hat",
    "[cat|dog] hair",
    "a [b:3] c",
    "x [y::7] (z:0.8)",
]
GRID = [i * 5 / 100 for i in range(21)]


def read_back(parameters: str) -> tuple[str, int]:
    """The negative line and the steps, as A1111's infotext reader splits them."""
    lines = parameters.split("\n")
    negative = next(line for line in lines if line.startswith("Negative prompt: "))[len("Negative prompt: ") :]
    steps = int(re.search(r"Steps: (\d+)", lines[-1]).group(1))
    return negative, steps


def reading(text: str) -> list[tuple[str, float | None]]:
    """What the text encoder is given: the weighted stretches (empty ones give no tokens)."""
    return [(fragment.text, fragment.weight) for fragment in parse_weights(text) if fragment.text]


def ran(settings: CompareSettings) -> list[list]:
    """The negative each step of the with-run used: its schedule's text inside the window, nothing outside."""
    first, stop = window_steps(settings.negative_start, settings.negative_end, settings.steps)
    texts = step_texts(settings.negative, settings.steps)
    return [reading(text) if first <= step < stop else [] for step, text in enumerate(texts)]


def old_switch_step(when: str, steps: int) -> int:
    """A1111's "use_old_scheduling": a number below 1 is a fraction, any other a step number."""
    value = float(when)
    return min(steps, int(value * steps if value < 1 else value))


def resolve(**fields) -> CompareSettings:
    return resolve_settings(CompareSettings("a man", seed=1, **fields), 64, {"steps": 20, "guidance": 7.5,
                                                                            "scheduler": "Euler"})  # fmt: skip


@pytest.mark.parametrize("negative", NEGATIVES)
@pytest.mark.parametrize("steps", [1, 7, 20, 25])
def test_every_window_reads_back_to_the_steps_and_text_that_ran(negative, steps, monkeypatch):
    for start in GRID:
        for end in (e for e in GRID if e >= start):
            settings = resolve(negative=negative, steps=steps, negative_start=start, negative_end=end)
            written, read_steps = read_back(settings.parameters_text("m"))
            expected = ran(settings)
            for switch in (prompt_editing.switch_step, old_switch_step):
                monkeypatch.setattr(prompt_editing, "switch_step", switch)
                got = [reading(text) for text in step_texts(written, read_steps)]
                assert got == expected, (negative, steps, start, end, written, switch.__name__)


def test_a_negative_that_nests_is_written_as_typed():
    assert read_back(resolve(negative="mustache", negative_start=0.3).parameters_text("m"))[0] == "[mustache:6]"
    both = resolve(negative="(hat:1.2)", negative_start=0.3, negative_end=0.6).parameters_text("m")
    assert read_back(both)[0] == "[[(hat:1.2):6]::12]"
    assert read_back(resolve(negative="cat:dog").parameters_text("m"))[0] == "cat:dog"  # no window: as typed


def test_syntax_characters_are_escaped_inside_the_window():
    assert read_back(resolve(negative="cat:dog", negative_start=0.5).parameters_text("m"))[0] == "[:cat\\:dog:10]"
    assert read_back(resolve(negative="(unbalanced", negative_end=0.5).parameters_text("m"))[0] == (
        "[(unbalanced:1.1)::10]"
    )


def test_a_window_with_no_step_leaves_the_negative_out_and_keeps_it_as_an_extra_key():
    never = resolve(negative="cat, dog: 2", negative_start=1.0).parameters_text("m")
    assert read_back(never)[0] == ""
    unused = re.search(r"Unused negative: (\"(?:\\.|[^\\\"])*\")", never).group(1)
    assert json.loads(unused) == "cat, dog: 2"
    off = resolve(negative="hat", negative_strength=0).parameters_text("m")
    assert read_back(off)[0] == "" and "Unused negative: hat, Negative strength: 0" in off


def test_settings_a1111_lacks_are_extra_keys():
    text = resolve(negative="x", negative_strength=2, perp_neg=True, empty_as_text=True).parameters_text("m")
    assert 'Negative strength: 2, Perp-Neg: True, Empty baseline: "", Model: m' in text
