"""The Gradio page: layout, event wiring and launch. `python demo.py` runs it.

Reads top to bottom as the page does: inputs and results, examples, the step view, then the hidden public API
endpoint. All event functions live in `handlers.py`; this module only places components and connects them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import gradio as gr

from negprompt_demo import handlers
from negprompt_demo.handlers import INPUT_NAMES, KNOWN_MODELS, STEP_OUTPUTS, UI_OUTPUTS, AppConfig
from negprompt_demo.loading import EMBEDDED, ModelLoadError, load_pipeline, model_defaults, model_label, native_size
from negprompt_demo.settings import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, SCHEDULERS, size_limits

EXAMPLES_FILE = Path(__file__).resolve().parents[1] / "examples" / "examples.json"

INTRO = """# What does a negative prompt do?
One seed, generated twice: once with an **empty** negative prompt, once with **yours**. Everything else is the
same, so every difference comes from the negative prompt. Below, scrub through the denoising steps to see where
and when it acts."""

HELP = """Stable Diffusion uses *classifier-free guidance* (CFG). At every step the model predicts the noise twice,
once for your prompt (ε_text) and once for the negative prompt (ε_neg; an empty one when you give none), and mixes:

&nbsp;&nbsp;&nbsp;&nbsp;**ε = ε_neg + s · (ε_text − ε_neg)**, with s the guidance scale.

So the negative prompt is the point guidance pushes *away from*. With s ≤ 1 it has no effect at all. Writing
"without mustache" in the prompt does not work the same way: the text encoder reads "mustache" and the word
"without" barely matters, so the prompt can even ask for a mustache.

