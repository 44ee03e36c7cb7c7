"""How one input is typed, bounded and parsed: a `Field` (its `Kind`, range, label, help) and the one way every
front end's value is checked against it. `settings.py` declares the fields of a comparison with these.

This module imports no torch or diffusers (the CLI reads it before answering `--help`).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from enum import Enum

MAX_PROMPT_CHARS = 2000
MAX_ECHO_CHARS = 40  # a message quotes at most this much of a bad value
MAX_PATH_CHARS = 1024


class InputError(ValueError):
    """Input a user can fix; its message is shown to them as it is."""


class Kind(str, Enum):
    """What type of value a field takes (a str enum: it reads as its value in JSON and messages)."""

    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    CHOICE = "choice"  # one of the field's `choices`
    FLAG = "flag"  # true or false
    FILE = "file"  # a path, or a file on the Hub


@dataclass(frozen=True)
class Field:
    """How one input is typed, bounded and explained; page, API, CLI, links and examples are built from it, and
    it parses a value the one way every front end's value is parsed (`parse`)."""

    kind: Kind
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    model_default: bool = False  # left blank, it takes the model's default (steps, guidance, scheduler, size)
    zero_is_blank: bool = False  # 0 also means "the model's default" (sizes: 0 = native)

    @property
    def is_number(self) -> bool:
        return self.kind in (Kind.INT, Kind.FLOAT)

    @property
    def python_type(self) -> type:
        """The type a command-line flag's text converts to before `parse` checks it (flags take no value)."""
        return {Kind.INT: int, Kind.FLOAT: float}.get(self.kind, str)

    def is_blank(self, value) -> bool:
        """Whether `value` means "not given": None, a blank string where the field is not text, 0 for a size."""
        blank = value is None or (isinstance(value, str) and not value.strip() and self.kind is not Kind.TEXT)
        return blank or (self.zero_is_blank and not isinstance(value, bool) and value == 0)

    def parse(self, value, name: str):
        """One value by this field's kind and range; InputError names the field and what it allows."""
        if self.kind is Kind.TEXT:
            return _clean_text(value, self.label, int(self.maximum or MAX_PROMPT_CHARS))
        if self.kind is Kind.FILE:
            return _clean_path(value, self.label)
        if self.kind is Kind.FLAG:
            if not isinstance(value, bool):
                raise InputError(f"{name} must be true or false, got {_echo(value)}.")
            return value
        if self.kind is Kind.CHOICE:
            if not isinstance(value, str) or value not in self.choices:
                raise InputError(f"Unknown {name} {_echo(value)}; choose one of: {', '.join(self.choices)}.")
            return value
        name = self.label.split(" (")[0]  # "guidance scale", "width"
        number = _as_int(value, name) if self.kind is Kind.INT else _as_float(value, name)
        low, high = self.minimum, self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            extra = " (or -1 for random)" if name == "seed" else ""
            shown = (int(low), int(high)) if self.kind is Kind.INT else (f"{low:g}", f"{high:g}")
            shown = (0, shown[1]) if extra else shown
            raise InputError(f"{name} must be between {shown[0]} and {shown[1]}{extra}, got {_echo(number)}.")
        return number

    def as_text(self, value) -> str:
        """A checked value as text that `from_text` reads back exactly (a link's query, a flag's value)."""
        if self.kind is Kind.FLAG:
            return "true" if value else "false"
        if self.kind is Kind.FLOAT:
            short = f"{value:g}"
            return short if float(short) == value else repr(float(value))
        return str(value)

    def from_text(self, text: str):
        """Text as typed input would arrive: flags as booleans, whole numbers as numbers where the text is one;
        anything else stays the text, for `parse` to refuse with its usual message (floats: `parse` reads text)."""
        if not isinstance(text, str):
            return text
        if self.kind is Kind.FLAG:
            return {"true": True, "false": False}.get(text.strip().lower(), text)
        if self.kind is Kind.INT:  # "7.0" and "1e3" as a number box gives them; "2.5" is then refused as not whole
            for number in (int, float):
                try:
                    return number(text.strip())
                except ValueError:
                    pass
        return text


def _echo(value) -> str:
    """A bad value as a message quotes it: repr, cut to MAX_ECHO_CHARS (a 309-digit number is not read by anyone)."""
    text = repr(value) if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"


def _clean_text(text, field: str, limit: int) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputError(f"The {field} must be text, got {type(text).__name__}.")
    if len(text) > limit:
        raise InputError(f"The {field} is {len(text)} characters long; the limit is {limit}.")
    if any(unicodedata.category(ch) == "Cs" for ch in text):
        raise InputError(f"The {field} contains an invalid character (a lone UTF-16 surrogate); retype it.")
    # Control characters (NUL, escape sequences) mean nothing to a text encoder; newlines become spaces.
    kept = "".join(" " if ch in "\n\r\t" else ch for ch in text if unicodedata.category(ch) != "Cc" or ch in "\n\r\t")
    return " ".join(kept.split())


def _clean_path(path, field: str) -> str:
    """A file name as given (spaces kept), without the characters no file name of a user's has."""
    if path is None:
        return ""
    if not isinstance(path, str):
        raise InputError(f"The {field} must be a file name (text), got {type(path).__name__}.")
    path = path.strip()
    if len(path) > MAX_PATH_CHARS:
        raise InputError(f"The {field} is {len(path)} characters long; the limit is {MAX_PATH_CHARS}.")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in path):
        raise InputError(f"The {field} {_echo(path)} contains a control character.")
    return path


def _as_int(value, field: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{field} must be a whole number, got {value!r}.")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"{field} must be a whole number, got {_echo(value)}.")
        return int(value)
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise InputError(f"{field} must be a whole number, got {_echo(value)}.")
    try:
        return int(value.strip())
    except ValueError:
        raise InputError(f"{field} must be a whole number, got {_echo(value)}.") from None


def _as_float(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{field} must be a number, got {_echo(value)}.")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise InputError(f"{field} must be a number, got {_echo(value)}.") from None
    if not math.isfinite(number):
        raise InputError(f"{field} must be a finite number, got {_echo(value)}.")
    return number
