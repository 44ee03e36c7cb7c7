"""The page's widget factories: a settings field's widget (page and API) and the result and step images.

Small images (the embedded model makes 64 px ones) fill their box with crisp pixels (`CSS`) instead of a
thumbnail; the files, and their downloads, keep the true size.
"""

from __future__ import annotations

import gradio as gr

from negprompt_demo.settings import Field

CSS = """
.pixelated img { image-rendering: pixelated; }
.result-image .image-container > button,
.result-image .image-frame { width: 100% !important; height: 100% !important; }
.result-image .image-frame img { width: 100% !important; height: 100% !important; object-fit: contain !important; }
.caption p { margin: 0; text-align: center; }
"""


def field_widget(name: str, field: Field, value, bounds: tuple | None = None) -> gr.components.Component:
    """The page's widget for one settings field, from its declaration (bounds: a model's size limits)."""
    low, high = bounds or (field.minimum, field.maximum)
    if field.kind == "text":
        return gr.Textbox(label=field.label, value=value, lines=2 if name == "prompt" else 1, max_length=int(high))
    if field.kind == "choice":
        return gr.Dropdown(list(field.choices), value=value, label=field.label)
    if field.kind == "flag":
        return gr.Checkbox(value=bool(value), label=f"{field.label} ({field.help})")
    if field.kind == "file":
        return embedding_upload(field, visible=True)
    if low is not None and high is not None and name != "seed":
        return gr.Slider(low, high, value=value, step=field.step, label=field.label, elem_id=name)
    return gr.Number(label=field.label, value=value, precision=0 if field.kind == "int" else None)


def api_widget(name: str, field: Field | None, default) -> gr.components.Component:
    """The public API's input for one field: plain types and no bounds (the server checks every value); `default`
    is what an API call that leaves the input out gets (the default model's value)."""
    if field is None or field.kind in ("text", "file"):  # the model, prompts, a file's path or Hub name
        return gr.Textbox(label=name, value=default)
    if field.kind == "choice":
        return gr.Dropdown(list(field.choices), value=default, label=name, info=field.help)
    if field.kind == "flag":
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
        height=90,
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


RECORDED = ("push", "branch-prompt", "branch-empty", "branch-negative", "branch-guided")  # need the ε_∅ item


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
        placeholder="tick “record what the empty prompt predicts” to see it" if elem_id in RECORDED else None,
    )
