"""The page's widget factories: a settings field's widget (page and API), the result and step images, and the step
view's attention row.

Small images (the embedded model makes 64 px ones) fill their box with crisp pixels (`CSS`) instead of a
thumbnail; the files, and their downloads, keep the true size.
"""

from __future__ import annotations

import gradio as gr

from negprompt_demo.settings import Field, Kind

CSS = """
.pixelated img { image-rendering: pixelated; }
.result-image .image-container > button,
.result-image .image-frame { width: 100% !important; height: 100% !important; }
.result-image .image-frame img { width: 100% !important; height: 100% !important; object-fit: contain !important; }
.caption p { margin: 0; text-align: center; }
#effects table, #status table { display: block; overflow-x: auto; }
#effects td, #effects th { word-break: normal; overflow-wrap: normal; hyphens: none; white-space: nowrap; }
#attention-strip .image-frame { overflow-x: auto; justify-content: flex-start; }
#attention-strip img { min-height: 96px; max-width: none !important; width: auto !important; }
#article .caption small { color: var(--body-text-color-subdued); }
"""
# On a phone the results are below the examples: a tap on one scrolls to its result (a wide screen shows both).
SHOW_RESULT_ON_PHONE_JS = """() => {
  if (window.innerWidth < 700) document.querySelector('#status')?.scrollIntoView({behavior: 'smooth'});
}"""


RECORDED = "tick “record what the empty prompt predicts” to see it"  # these need the ε_∅ item
PLACEHOLDERS = {
    **dict.fromkeys(("push", "branch-prompt", "branch-empty", "branch-negative", "branch-guided"), RECORDED),
    "attention": "tick “record attention maps” to see it",
    "nag": "set “how the negative acts” to nag or both to see it",
}


def field_widget(name: str, field: Field, value, bounds: tuple | None = None) -> gr.components.Component:
    """The page's widget for one settings field, from its declaration (bounds: a model's size limits).

    No widget bounds, rounds or cuts a value: Gradio's Slider and Number clamp to their minimum and maximum and round
    to their precision without a word, and a Textbox's max_length cuts a long prompt, so the page would run other
    values than those typed (and than the API and CLI run). Numbers are plain boxes that say their range; the server
    checks every value once (`settings.resolve_settings`) and answers with the same message as the API and CLI."""
    if field.kind is Kind.TEXT:
        return gr.Textbox(label=field.label, value=value, lines=2 if name == "prompt" else 1, elem_id=name)
    if field.kind is Kind.CHOICE:
        return gr.Dropdown(list(field.choices), value=value, label=field.label)
    if field.kind is Kind.FLAG:
        return gr.Checkbox(value=bool(value), label=f"{field.label} ({field.help})", elem_id=name)
    if field.kind is Kind.FILE:
        return embedding_upload(field, visible=True)
    return gr.Number(label=field.label, value=value, info=range_note(name, field, bounds), elem_id=name)


def range_note(name: str, field: Field, bounds: tuple | None = None) -> str:
    """What a number field allows, under its box ("1 to 150, whole numbers")."""
    low, high = bounds or (field.minimum, field.maximum)
    if low is None or high is None:
        return field.help
    whole = ", whole numbers" if field.kind is Kind.INT else ""
    if name in ("width", "height"):
        return f"{low} to {high} px, a multiple of 8 (0: native)"
    if name == "seed":
        return f"0 to {high}{whole} (−1: random)"
    return f"{low:g} to {high:g}{whole}"


def api_widget(name: str, field: Field | None, default) -> gr.components.Component:
    """The public API's input for one field: plain types and no bounds (the server checks every value); `default`
    is what an API call that leaves the input out gets (the default model's value)."""
    if field is None or field.kind in (Kind.TEXT, Kind.FILE):  # the model, prompts, a file's path or Hub name
        return gr.Textbox(label=name, value=default)
    if field.kind is Kind.CHOICE:
        return gr.Dropdown(list(field.choices), value=default, label=name, info=field.help)
    if field.kind is Kind.FLAG:
        return gr.Checkbox(label=name, value=default, info=field.help)
    return gr.Number(label=name, value=default, info=field.help)


