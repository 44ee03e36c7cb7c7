"""A1111's prompt-weight syntax, read the way AUTOMATIC1111's web UI reads it.

    (word)        weight ×1.1          ((word)) ×1.21, and so on
    [word]        weight ÷1.1
    (word:1.3)    weight 1.3 (a number; nested groups multiply)
    \\( \\) \\[ \\] \\\\  literal brackets and backslash; any other backslash is dropped
    BREAK         start a new 75-token chunk here

An unclosed bracket weighs everything after it, a stray closing one is text, and ":" is text outside a
"(…:number)". As in A1111, BREAK inside brackets is no break: it is the word "break" with the weight −1 times
the brackets' (A1111 marks a break with weight −1 and the brackets multiply that mark). A weight that is not a
number, "(a:1.2.3)", is an error (A1111 stops with Python's "could not convert string to float"); here it is a
message naming the weight. Prompt editing (`[a:b:0.3]`, `[a|b]`) is read before this, per sampling step
(`prompt_editing.py`); each step's text is then read here.

Why not a library: compel (the well-kept one for diffusers) has its own syntax, in which "(cat:1.3)" is the literal
text "cat:1 . 3" and "(cat)" has weight 1, and it weighs differently (up-weighting scales the distance from the empty
prompt's embedding, down-weighting blends with the prompt without the word), so it cannot give A1111's results.
This module only parses (pure Python); `prompts.py` chunks and encodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK = "BREAK"
_BREAK_MARK = -1.0  # A1111's weight for a break; brackets around it multiply it like any weight

# One syntax element per match: an escaped character, a lone backslash (dropped), an opening bracket,
# "(…:number)"'s closing part, a closing bracket, a run of plain text, or a lone ":".
_ELEMENT = re.compile(
    r"""
      (?P<escaped>\\[()\[\]\\])
    | (?P<backslash>\\)
    | (?P<open>[(\[])
    | (?P<weight>:\s*[+-]?[.\d]+\s*\))
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+)
    | (?P<other>:)
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")


class WeightError(ValueError):
    """A "(…:weight)" whose weight is not a number."""


@dataclass
class Fragment:
    """A piece of text and its weight; `text == BREAK` with weight None marks a chunk break."""

    text: str
    weight: float | None


def has_syntax(text: str) -> bool:
    """Whether A1111 would read anything in `text` other than plain words (brackets, escapes, BREAK)."""
    return bool(_SYNTAX.search(text))


def parse_weights(text: str) -> list[Fragment]:
    """The text as fragments of equal weight, in order (adjacent equal weights merged), with BREAK markers.
    Raises WeightError for a weight that is not a number."""
    fragments: list[Fragment] = []
    open_round: list[int] = []  # index of the first fragment inside each open "(" / "["
    open_square: list[int] = []

    def weigh_from(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            if fragment.weight is not None:
                fragment.weight *= factor

    for match in _ELEMENT.finditer(text):
        kind, value = match.lastgroup, match.group()
        if kind == "escaped":
            fragments.append(Fragment(value[1], 1.0))
        elif kind == "backslash":
            continue
        elif kind == "open":
            (open_round if value == "(" else open_square).append(len(fragments))
        elif kind == "weight" and open_round:
            weigh_from(open_round.pop(), _number(value))
        elif kind == "close" and value == ")" and open_round:
            weigh_from(open_round.pop(), ROUND_MULTIPLIER)
        elif kind == "close" and value == "]" and open_square:
            weigh_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:  # plain text, or syntax with nothing to act on (a stray ")", a lone ":")
            for index, part in enumerate(_BREAK.split(value)):
                if index:
                    fragments.append(Fragment(BREAK, _BREAK_MARK))
                fragments.append(Fragment(part, 1.0))
    for start in open_round:  # unclosed brackets weigh everything after them
        weigh_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        weigh_from(start, SQUARE_MULTIPLIER)
    merged = _merged(fragments) or [Fragment("", 1.0)]
    for fragment in merged:  # a mark no bracket multiplied is a break; any other is the word
        if fragment.text == BREAK and fragment.weight == _BREAK_MARK:
            fragment.weight = None
    return merged


def _number(weight_text: str) -> float:
    written = weight_text[1:-1].strip()
    try:
        return float(written)
    except ValueError:
        message = f'The weight "{written}" in "(…:{written})" is not a number; write e.g. (word:1.2).'
        raise WeightError(message) from None


def _merged(fragments: list[Fragment]) -> list[Fragment]:
    merged: list[Fragment] = []
    for fragment in fragments:
        if merged and merged[-1].weight == fragment.weight:
            merged[-1].text += fragment.text
        else:
            merged.append(fragment)
    return merged
