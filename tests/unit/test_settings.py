"""The one validation matrix: every bad value of every input gets a specific message (the entry points only check
that they pass their input through here, see test_cli/test_app/test_api); good values are completed (seed, the
model's defaults, size)."""

from __future__ import annotations

import re

import pytest

from negprompt_demo.settings import (
    FIELDS,
    MAX_SEED,
    CompareSettings,
    InputError,
    check_weights,
    resolve_settings,
    size_limits,
)

MODEL_DEFAULTS = {"steps": 25, "guidance": 7.5, "scheduler": "Euler"}


def resolve(**fields):
    return resolve_settings(CompareSettings(**{"prompt": "a man", **fields}), 64, MODEL_DEFAULTS)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": " \n\t "}, "prompt is empty"),
        ({"prompt": "x" * 2001}, "2001 characters long"),
        ({"negative": "x" * 5000}, "negative prompt is 5000 characters"),
        ({"prompt": 42}, "prompt must be text"),
        ({"steps": 0}, "steps must be between 1 and 150, got 0"),
        ({"negative_start": 0.6, "negative_end": 0.3}, "starts at 0.6 of the steps but ends at 0.3"),
        ({"negative_start": -0.1}, "negative starts at must be between 0 and 1, got -0.1"),
        ({"negative_end": 1.5}, "negative ends at must be between 0 and 1, got 1.5"),
        ({"negative_end": float("nan")}, "negative ends at must be a finite number"),
        ({"negative_strength": -1}, "negative strength must be between 0 and 10, got -1"),
        ({"negative_strength": 1e9}, "negative strength must be between 0 and 10"),
        ({"perp_neg": "yes"}, "perp_neg must be true or false, got 'yes'"),
        ({"steps": 151}, "steps must be between 1 and 150"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"steps": "ten"}, "steps must be a whole number"),
        ({"guidance": -0.5}, "guidance scale must be between 0 and 30"),
        ({"guidance": 30.5}, "guidance scale must be between 0 and 30"),
        ({"guidance": float("nan")}, "guidance scale must be a finite number"),
        ({"guidance": "lots"}, "guidance scale must be a number"),
        ({"scheduler": "Heun"}, "Unknown scheduler 'Heun'"),
        ({"seed": MAX_SEED + 1}, "seed must be between 0 and 4294967295 (or -1 for random)"),
        ({"seed": -5}, "seed must be between 0 and"),
        (
            {"seed": 1e308},
            "seed must be between 0 and 4294967295 (or -1 for random), got 100000000000000001097906362944045541740…",
        ),
        ({"steps": [3]}, "steps must be a whole number, got [3]"),
        ({"negative": "(a:1.2.3)"}, 'In the negative prompt: The weight "1.2.3" in "(…:1.2.3)" is not a number'),
        ({"prompt": "cat [(a:1.2.3)|dog]"}, 'In the prompt: The weight "1.2.3"'),  # in one step's text only
        ({"guidance": {"a": 1}}, "guidance scale must be a number"),
        ({"guidance": True}, "guidance scale must be a number"),
        ({"scheduler": ["Euler"]}, "Unknown scheduler ['Euler']"),
        ({"scheduler": 3}, "Unknown scheduler 3"),
        ({"push_map": "false"}, "push_map must be true or false, got 'false'"),
        ({"push_map": 1}, "push_map must be true or false, got 1"),
        ({"prompt": "a \ud800 man"}, "prompt contains an invalid character"),
        ({"negative": ["mustache"]}, "negative prompt must be text, got list"),
        ({"width": "x" * 5000}, "width must be a whole number, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…"),
        ({"steps": 0}, "steps must be between 1 and 150, got 0"),
        ({"negative_start": 0.6, "negative_end": 0.3}, "starts at 0.6 of the steps but ends at 0.3"),
        ({"negative_start": -0.1}, "negative starts at must be between 0 and 1, got -0.1"),
        ({"negative_end": 1.5}, "negative ends at must be between 0 and 1, got 1.5"),
        ({"negative_end": float("nan")}, "negative ends at must be a finite number"),
        ({"negative_strength": -1}, "negative strength must be between 0 and 10, got -1"),
        ({"negative_strength": 1e9}, "negative strength must be between 0 and 10"),
        ({"perp_neg": "yes"}, "perp_neg must be true or false, got 'yes'"),
        ({"seed": True}, "seed must be a whole number"),
        ({"width": 60}, "width must be a multiple of 8"),
        ({"height": 136}, "height must be between 32 and 128 px"),
        ({"width": 16}, "width must be between 32 and 128 px"),
        ({"negative_embedding": 3}, "negative embedding must be a file name (text), got int"),
        ({"negative_embedding": "bad\x00.safetensors"}, "contains a control character"),
        ({"negative_embedding": "x" * 1025}, "negative embedding is 1025 characters long; the limit is 1024"),
    ],
)
def test_bad_input_gets_a_specific_message(fields, message):
    with pytest.raises(InputError, match=re.escape(message)):
        resolve(**fields)


