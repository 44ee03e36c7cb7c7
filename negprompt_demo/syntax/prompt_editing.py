"""A1111's prompt editing: which text a prompt stands for at each sampling step.

    [to:when]         nothing, then "to" once the step passes `when`
    [from::when]      "from", then nothing
    [from:to:when]    "from", then "to" (nested freely: [a:[b:c:0.6]:0.3])
    [a|b|c]           alternation: a, b, c, a, … one option per step

Counted as AUTOMATIC1111's web UI counts (modules/prompt_parser.py with its default scheduling, and the CFG
denoiser that reads the schedule):
- `when` with a decimal point is a fraction of the steps, without one a step number: the switch point is
  min(steps, int(when·steps)) or min(steps, int(when)). (A1111's older "use_old_scheduling" option read every
  number ≥ 1 as a step number instead; the two agree on every fraction below 1 but 0 < when·steps < 1.)
- The schedule is a list of (end_at_step, text) entries, one per distinct switch point ≥ 1 and one at `steps`
  (every step 1…steps where there is an alternation); an entry's text has "from" where end_at_step ≤ when, "to"
  after, and option (end_at_step − 1) mod count of an alternation.
- Sampling step k = 0, 1, … uses the first entry whose end_at_step ≥ k. So `[neg:0.3]` at 20 steps (switch point
  6) is empty at k = 0…6 and "neg" from k = 7; `[a|b]` is a at k = 0 and 1, then b, a, b, …

What does not parse as editing stays text, as in A1111: a stray bracket or ":" outside any group is kept as it is,
and a "|" outside an alternation (or a lone backslash at the end) makes the whole text plain. The text of each
step is then read for weights by `prompt_syntax.parse_weights`, exactly as A1111 reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+", re.S)
_WHITESPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))\s*\]")
_STRAY = "[]():"  # kept as text where they open or close nothing, outside every group


@dataclass
class Scheduled:
    before: list | None  # None: "[to:when]", nothing before
    after: list
    when: str  # as written: a decimal point makes it a fraction


@dataclass
class Alternate:
    options: list[list]


@dataclass
class Group:
    """(…), (…:…) or […]: weights, read later by prompt_syntax; kept here as its own brackets and contents."""

    opening: str
    parts: list[list]  # one part, or two around a ":" in "(…:…)"
    closing: str


class _NoParse(Exception):
    pass


def parse(text: str) -> list:
    """The text as a list of nodes: strings, `Group`, `Scheduled`, `Alternate` (a single string if A1111's
    parser would reject the text, which it then reads as written)."""
    try:
        nodes, position = [], 0
        while position < len(text):
            part, position = _prompt(text, position)
            nodes += part
            if position < len(text):
                if text[position] not in _STRAY:  # "|" outside an alternation, a lone "\" at the end
                    raise _NoParse
                nodes.append(text[position])
                position += 1
        return nodes
    except _NoParse:
        return [text]


def _prompt(text: str, position: int) -> tuple[list, int]:
    """Elements up to the first character none can start (a closing bracket, ":", "|", or a group that does not
    close: the caller decides)."""
    nodes = []
    while position < len(text):
        match = _PLAIN.match(text, position) or _WHITESPACE.match(text, position)
        if match:
            nodes.append(match.group())
            position = match.end()
            continue
        if text[position] not in "([":
            break
        try:
            node, position = _group(text, position)
        except _NoParse:
            break
        nodes.append(node)
    return nodes, position


def _group(text: str, position: int) -> tuple[object, int]:
    opening = text[position]
    first, position = _prompt(text, position + 1)
    following = text[position : position + 1]
    if opening == "(":
        if following == ")":
            return Group("(", [first], ")"), position + 1
        if following == ":":
            second, position = _prompt(text, position + 1)
            if text[position : position + 1] == ")":
                return Group("(", [first, second], ")"), position + 1
        raise _NoParse
    if following == "]":
        return Group("[", [first], "]"), position + 1
    if following == "|":
        options = [first]
        while text[position : position + 1] == "|":
            option, position = _prompt(text, position + 1)
            options.append(option)
        if text[position : position + 1] == "]":
            return Alternate(options), position + 1
        raise _NoParse
    if following == ":":
        number = _NUMBER.match(text, position + 1)
        if number:  # [to:when]
            return Scheduled(None, first, number.group(1)), number.end()
        second, position = _prompt(text, position + 1)
        number = _NUMBER.match(text, position + 1) if text[position : position + 1] == ":" else None
        if number:  # [from:to:when]
            return Scheduled(first, second, number.group(1)), number.end()
    raise _NoParse


def switch_step(when: str, steps: int) -> int:
    """Where a `when` switches, as A1111 counts it (see the module docstring)."""
    value = float(when) * steps if "." in when else float(when)
    return min(steps, int(value))


def schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """A1111's schedule of the text: (end_at_step, text) entries in order (see the module docstring)."""
    nodes = parse(text)
    points = {steps}
    _collect_points(nodes, steps, points)
    return [(point, _text_at(nodes, point, steps)) for point in sorted(points)]


def _collect_points(nodes: list, steps: int, points: set[int]) -> None:
    for node in nodes:
        if isinstance(node, Scheduled):
            point = switch_step(node.when, steps)
            if point >= 1:
                points.add(point)
            _collect_points(node.before or [], steps, points)
            _collect_points(node.after, steps, points)
        elif isinstance(node, Alternate):
            points.update(range(1, steps + 1))
            for option in node.options:
                _collect_points(option, steps, points)
        elif isinstance(node, Group):
            for part in node.parts:
                _collect_points(part, steps, points)


def _text_at(nodes: list, point: int, steps: int) -> str:
    pieces = []
    for node in nodes:
        if isinstance(node, str):
            pieces.append(node)
        elif isinstance(node, Scheduled):
            chosen = (node.before or []) if point <= switch_step(node.when, steps) else node.after
            pieces.append(_text_at(chosen, point, steps))
        elif isinstance(node, Alternate):
            pieces.append(_text_at(node.options[(point - 1) % len(node.options)], point, steps))
        else:
            inner = ":".join(_text_at(part, point, steps) for part in node.parts)
            pieces.append(node.opening + inner + node.closing)
    return "".join(pieces)


def window_steps(start: float, end: float, steps: int) -> tuple[int, int]:
    """A fraction window of the sampling steps as the 0-based steps [first, stop) at which the negative acts,
    counted as A1111 counts `[[neg:start]::end]`: switch points S = int(start·steps) and
    E = int(end·steps); step k uses the first schedule entry ending at or after k, so the negative acts at
    S < k ≤ E (from k = 0 when S = 0; never when E = 0). `[neg:0.3]` at 20 steps acts on k = 7…19."""
    first_switch, last_switch = min(steps, int(start * steps)), min(steps, int(end * steps))
    first = min(steps, first_switch + 1) if first_switch >= 1 else 0
    stop = min(steps, last_switch + 1) if last_switch >= 1 else 0
    return first, max(first, stop)


def text_at_step(entries: list[tuple[int, str]], step: int) -> str:
    """The text sampling step `step` (0-based) uses: the first entry whose end_at_step ≥ step."""
    return next((text for end, text in entries if step <= end), entries[-1][1])


def step_texts(text: str, steps: int) -> list[str]:
    """The text of each sampling step 0 … steps − 1."""
    entries = schedule(text, steps)
    return [text_at_step(entries, step) for step in range(steps)]
