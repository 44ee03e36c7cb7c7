"""A1111's prompt-weight syntax, read the way AUTOMATIC1111's web UI reads it.

    (word)        weight ×1.1          ((word)) ×1.21, and so on
    [word]        weight ÷1.1
    (word:1.3)    weight 1.3 (a number; nested groups multiply)
    \\( \\) \\[ \\]   literal brackets
    BREAK         start a new 75-token chunk here

An unclosed bracket weighs everything after it, a stray closing one is text, and ":" is text outside a
"(…:number)". Prompt editing (`[a:b:0.3]`, `[a|b]`) is not read as such (the negative's window settings do
that); its brackets weigh the text like any other square bracket, as A1111's attention parser alone would.

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

# One syntax element per match: an escaped character, an opening bracket, "(…:number)"'s closing part, a closing
# bracket, a run of plain text, or a lone ":" or "\".
_ELEMENT = re.compile(
    r"""
      (?P<escaped>\\[()\[\]\\])
    | (?P<open>[(\[])
    | (?P<weight>:\s*[+-]?[.\d]+\s*\))
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+)
    | (?P<other>[:\\])
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")


@dataclass
class Fragment:
    """A piece of text and its weight; `text == BREAK` with weight None marks a chunk break."""

    text: str
    weight: float | None


def has_syntax(text: str) -> bool:
    """Whether A1111 would read anything in `text` other than plain words (brackets, escapes, BREAK)."""
    return bool(_SYNTAX.search(text))


def parse_weights(text: str) -> list[Fragment]:
    """The text as fragments of equal weight, in order (adjacent equal weights merged), with BREAK markers."""
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
        elif kind == "open":
            (open_round if value == "(" else open_square).append(len(fragments))
        elif kind == "weight" and open_round and _number(value) is not None:
            weigh_from(open_round.pop(), _number(value))
        elif kind == "close" and value == ")" and open_round:
            weigh_from(open_round.pop(), ROUND_MULTIPLIER)
        elif kind == "close" and value == "]" and open_square:
            weigh_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:  # plain text, or syntax with nothing to act on (a stray ")", a lone ":")
            for index, part in enumerate(_BREAK.split(value)):
                if index:
                    fragments.append(Fragment(BREAK, None))
                fragments.append(Fragment(part, 1.0))
    for start in open_round:  # unclosed brackets weigh everything after them
        weigh_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        weigh_from(start, SQUARE_MULTIPLIER)
    return _merged(fragments) or [Fragment("", 1.0)]


def _number(weight_text: str) -> float | None:
    try:
        return float(weight_text[1:-1].strip())
    except ValueError:  # "1.2.3" is no number: the group stays open, the text is read as text
        return None


def _merged(fragments: list[Fragment]) -> list[Fragment]:
    merged: list[Fragment] = []
    for fragment in fragments:
        if merged and fragment.weight is not None and merged[-1].weight == fragment.weight:
            merged[-1].text += fragment.text
        else:
            merged.append(fragment)
    return merged
