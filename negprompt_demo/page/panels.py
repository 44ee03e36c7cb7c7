"""The layouts of the page's result sections, in the article's order: the three-way row (`article.py`), the
results, the step view (why: the branches) and the sweep (when it acts). Each returns its components by name;
`app.py` places these sections and wires their events."""

from __future__ import annotations

import gradio as gr

from negprompt_demo.page.article import Article
from negprompt_demo.page.widgets import link_row, result_image, step_image


def article_panel(article: Article) -> None:
    """The article's contrast on the first screen: one seed three ways, and the sentence that reads it."""
    with gr.Row(elem_id="article", equal_height=True):
        for column, path in article.pictures.items():
            with gr.Column(min_width=90, elem_id=f"article-{column}"):  # three across on a 390 px phone
                gr.Image(
                    str(path),
                    show_label=False,
                    format="png",
                    type="filepath",
                    interactive=False,
                    height=150,
                    elem_classes=["pixelated", "result-image"],
                    buttons=["download"],
                )
                gr.Markdown(article.caption(column), elem_classes="caption")
    gr.Markdown(f"{article.reading} <small>(seed {article.seed}; click the examples to see each run.)</small>",
                elem_id="article-reading")  # fmt: skip


def result_panel() -> dict:
    """Status, both images side by side, then the slider, difference map and downloads tabs."""
    shown = {
        "status": gr.Markdown(
            "Write a prompt and a negative prompt and press **Compare**, or click an example.", elem_id="status"
        ),
        # the live progress bar and its text land here, not over the status line
        "progress": gr.Markdown("", elem_id="progress", min_height=28),
        "negative_reading": gr.Markdown(elem_id="negative-reading"),  # tokens, chunks and weights of the negative
    }
    with gr.Row():
        with gr.Column(min_width=200):
            gr.Markdown("**no negative prompt**", elem_classes="caption")
            shown["image_without"] = result_image("image without the negative prompt", "image-without")
        with gr.Column(min_width=200):
            shown["caption_with"] = gr.Markdown("**negative: …**", elem_classes="caption", elem_id="caption-with")
            shown["image_with"] = result_image("image with the negative prompt", "image-with")
    with gr.Tabs():
        with gr.Tab("before / after slider"):
            shown["slider"] = gr.ImageSlider(
                label="left: no negative prompt · right: with it (drag the handle)",
                format="png",
                type="filepath",
                interactive=False,
                elem_classes=["pixelated", "result-image"],
                height=400,
                max_height=400,
            )
        with gr.Tab("difference map"):
            shown["difference"] = gr.Image(
                label="where the two images differ",
                format="png",
                type="filepath",
                interactive=False,
                elem_classes=["pixelated", "result-image"],
                height=400,
                buttons=["download", "fullscreen"],
            )
        with gr.Tab("downloads"):
            shown["downloads"] = gr.File(
                label="side-by-side PNG, step animation, trace JSON, both images (PNGs carry their parameters)",
                file_count="multiple",
                interactive=False,
                elem_id="downloads",
            )
    return shown | link_row()


def step_panel(steps: int) -> dict:
    """The step view: a slider over the steps, each run's x0 with and without its guidance map, the negative
    push, the legend, and the curves with their reading."""
    gr.Markdown(
        "## Step by step\nWhat each run would look like if sampling stopped at this step, and where "
        "guidance pushed. Move the slider to scrub through the steps."
    )
    shown = {"step": gr.Slider(1, steps, value=steps, step=1, label="step", elem_id="step")}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                for run, caption in (("without", "no negative prompt"), ("with", "with the negative prompt")):
                    with gr.Column(min_width=260):
                        gr.Markdown(f"**{caption}** · x0 | guidance map", elem_classes="caption")
                        with gr.Row():
                            shown[f"x0_{run}"] = step_image(f"x0, {caption}", f"x0-{run}")
                            shown[f"guidance_{run}"] = step_image(f"guidance map, {caption}", f"guidance-{run}")
            with gr.Row():
                with gr.Column(min_width=130, scale=1):
                    gr.Markdown("**negative push**", elem_classes="caption")
                    shown["push"] = step_image("negative push", "push")
                with gr.Column(min_width=130, scale=1):
                    gr.Markdown("**NAG: attention moved** ‖Z − Z⁺‖", elem_classes="caption")
                    shown["nag"] = step_image("NAG: how far the attention output moved", "nag")
                with gr.Column(scale=2):
                    gr.Markdown("**legend**")
                    shown["legend"] = gr.Image(
                        show_label=False, format="png", type="filepath", interactive=False, container=False, buttons=[]
                    )
        with gr.Column(scale=2):
            gr.Markdown("**guidance over the steps** (the line marks the chosen step)")
            shown["curves"] = gr.Image(
                show_label=False,
                format="png",
                type="filepath",
                interactive=False,
                elem_id="curves",
                buttons=["download"],
            )
            shown["reading"] = gr.Markdown(elem_id="reading")
    gr.Markdown("**What each branch predicts** from the with-negative run's current sample", elem_classes="caption")
    with gr.Row():
        for name, caption in BRANCH_CAPTIONS.items():
            with gr.Column(min_width=120):
                gr.Markdown(caption, elem_classes="caption")
                shown[f"branch_{name}"] = step_image(caption, f"branch-{name}")
    shown["branch_note"] = gr.Markdown(elem_id="branch-note")
    # The shown result's trace id (server-chosen; the step slider reads the trace by it). Not a file path.
    shown["trace_id"] = gr.Textbox(visible=False)
    return shown


BRANCH_CAPTIONS = {
    "prompt": "the prompt alone",
    "empty": "the empty prompt alone",
    "negative": "the negative alone",
    "guided": "the guided step",
}


def sweep_panel() -> dict:
    """ "When does it act?": the same seed with the negative starting at several points, in one batched call."""
    gr.Markdown(
        "## When does it act?\nThe same seed with the negative prompt starting at different steps (your end, "
        "strength and Perp-Neg settings apply to each), all in one batched call: the steps before each start are "
        "shared with the run without it. Where the picture stops changing, the negative has done its work."
    )
    panel = {"button": gr.Button("Run the sweep", elem_id="sweep-button", variant="secondary")}
    panel["picture"] = gr.Image(
        show_label=False, format="png", type="filepath", interactive=False, elem_id="sweep", buttons=["download"]
    )
    panel["reading"] = gr.Markdown(elem_id="sweep-reading")
    return panel
