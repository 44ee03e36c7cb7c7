"""Page messages (page/messages.py): a caption renders the user's text as text."""

from __future__ import annotations

import html

import pytest


@pytest.mark.parametrize(
    "negative",
    ["[click here](https://evil.example/login?next=1)", "**bold** _it_ # head", "<img src=x onerror=alert(1)>"],
)
def test_captions_render_user_text_as_text(negative):
    """The caption over the with-negative image, rendered as CommonMark: no link, emphasis,
    heading or tag from the user's text, and the text itself still readable."""
    import markdown_it

    from negprompt_demo.page.messages import caption_for

    rendered = markdown_it.MarkdownIt("commonmark").render(caption_for(negative))
    inner = rendered.removeprefix("<p><strong>").removesuffix("</strong></p>\n")
    assert "<a " not in inner and "<em>" not in inner and "<strong>" not in inner and "<img" not in inner
    assert html.unescape(inner) == "negative: " + (negative if len(negative) <= 40 else negative[:37] + "...")
