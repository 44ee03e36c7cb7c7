"""A1111's prompt weights (syntax/prompt_syntax.py): its attention doctests restated, brackets, BREAK, escapes, and a
weight that is not a number (how the weighted text is tokenized and encoded is in tests/unit/models/test_prompts.py)."""

from __future__ import annotations

import pytest

from negprompt_demo.syntax.prompt_syntax import BREAK, WeightError, parse_weights


def weights_of(text: str) -> list[tuple[str, float | None]]:
    return [
        (fragment.text, None if fragment.weight is None else round(fragment.weight, 6))
        for fragment in parse_weights(text)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a man, mustache", [("a man, mustache", 1.0)]),
        ("a (mustache) b", [("a ", 1.0), ("mustache", 1.1), (" b", 1.0)]),
        ("((mustache))", [("mustache", 1.21)]),
        ("[mustache]", [("mustache", round(1 / 1.1, 6))]),
        ("(worst quality:1.4), lowres", [("worst quality", 1.4), (", lowres", 1.0)]),
        ("((hat:1.5))", [("hat", 1.65)]),  # nested groups multiply
        ("(a (b:2) c)", [("a ", 1.1), ("b", 2.2), (" c", 1.1)]),
        ("(hat:0.5) ( beard : 1.3 )", [("hat", 0.5), (" ", 1.0), (" beard ", 1.3)]),
        (r"\(literal\) x", [("(literal) x", 1.0)]),
        ("(unclosed", [("unclosed", 1.1)]),  # an open bracket weighs everything after it
        ("stray) and ]", [("stray) and ]", 1.0)]),
        ("ratio 16:9", [("ratio 16:9", 1.0)]),
        ("a BREAK b", [("a", 1.0), (BREAK, None), ("b", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_weights_as_a1111_reads_them(text, expected):
    assert weights_of(text) == expected


# modules/prompt_parser.py, parse_prompt_attention's doctests, restated (exact floats, as A1111 prints them).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),  # fmt: skip
    ],
)
def test_a1111_attention_doctests(text, expected):
    assert [(fragment.text, fragment.weight) for fragment in parse_weights(text)] == expected


def test_break_inside_brackets_is_the_word_with_the_brackets_weight_times_minus_one():
    # A1111 marks BREAK with weight -1 and the brackets multiply the mark: it is no longer a break.
    assert weights_of("(a BREAK b)") == [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]
    assert weights_of("[x BREAK y") == [
        ("x", round(1 / 1.1, 6)),
        ("BREAK", round(-1 / 1.1, 6)),
        ("y", round(1 / 1.1, 6)),
    ]
    assert weights_of("a BREAK (b)") == [("a", 1.0), (BREAK, None), ("", 1.0), ("b", 1.1)]


def test_a_lone_backslash_is_dropped_and_escapes_stay():
    assert weights_of("a \\ b") == [("a  b", 1.0)]
    assert weights_of("16\\:9") == [("16:9", 1.0)]
    assert weights_of("back\\\\slash") == [("back\\slash", 1.0)]


def test_a_weight_that_is_not_a_number_is_a_clear_error():
    with pytest.raises(WeightError, match=r'The weight "1.2.3" in "\(…:1.2.3\)" is not a number'):
        parse_weights("x (a:1.2.3)")
    assert weights_of("a:1.2.3) x") == [("a:1.2.3) x", 1.0)]  # no open bracket: text, as in A1111