def embedding_upload(field: Field, visible: bool) -> gr.File:
    """The negative embedding's upload: a .safetensors file (Gradio keeps it in its cache and hands over the path,
    its original file name kept, which is the trigger word). Hidden where the deployment takes none."""
    return gr.File(
        label=f"{field.label} (optional; its file name is the trigger word)",
        file_types=[".safetensors"],
        type="filepath",
        file_count="single",
        visible=visible,
        height=130,
        elem_id="negative-embedding",
    )


def result_image(label: str, elem_id: str) -> gr.Image:
    """A result shown large with crisp pixels (CSS), while the file and its download keep the true size."""
    return gr.Image(
        label=label,
        show_label=False,
        format="png",
        type="filepath",
        height=340,
        interactive=False,
        elem_id=elem_id,
        elem_classes=["pixelated", "result-image"],
        buttons=["download", "fullscreen"],
    )


def step_image(label: str, elem_id: str) -> gr.Image:
    """One picture of the step view; captions are Markdown above it (Gradio's own label covers a small image)."""
    return gr.Image(
        label=label,
        show_label=False,
        format="png",
        type="filepath",
        interactive=False,
        elem_id=elem_id,
        elem_classes=["pixelated", "result-image"],
        height=180,
        min_width=120,
        buttons=["download"],
        placeholder=PLACEHOLDERS.get(elem_id),
    )


# A link's query (`links.link_query`) is relative; the browser completes it from the page's own address, which is
# the right one behind a share link and inside a Space's iframe.
ABSOLUTE_LINK_JS = "(query) => [query ? new URL(query, window.location.href).href : '', '']"  # and clear the note
COPY_LINK_JS = """async (query) => {
  if (!query) return "Run a comparison first: the link is made when it is done.";
  try {
    await navigator.clipboard.writeText(new URL(query, window.location.href).href);
    return "Link copied.";
  } catch (error) {
    return "This browser blocked the clipboard here: select the link above and copy it.";
  }
}"""


def link_row() -> dict:
    """The shown comparison's link with a "copy link" button, and the hidden values behind it: `link` (the query
    the server built), `link_run` and `link_example` (set by opening a link: start it, or show a cached example)."""
    with gr.Row(equal_height=True):
        row = {
            "link_url": gr.Textbox(
                label="link to this comparison (reopens the page with the same inputs and runs it)",
                placeholder="made when a comparison is done",
                interactive=True,  # a disabled box's text cannot be selected, to copy by hand
                elem_id="link",
                scale=4,
            ),
            "copy_link": gr.Button("copy link", size="sm", scale=0, min_width=100, elem_id="copy-link"),
        }
    row["link_note"] = gr.Markdown(elem_id="link-note")
    for name in ("link", "link_run", "link_example"):
        row[name] = gr.Textbox(visible="hidden", elem_id=name.replace("_", "-"))
    row["link"].change(None, row["link"], [row["link_url"], row["link_note"]], js=ABSOLUTE_LINK_JS)  # browser only
    row["copy_link"].click(None, row["link"], row["link_note"], js=COPY_LINK_JS)
    return row


def attention_row() -> dict:
    """The step view's attention maps: the words of the negative and the prompt as chips, the chosen word's map
    over the with-run's x0 at the chosen step, and its strip over the steps."""
    gr.Markdown(
        "## Where each word looks\nCross-attention maps of the shown comparison at the step chosen with the step "
        "slider above (tick *record attention maps* in the sampling settings): − words of the negative prompt, "
        "+ words of the prompt."
    )
    row = {"attention_word": gr.Radio([], label="word", show_label=False, elem_id="attention-word")}
    with gr.Row(equal_height=False):
        with gr.Column(min_width=130, scale=1):
            row["attention"] = step_image("attention map of the chosen word", "attention")
        with gr.Column(scale=3):
            gr.Markdown("the word's map over the steps (the framed one is shown left)", elem_classes="caption")
            row["attention_strip"] = gr.Image(
                label="the word's map over the steps",
                show_label=False,  # Gradio's label sits over the strip's first frames
                format="png",
                type="filepath",
                interactive=False,
                elem_id="attention-strip",
                buttons=["download"],
            )
            row["attention_reading"] = gr.Markdown(elem_id="attention-reading")
    return row