**What the step view shows**
- **x0**: what the image would be if sampling stopped at this step (the model's prediction of the clean image).
- **guidance map**: ‖ε_text − ε_neg‖ per pixel, overlaid on x0: where guidance pushes hardest. Same colour scale
  for every step and both runs (legend).
- **negative push** (when recorded): ‖ε_empty − ε_neg‖ on the with-negative run: where the negative prompt itself
  changes the prediction.
- **curves**: mean guidance of each run, how far the two runs have parted (% of the latent norm), and the cosine
  between the two runs' guidance directions (1 = same direction)."""

# Small images (the embedded model makes 64 px ones) fill their box with crisp pixels instead of a thumbnail;
# the files, and their downloads, keep the true size.
CSS = """
.pixelated img { image-rendering: pixelated; }
.result-image .image-container > button,
.result-image .image-frame { width: 100% !important; height: 100% !important; }
.result-image .image-frame img { width: 100% !important; height: 100% !important; object-fit: contain !important; }
.caption p { margin: 0; text-align: center; }
"""


def load_examples(path: Path, defaults: dict, model: str) -> tuple[list[list], list[str]]:
    """Example rows in `INPUT_NAMES` order, and their labels. Fields an example leaves out take the model's
    defaults, so an example shows what the default settings do."""
    entries = json.loads(path.read_text(encoding="utf-8"))["examples"]
    rows, labels = [], []
    for entry in entries:
        values = {
            "prompt": entry["prompt"],
            "negative": entry.get("negative", ""),
            "seed": entry.get("seed", 0),
            "steps": entry.get("steps", defaults["steps"]),
            "guidance": entry.get("guidance", defaults["guidance"]),
            "scheduler": entry.get("scheduler", defaults["scheduler"]),
            "width": defaults["width"],
            "height": defaults["height"],
            "model": model,
            "push_map": entry.get("push_map", False),
        }
        rows.append([values[name] for name in INPUT_NAMES])
        labels.append(entry.get("label", entry["prompt"]))
    return rows, labels


def example_cache_folder(pipe, model: str) -> Path:
    """Where Gradio keeps the lazily cached examples: one folder per model weights, examples file and app code,
    so a retrained model, edited examples or a changed picture or reading text never show stale cached results."""
    digest = hashlib.sha256()
    digest.update(f"{model_label(pipe)}\n".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # the code that draws every output
        digest.update(source.read_bytes())
    digest.update(pipe.unet.conv_out.weight.detach().float().cpu().numpy().tobytes())
    digest.update(EXAMPLES_FILE.read_bytes())
    base = Path(os.environ.get("GRADIO_EXAMPLES_CACHE", ".gradio/cached_examples"))
    return base / f"negprompt-{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def environment(name: str, value: str):
    """Set an environment variable for the duration of a block (Gradio reads its cache folder from one)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def model_choices(config: AppConfig) -> list[tuple[str, str]]:
    return [("embedded (tiny face model, offline)" if name == EMBEDDED else name, name) for name in config.models]


def build_app(config: AppConfig, warm_first_example: bool = False) -> gr.Blocks:
    """The whole page for one deployment; loads the default model to learn its defaults.

    With `warm_first_example`, the first example is computed now, before the server starts (once per model: the
    cache stays on disk), so a newcomer's first click on it is answered at once instead of after a whole run
    without a live view. Not in the background: Gradio computes an example through a temporary page-load event,
    which a browser opening the page meanwhile would try to call after it is gone."""
    pipe = load_pipeline(config.default_model)
    defaults = {"width": native_size(pipe), "height": native_size(pipe), **model_defaults(pipe)}
    low, high = size_limits(native_size(pipe))
    events = handlers.make_handlers(config)
    shown: dict[str, gr.components.Component] = {}  # outputs by name, in UI_OUTPUTS

    with gr.Blocks(title="negprompt-demo: what a negative prompt does", delete_cache=(1800, 7200)) as demo:
        gr.Markdown(INTRO)
        with gr.Accordion("How negative prompts work", open=False):
            gr.Markdown(HELP)

        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="prompt", lines=2, max_length=MAX_PROMPT_CHARS)
                negative = gr.Textbox(label="negative prompt", max_length=MAX_PROMPT_CHARS)
                with gr.Row():
                    compare_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button")
                examples_slot = gr.Column()  # filled once the inputs below exist
                with gr.Row(equal_height=True):
                    seed = gr.Number(label="seed (−1: random)", value=-1, precision=0, minimum=-1, maximum=MAX_SEED)
                    random_button = gr.Button("random seed", size="sm", scale=0, min_width=90)
                    shown["seed_used"] = gr.Number(label="seed used", precision=0, interactive=False)
                model = gr.Dropdown(
                    model_choices(config),
                    value=config.default_model,
                    label="model",
                    info=None if config.lock_models else "or type a hub id (owner/name) or a local diffusers folder",
                    allow_custom_value=not config.lock_models,
                    filterable=not config.lock_models,
                )
                model_info = gr.Markdown(f"Native size {native_size(pipe)} px; sizes {low}–{high} px allowed.")
                with gr.Accordion("sampling settings", open=False):
                    steps = gr.Slider(1, MAX_STEPS, value=defaults["steps"], step=1, label="steps", elem_id="steps")
                    guidance = gr.Slider(0, MAX_GUIDANCE, value=defaults["guidance"], step=0.5, label="guidance scale")
                    scheduler = gr.Dropdown(list(SCHEDULERS), value=defaults["scheduler"], label="scheduler")
                    with gr.Row():
                        width = gr.Slider(low, high, value=defaults["width"], step=8, label="width (px)")
                        height = gr.Slider(low, high, value=defaults["height"], step=8, label="height (px)")
                    push_map = gr.Checkbox(label="record the negative-push map (one extra UNet item per step)")

            with gr.Column(scale=3):
                shown["status"] = gr.Markdown(
                    "Write a prompt and a negative prompt and press **Compare**, or click an example.",
                    elem_id="status",
                )
                with gr.Row():
                    with gr.Column(min_width=200):
                        gr.Markdown("**no negative prompt**", elem_classes="caption")
                        shown["image_without"] = result_image("image without the negative prompt", "image-without")
                    with gr.Column(min_width=200):
                        shown["caption_with"] = gr.Markdown(
                            "**negative: …**", elem_classes="caption", elem_id="caption-with"
                        )
                        shown["image_with"] = result_image("image with the negative prompt", "image-with")
                with gr.Tabs():
                    with gr.Tab("before / after slider"):
                        shown["slider"] = gr.ImageSlider(
                            label="left: no negative prompt · right: with it (drag the handle)",
                            format="png",
                            type="pil",
                            interactive=False,
                            elem_classes=["pixelated", "result-image"],
                            height=400,
                            max_height=400,
                        )
                    with gr.Tab("difference map"):
                        shown["difference"] = gr.Image(
                            label="where the two images differ",
                            format="png",
                            type="pil",
                            interactive=False,
                            elem_classes=["pixelated", "result-image"],
                            height=400,
                            buttons=["download", "fullscreen"],
                        )
                    with gr.Tab("downloads"):
                        shown["downloads"] = gr.File(
                            label="side-by-side PNG (parameters in its metadata), step animation, trace JSON, images",
                            file_count="multiple",
                            interactive=False,
                        )

        gr.Markdown(
            "## Step by step\nWhat each run would look like if sampling stopped at this step, and where "
            "guidance pushed. Move the slider to scrub through the steps."
        )
        shown["step"] = gr.Slider(1, defaults["steps"], value=defaults["steps"], step=1, label="step", elem_id="step")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                with gr.Row():
                    with gr.Column(min_width=260):
                        gr.Markdown("**no negative prompt** · x0 | guidance map", elem_classes="caption")
                        with gr.Row():
                            shown["x0_without"] = step_image("x0, no negative prompt", "x0-without")
                            shown["guidance_without"] = step_image("guidance map, no negative", "guidance-without")
                    with gr.Column(min_width=260):
                        gr.Markdown("**with the negative prompt** · x0 | guidance map", elem_classes="caption")
                        with gr.Row():
                            shown["x0_with"] = step_image("x0, with the negative prompt", "x0-with")
                            shown["guidance_with"] = step_image("guidance map, with the negative", "guidance-with")
                with gr.Row():
                    with gr.Column(min_width=130, scale=1):
                        gr.Markdown("**negative push**", elem_classes="caption")
                        shown["push"] = step_image("negative push", "push")
                    with gr.Column(scale=2):
                        gr.Markdown("**legend**")
                        shown["legend"] = gr.Image(
                            show_label=False, format="png", type="pil", interactive=False, container=False, buttons=[]
                        )
            with gr.Column(scale=2):
                gr.Markdown("**guidance over the steps** (the line marks the chosen step)")
                shown["curves"] = gr.Plot(show_label=False, format="png", elem_id="curves")
                shown["reading"] = gr.Markdown(elem_id="reading")
        shown["trace_file"] = gr.File(visible=False)

        inputs = [prompt, negative, seed, steps, guidance, scheduler, width, height, model, push_map]
        outputs = [shown[name] for name in UI_OUTPUTS]
        with examples_slot:
            rows, labels = load_examples(EXAMPLES_FILE, defaults, config.default_model)
            with environment("GRADIO_EXAMPLES_CACHE", str(example_cache_folder(pipe, config.default_model))):
                examples = gr.Examples(
                    rows,
                    inputs,
                    outputs,
                    fn=events.compare_example,
                    cache_examples=True,
                    cache_mode="lazy",
                    example_labels=labels,
                    label="examples (click one)",
                    api_visibility="private",
                )

        # --- events: the comparison, Stop, and the UI-only helpers (none of them public API) ---------------------
        comparison = gr.on(
            [compare_button.click, prompt.submit, negative.submit],
            events.compare_ui,
            inputs,
            outputs,
            api_visibility="private",
            concurrency_id="device",
            concurrency_limit=config.concurrency,
            show_progress_on=[shown["status"]],
        )
        stop_button.click(
            handlers.stopped_message, None, shown["status"], cancels=[comparison], queue=False, api_visibility="private"
        )
        random_button.click(handlers.random_seed, None, seed, queue=False, api_visibility="private")
        model.change(
            events.model_selected,
            model,
            [model_info, steps, guidance, scheduler, width, height],
            api_visibility="private",
            concurrency_id="device",
            concurrency_limit=config.concurrency,
        )
        gr.on(
            [shown["step"].input, shown["step"].release],
            handlers.show_step,
            [shown["trace_file"], shown["step"]],
            [shown[name] for name in STEP_OUTPUTS],
            api_visibility="private",
            trigger_mode="always_last",
            show_progress="hidden",
            concurrency_id="render",
            concurrency_limit=4,
        )

        # --- public API: /compare (hidden trigger; the same engine call as the Compare button) -------------------
        # Its own inputs, not the page's widgets: their bounds follow the model chosen in a browser session, while
        # an API caller may name any offered model; every value is checked on the server by the engine anyway.
        with gr.Row(visible=False):
            api_trigger = gr.Button("compare (API)")
            api_inputs = [
                gr.Textbox(label="prompt"),
                gr.Textbox(label="negative", value=""),
                gr.Number(label="seed", value=-1, info="-1: random"),
                gr.Number(label="steps", value=defaults["steps"]),
                gr.Number(label="guidance", value=defaults["guidance"]),
                gr.Dropdown(list(SCHEDULERS), value=defaults["scheduler"], label="scheduler"),
                gr.Number(label="width", value=0, info="0: the model's native size"),
                gr.Number(label="height", value=0, info="0: the model's native size"),
                gr.Textbox(label="model", value=config.default_model),
                gr.Checkbox(label="push_map", value=False),
            ]
            api_outputs = [
                gr.Image(label="without negative prompt", format="png", type="pil"),
                gr.Image(label="with negative prompt", format="png", type="pil"),
                gr.Number(label="seed used", precision=0),
                gr.JSON(label="trace"),
            ]
        api_trigger.click(
            events.compare_api,
            api_inputs,
            api_outputs,
            api_name="compare",
            concurrency_id="device",
            concurrency_limit=config.concurrency,
        )
    demo.queue(max_size=config.max_queue, default_concurrency_limit=config.concurrency)
    if warm_first_example:
        warm_example(examples, 0)
    return demo


def warm_example(examples: gr.Examples, index: int) -> None:
    """Fill Gradio's lazy cache for one example, exactly as a first click would (same lock, same files)."""
    print(f"Preparing example {index + 1} (computed once per model, then served from the cache)…", flush=True)
    try:
        examples.load_from_cache(index)
    except Exception as error:  # a failing example must not stop the app; clicking it shows the message
        print(f"warning: could not pre-compute example {index + 1}: {error}", file=sys.stderr)


def result_image(label: str, elem_id: str) -> gr.Image:
    """A result shown large with crisp pixels (CSS), while the file and its download keep the true size."""
    return gr.Image(
        label=label,
        show_label=False,
        format="png",
        type="pil",
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
        type="pil",
        interactive=False,
        elem_id=elem_id,
        elem_classes=["pixelated", "result-image"],
        height=180,
        min_width=120,
        buttons=["download"],
        placeholder="tick “record the negative-push map” to see it" if elem_id == "push" else None,
    )


# --- command line ---------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """Public deployments (a --share link, a Hugging Face Space) lock the model list unless told otherwise."""
    public = args.share or bool(os.environ.get("SPACE_ID"))
    offered = [name.strip() for name in (args.models or "").split(",") if name.strip()]
    return AppConfig(
        default_model=args.model,
        models=offered or [EMBEDDED, *KNOWN_MODELS],
        lock_models=public if args.lock_models is None else args.lock_models,
        concurrency=max(1, args.concurrency),
        max_queue=max(1, args.max_queue),
    )


def run(args: argparse.Namespace) -> None:
    """Build the page for the parsed command line (see `launch.py`) and serve it."""
    config = config_from_args(args)
    try:
        demo = build_app(config, warm_first_example=True)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **page_style())


def page_style() -> dict:
    """Theme and CSS, which Gradio 6 takes at launch (tests launch with the same)."""
    return {"theme": gr.themes.Soft(), "css": CSS}
