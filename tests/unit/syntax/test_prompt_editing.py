"""A1111's prompt editing and step counting: its doctests (modules/prompt_parser.py,
get_learned_conditioning_prompt_schedules) restated, the denoiser's step counting (sd_samplers_cfg_denoiser.py: step
k = 0, 1, … uses the first schedule entry with k ≤ end_at_step), and the window fields counted the same way."""

from __future__ import annotations

import pytest

from negprompt_demo.syntax.prompt_editing import schedule, step_texts, window_steps

# A1111's doctests at 10 steps, as they stand in prompt_parser.py (default scheduling, no hires pass).
A1111_DOCTESTS = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(step, "a" if step % 2 else "(b:1.1)") for step in range(1, 11)]),
    ("[fe|]male", [(step, "female" if step % 2 else "male") for step in range(1, 11)]),
    ("[fe|||]male", [(step, "female" if step % 4 == 1 else "male") for step in range(1, 11)]),
]


@pytest.mark.parametrize("text, expected", A1111_DOCTESTS)
def test_schedules_equal_a1111_doctests(text, expected):
    assert schedule(text, 10) == expected


def test_a_decimal_point_makes_a_fraction_and_none_a_step_number():
    # A1111's default scheduling: "1.5" is 1.5·steps (capped at the steps), "1" is step 1.
    assert schedule("a [b:1.5] c", 10) == [(10, "a  c")]
    assert schedule("[neg:1]", 20) == [(1, ""), (20, "neg")]
    assert schedule("[neg:1.0]", 20) == [(20, "")]


@pytest.mark.parametrize("text", ["a|b", "cat:dog", "ratio 16:9", "(unbalanced", "deformed] hands", "trailing \\"])
def test_what_a1111_cannot_parse_stays_the_text(text):
    assert schedule(text, 20) == [(20, text)]


def test_issue_examples_at_20_steps():
    acts = lambda text: [k for k, step_text in enumerate(step_texts(text, 20)) if "neg" in step_text]  # noqa: E731
    assert acts("[neg:0.3]") == list(range(7, 20))
    assert acts("[neg::0.6]") == list(range(0, 13))
    assert acts("[[neg:0.3]::0.6]") == list(range(7, 13))
    # the issue's negative: nothing up to step 7, then "mustache"
    assert step_texts("[mustache:0.3]", 20) == [""] * 7 + ["mustache"] * 13


def test_alternation_steps_k0_and_k1_share_the_first_option():
    # Entries end at 1, 2, …; step 0 and step 1 both take the entry ending at 1 (option 0), step k ≥ 1 option
    # (k − 1) mod count.
    assert step_texts("[cat|dog] photo", 6) == ["cat photo", "cat photo", "dog photo", "cat photo", "dog photo",
                                               "cat photo"]  # fmt: skip
    assert step_texts("[a|b|c]", 5) == ["a", "a", "b", "c", "a"]


def test_nested_editing_and_from_to():
    assert step_texts("[a:[b:c:0.6]:0.3]", 10) == ["a"] * 4 + ["b"] * 3 + ["c"] * 3
    assert step_texts("[from:to:4]", 8) == ["from"] * 5 + ["to"] * 3


def reference_window(start: float, end: float, steps: int) -> list[int]:
    """The steps at which `[[neg:start]::end]` has "neg", by A1111's documented rules restated: switch points
    p = min(steps, int(f·steps)), entries at the points ≥ 1 and at `steps`; the entry ending at t holds "neg"
    where start's point < t ≤ end's point; step k takes the first entry ending at or after k."""
    start_point, end_point = (min(steps, int(f * steps)) for f in (start, end))
    ends = sorted({steps} | {p for p in (start_point, end_point) if p >= 1})
    has_neg = {t: start_point < t <= end_point for t in ends}
    return [k for k in range(steps) if has_neg[next(t for t in ends if k <= t)]]


def test_windows_on_the_005_grid_count_as_a1111_for_1_to_150_steps():
    grid = [i * 5 / 100 for i in range(21)]
    for steps in range(1, 151):
        for start in grid:
            for end in grid:
                if start > end:
                    continue
                first, stop = window_steps(start, end, steps)
                assert list(range(first, stop)) == reference_window(start, end, steps), (start, end, steps)


def test_window_fields_equal_the_written_editing_syntax():
    for steps in (1, 7, 10, 20, 25, 30, 50):
        for start, end in ((0.3, 1.0), (0.0, 0.6), (0.3, 0.6), (0.05, 0.95), (0.5, 0.5)):
            first, stop = window_steps(start, end, steps)
            texts = step_texts(f"[[neg:{start}]::{end}]", steps)
            assert [k for k, text in enumerate(texts) if text == "neg"] == list(range(first, stop))