def test_blank_fields_are_completed():
    resolved = resolve(seed=None, width=None, height=None)
    assert 0 <= resolved.seed <= MAX_SEED
    assert (resolved.width, resolved.height) == (64, 64)
    assert resolve(seed=-1).seed != -1  # -1 means random, as in A1111
    assert (resolve(width=0, height="").width, resolve(height=0).height) == (64, 64)  # 0: native size


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"prompt": "  a\tman,\n (old:1.2)  ", "negative": "x\x00y", "seed": "7", "steps": 12.0, "guidance": "3"},
        {"negative": "[hat:0.3]", "negative_start": 0.25, "width": 0, "negative_mode": "nag", "nag_alpha": None},
    ],
)
def test_resolved_settings_resolve_to_themselves(fields):
    """A link's values are resolved to fill the page, then resolved again when the run starts: nothing changes."""
    once = resolve(**fields)
    assert resolve_settings(once, 64, MODEL_DEFAULTS) == once


def test_blank_fields_take_the_models_defaults():
    resolved = resolve_settings(
        CompareSettings(prompt="a man"), 64, {"steps": 12, "guidance": 3.0, "scheduler": "DDIM"}
    )
    assert (resolved.steps, resolved.guidance, resolved.scheduler) == (12, 3.0, "DDIM")
    assert resolve(steps=7, guidance=0).steps == 7 and resolve(guidance=0).guidance == 0  # 0 is a value here
    assert resolve(push_map=False).push_map is False and resolve().push_map is True


def test_every_input_is_declared_once_with_label_and_help():
    assert list(FIELDS) == [
        *("prompt", "negative", "seed", "steps", "guidance", "scheduler", "width", "height"),
        *("negative_start", "negative_end", "negative_strength", "negative_mode", "nag_scale", "nag_tau"),
        *("nag_alpha", "perp_neg", "push_map", "empty_as_text"),
        *("attention_maps", "attention_mid_block", "negative_embedding"),
    ]
    for name, field in FIELDS.items():
        assert field.label and field.help, name
        assert field.kind in ("text", "int", "float", "choice", "flag", "file"), name


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


def test_window_strength_and_perp_neg_in_the_parameters_text():
    text = resolve(seed=3, negative="mustache", negative_start=0.3, negative_strength=2, perp_neg=True)
    assert "Negative prompt: [mustache:7]\n" in text.parameters_text("m")  # 0.3 of 25: switch at step 7
    assert "Negative strength: 2, Perp-Neg: True, Model: m" in text.parameters_text("m")
    assert "Negative prompt: [mustache::15]\n" in resolve(negative="mustache", negative_end=0.6).parameters_text("m")
    assert 'Empty baseline: "", Model: m' in resolve(empty_as_text=True).parameters_text("m")
    assert "Empty baseline" not in resolve().parameters_text("m")


def test_parameters_text_is_a1111_style():
    text = resolve(seed=3, negative="mustache").parameters_text("embedded")
    assert text == (
        "a man\nNegative prompt: mustache\nSteps: 25, Sampler: Euler, CFG scale: 7.5, Seed: 3, Size: 64x64, "
        "Model: embedded"
    )


def test_embedding_path_is_kept_as_given_and_named_in_the_parameters_text():
    resolved = resolve(seed=3, negative="EasyNegative", negative_embedding="  my files/EasyNegative.safetensors ")
    assert resolved.negative_embedding == "my files/EasyNegative.safetensors"
    assert "Size: 64x64, Negative embedding: EasyNegative, Model: m" in resolved.parameters_text("m")
    assert resolve(negative_embedding=None).negative_embedding == ""


def test_nag_inputs_take_the_authors_defaults_and_are_checked():
    resolved = resolve()
    assert resolved.negative_mode == "cfg" and not resolved.uses_nag()
    assert (resolved.nag_scale, resolved.nag_tau, resolved.nag_alpha) == (5.0, 2.5, 0.5)
    joint = resolve_settings(CompareSettings(prompt="a man"), 64, {**MODEL_DEFAULTS, "nag_alpha": 0.125})
    assert joint.nag_alpha == 0.125  # a model's own default (SD3's joint attention) wins
    assert resolve(negative_mode="both", nag_scale="3").nag_scale == 3.0
    for fields, message in (
        ({"negative_mode": "attention"}, "Unknown negative_mode 'attention'; choose one of: cfg, nag, both."),
        ({"nag_scale": 0.5}, "NAG scale must be between 1 and 20, got 0.5."),
        ({"nag_tau": 0.9}, "NAG tau must be between 1 and 10, got 0.9."),
        ({"nag_alpha": 1.5}, "NAG alpha must be between 0 and 1, got 1.5."),
    ):
        with pytest.raises(InputError) as error:
            resolve(**fields)
        assert str(error.value) == message


def test_png_parameters_carry_nag_as_extra_keys():
    plain = resolve(negative="hat", seed=1).parameters_text("embedded")
    assert "NAG" not in plain and "Negative mode" not in plain
    text = resolve(negative="hat", seed=1, negative_mode="nag", nag_alpha=0.25).parameters_text("embedded")
    assert ", Negative mode: nag, NAG scale: 5, NAG tau: 2.5, NAG alpha: 0.25," in text


def test_500_nested_brackets_are_refused_naming_the_weight():
    with pytest.raises(InputError, match=r"gives “face” a weight of 4.97e\+20; weights must be between −100 and 100"):
        check_weights("(" * 500 + "face", "negative prompt")


def test_a_400_digit_weight_is_refused_as_too_large_not_blamed_on_fp16():
    with pytest.raises(InputError, match="The prompt gives “face” a weight of too large to be a number") as caught:
        check_weights("(face:" + "9" * 400 + ")", "prompt")
    assert "fp16" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("text", ["(face:1.5)", "[face]", "((((face))))", "(face:-1)", "a plain prompt", ""])
def test_ordinary_weights_pass(text):
    check_weights(text, "prompt")
