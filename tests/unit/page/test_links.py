"""Links that reopen a comparison: building the query from resolved settings and reading it back through the same
checks as typed input (no server; the page's use of them is in test_app and test_browser)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from negprompt_demo.page.links import LINK_NAMES, link_query, link_values
from negprompt_demo.settings import DEFAULTS, FIELDS, CompareSettings, InputError, resolve_settings

MODEL_DEFAULTS = {"steps": 25, "guidance": 7.5, "scheduler": "Euler"}
NATIVE = 64


def resolve(**fields) -> CompareSettings:
    return resolve_settings(CompareSettings(**fields), NATIVE, MODEL_DEFAULTS)


def reopen(query: str) -> tuple[str | None, CompareSettings]:
    """What the page does with a link: the browser's query parameters, read and checked like typed input."""
    values = link_values(dict(parse_qsl(urlsplit(query).query, keep_blank_values=True)))
    model = values.pop("model", None)
    return model, resolve(**values)


# A value other than the default for every field, with text that needs encoding.
CHANGED = {
    "prompt": "a man & a dog = 100% #1 ?x=<b>'\"",
    "negative": "mustache, ünïcode 猫 ~_.-+",
    "seed": 4294967295,
    "steps": 7,
    "guidance": 0.1 + 0.2,  # 0.30000000000000004: only repr gives it back exactly
    "scheduler": "DPM++ 2M Karras",
    "width": 48,
    "height": 120,
    "negative_start": 0.25,
    "negative_end": 0.75,
    "negative_strength": 2.5,
    "negative_mode": "both",
    "nag_scale": 3.5,
    "nag_tau": 1.5,
    "nag_alpha": 0.25,
    "perp_neg": True,
    "push_map": False,
    "empty_as_text": True,
    "attention_maps": True,
    "attention_mid_block": True,
}


def test_every_field_round_trips():
    assert set(CHANGED) == set(FIELDS) - {"negative_embedding"}  # a new field must be added here (or refused)
    settings = resolve(**CHANGED)
    query = link_query("someone/model", settings, "embedded")
    assert query.startswith("?model=someone%2Fmodel&")
    assert [name for name, _ in parse_qsl(query[1:])] == list(LINK_NAMES)  # named like the inputs, in order
    assert reopen(query) == ("someone/model", settings)


def test_a_link_never_names_a_file_on_the_server():
    settings = resolve(
        prompt="a man", negative="EasyNegative", negative_embedding="/tmp/gradio/x/EasyNegative.safetensors"
    )
    query = link_query("embedded", settings, "embedded")
    assert "negative_embedding" not in query and "safetensors" not in query
    assert "negative_embedding" not in link_values({"prompt": "a", "negative_embedding": "/etc/passwd"})


def test_only_non_defaults_and_the_seed_are_written():
    settings = resolve(prompt="a man", seed=0)
    query = link_query("embedded", settings, "embedded")
    names = [name for name, _ in parse_qsl(query[1:])]
    # The model's defaults that were filled in are written, so the link runs the same comparison.
    assert names == ["prompt", "seed", "steps", "guidance", "scheduler", "width", "height"]
    assert "seed=0" in query and "model" not in names and "negative" not in names
    assert reopen(query) == (None, settings)
    for name in ("negative_start", "negative_end", "perp_neg", "push_map"):
        assert getattr(reopen(query)[1], name) == DEFAULTS[name]


def test_query_is_encoded_so_it_cannot_break_out_of_an_attribute_or_the_url():
    hostile = "javascript:alert(1)//\"><script>x</script>' \n&seed=5#frag"
    settings = resolve(prompt=hostile, negative="a\tb", seed=3)
    query = link_query("embedded", settings, "embedded")
    assert set(query[1:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~%+=&")
    assert query.count("seed=") == 1 and query.startswith("?prompt=javascript%3A")
    assert reopen(query)[1] == settings


@pytest.mark.parametrize(
    "params, typed, message",
    [
        ({"steps": "0"}, 0, "steps must be between 1 and 150, got 0."),
        ({"steps": "ten"}, "ten", "steps must be a whole number, got 'ten'."),
        ({"steps": "2.5"}, 2.5, "steps must be a whole number, got 2.5."),
        ({"seed": "-5"}, -5, "seed must be between 0 and 4294967295 (or -1 for random), got -5."),
        ({"seed": "1e308"}, 1e308, "seed must be between 0 and 4294967295 (or -1 for random), got 1000"),
        ({"seed": "x" * 5000}, "x" * 5000, "seed must be a whole number, got 'xxxxxxxx"),
        ({"guidance": "nan"}, "nan", "guidance scale must be a finite number, got 'nan'."),
        ({"guidance": "lots"}, "lots", "guidance scale must be a number, got 'lots'."),
        ({"scheduler": "<script>"}, "<script>", "Unknown scheduler '<script>'; choose one of: Euler,"),
        ({"perp_neg": "yes"}, "yes", "perp_neg must be true or false, got 'yes'."),
        ({"push_map": "1"}, "1", "push_map must be true or false, got '1'."),
        ({"prompt": "x" * 100_000}, "x" * 100_000, "The prompt is 100000 characters long; the limit is 2000."),
        ({"prompt": "  "}, "  ", "The prompt is empty"),
        ({"prompt": "a \ud800 man"}, "a \ud800 man", "The prompt contains an invalid character"),
        ({"negative_end": "1.5"}, 1.5, "negative ends at must be between 0 and 1, got 1.5."),
        ({"width": "50"}, 50, "width must be a multiple of 8, got 50."),
        ({"height": "4096"}, 4096, "height must be between 32 and 128 px for this model, got 4096."),
    ],
)
def test_bad_values_get_the_messages_typed_input_gets(params, typed, message):
    """A link's text goes through `resolve_settings`, and gets the message the same value gets typed into the
    page (a number box sends numbers, text boxes text) or sent to the API."""
    (name,) = params
    with pytest.raises(InputError) as from_link:
        resolve(**{"prompt": "a man", **link_values(params)})
    with pytest.raises(InputError) as from_typed:
        resolve(**{"prompt": "a man", name: typed})
    assert str(from_link.value) == str(from_typed.value)
    assert str(from_link.value).startswith(message) and len(str(from_link.value)) < 200


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("7", "int", 7),
        (" 7 ", "int", 7),
        ("7.0", "int", 7.0),  # a number box sends 7.0; resolve_settings takes it as 7
        ("2.5", "int", 2.5),  # refused later as "not a whole number", as typed
        ("ten", "int", "ten"),
        ("7.5", "float", "7.5"),  # resolve_settings reads number text itself
        ("TRUE", "flag", True),
        ("false", "flag", False),
        ("yes", "flag", "yes"),
        ("Euler a", "choice", "Euler a"),
    ],
)
def test_query_text_is_typed_as_a_form_would_send_it(text, kind, expected):
    name = next(name for name, field in FIELDS.items() if field.kind == kind)
    value = link_values({name: text})[name]
    assert value == expected and type(value) is type(expected)


def test_a_plain_visit_or_unrelated_parameters_are_not_a_link():
    assert link_values({}) is None
    assert link_values({"__theme": "dark", "view": "api"}) is None  # a Space's and Gradio's own parameters
    assert link_values({"__theme": "dark", "seed": "3"}) == {"seed": 3}


def test_blank_values_are_blank_as_typed():
    _, settings = reopen("?prompt=a+man&seed=&steps=&width=0")
    assert settings.steps == 25 and settings.width == NATIVE and 0 <= settings.seed < 2**32
