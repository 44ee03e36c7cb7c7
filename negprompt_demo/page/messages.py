"""What the page says in words: the status line, captions, how the negative was read, and the message a user
reads for an error (never a traceback). User text goes into Markdown as the text it is (`markdown_text`)."""

from __future__ import annotations

import html
import logging
import string

import gradio as gr

from negprompt_demo.runner import GenerationCancelled, ModelLoadError, NonFiniteError
from negprompt_demo.settings import CompareSettings, InputError
from negprompt_demo.views.visualize import run_labels

log = logging.getLogger("negprompt_demo.page.handlers")  # the page's events log under one name
USER_ERRORS = (InputError, ModelLoadError, NonFiniteError, GenerationCancelled)


def user_message(error: BaseException) -> str:
    """What a user reads for an error: the engine's own message where it is written for users, never a traceback
    (plain text: escape it where it is shown as HTML)."""
    if isinstance(error, USER_ERRORS):
        return str(error)
    log.exception("comparison failed", exc_info=error)
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    name = getattr(error, "error_type", type(error).__name__)  # runner.DeviceError keeps the original class's name
    return f"The comparison failed ({name}: {first_line}). The page still works; try again."


def input_error(error: BaseException, for_html: bool = True) -> gr.Error:
    """A gr.Error for a user: input mistakes log one line, not a traceback; unexpected errors keep theirs."""
    message = user_message(error)
    if isinstance(error, USER_ERRORS):
        log.info("refused: %s", message)
    return gr.Error(html.escape(message, quote=False) if for_html else message, print_exception=False)


def status_text(settings: CompareSettings, model: str, warnings: list[str], note: str) -> str:
    lines = [
        f"**{note}** · seed `{settings.seed}` · {settings.steps} steps · guidance {settings.guidance:g} · "
        f"{settings.scheduler} · {settings.width}×{settings.height} px{negative_settings(settings)} · "
        f"model `{html.escape(model)}`"
    ]
    lines += [f"⚠️ {html.escape(warning, quote=False)}" for warning in warnings]
    return "\n\n".join(lines)


def run_context(settings: CompareSettings) -> str:
    """Which prompt, negative, seed and settings a result shows (the sweep's line above its reading)."""
    return (
        f"Prompt “{html.escape(settings.prompt, quote=False)}” · "
        f"negative “{html.escape(settings.negative, quote=False)}”"
        f" · seed `{settings.seed}` · {settings.steps} steps · guidance {settings.guidance:g} · {settings.scheduler}"
        f"{negative_settings(settings)}"
    )


def negative_settings(settings: CompareSettings) -> str:
    """How the negative acted, when not plain CFG over every step (the window, strength and Perp-Neg)."""
    parts = []
    if (settings.negative_start, settings.negative_end) != (0.0, 1.0):
        parts.append(f"negative from {settings.negative_start:g} to {settings.negative_end:g} of the steps")
    if settings.negative_strength != 1.0:
        parts.append(f"strength {settings.negative_strength:g}")
    if settings.perp_neg:
        parts.append("Perp-Neg")
    return "".join(f" · {part}" for part in parts)


def reading_text(reading) -> str:
    """How the negative prompt was read (`prompts.PromptReading`), under the status line."""
    return "" if reading is None else f"**How the negative prompt was read:** {reading.markdown()}"


def caption_for(negative: str) -> str:
    return f"**{markdown_text(run_labels(negative)[1])}**"


def markdown_text(text: str) -> str:
    """User text for a Markdown component, shown as the text it is: every ASCII punctuation mark escaped (no link,
    emphasis or heading from a link's query), <, > and & as HTML entities."""
    return "".join(
        html.escape(char) if char in "<>&" else "\\" + char if char in string.punctuation else char for char in text
    )


def stopped_message() -> str:
    return "**Stopped.** Sampling ended after the step it was on; the page is ready for the next comparison."
