"""Input checks: every bad value gets a specific message; good values are completed (seed, size)."""

from __future__ import annotations

import pytest

from negprompt_demo.settings import MAX_SEED, CompareSettings, InputError, resolve_settings, size_limits


def resolve(**fields):
    return resolve_settings(CompareSettings(**{"prompt": "a man", **fields}), native_size=64)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": " \n\t "}, "prompt is empty"),
        ({"prompt": "x" * 2001}, "2001 characters long"),
        ({"negative": "x" * 5000}, "negative prompt is 5000 characters"),
        ({"prompt": 42}, "prompt must be text"),
        ({"steps": 0}, "steps must be between 1 and 150, got 0"),
        ({"steps": 151}, "steps must be between 1 and 150"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"steps": "ten"}, "steps must be a whole number"),
        ({"guidance": -0.5}, "guidance scale must be between 0 and 30"),
        ({"guidance": 30.5}, "guidance scale must be between 0 and 30"),
        ({"guidance": float("nan")}, "guidance scale must be a finite number"),
        ({"guidance": "lots"}, "guidance scale must be a number"),
        ({"scheduler": "Heun"}, "Unknown scheduler 'Heun'"),
        ({"seed": MAX_SEED + 1}, "seed must be between 0 and"),
        ({"seed": -5}, "seed must be between 0 and"),
        ({"seed": True}, "seed must be a whole number"),
        ({"width": 60}, "width must be a multiple of 8"),
        ({"height": 136}, "height must be between 32 and 128 px"),
        ({"width": 16}, "width must be between 32 and 128 px"),
    ],
)
def test_bad_input_gets_a_specific_message(fields, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        resolve(**fields)


def test_blank_fields_are_completed():
    resolved = resolve(seed=None, width=None, height=None)
    assert 0 <= resolved.seed <= MAX_SEED
    assert (resolved.width, resolved.height) == (64, 64)
    assert resolve(seed=-1).seed != -1  # -1 means random, as in A1111


def test_text_is_cleaned_not_rejected():
    resolved = resolve(prompt="  portrait\nphoto\x00 of a  man ", negative="mus\x1btache")
    assert resolved.prompt == "portrait photo of a man"
    assert resolved.negative == "mustache"
    assert resolve(prompt="Porträt eines Mannes 🧔 без усов").prompt == "Porträt eines Mannes 🧔 без усов"


def test_numbers_from_text_fields_are_accepted():
    resolved = resolve(steps="12", guidance="5.5", seed="42", width="48")
    assert (resolved.steps, resolved.guidance, resolved.seed, resolved.width) == (12, 5.5, 42, 48)


def test_size_limits():
    assert size_limits(64) == (32, 128)
    assert size_limits(512) == (256, 1024)
    assert size_limits(1024) == (512, 2048)


def test_parameters_text_is_a1111_style():
    text = resolve(seed=3, negative="mustache").parameters_text("embedded")
    assert text == (
        "a man\nNegative prompt: mustache\nSteps: 25, Sampler: Euler, CFG scale: 7.5, Seed: 3, Size: 64x64, "
        "Model: embedded"
    )
