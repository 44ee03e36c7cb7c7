"""The Gradio page: layout and event wiring. `python demo.py` serves it (`launch.serve`).

Reads top to bottom as the page does, in the article's order: the three-way row (`article.py`), inputs and results
with the examples, the step view (why: the branches), many seeds, the sweep (when and how strongly), where each word
looks, then the hidden public API endpoints (`/compare`, `/sweep`, `/seeds`). The result sections' layouts are in
`panels.py`; the event functions that run or show comparisons are in `handlers.py` (`Handlers`), the many-seeds
section's layout and events in `seeds_view.py` (`SeedsHandlers`); the link row's browser-only events are in
`widgets.link_row`, and the one-line ones (Stop's message, "use NAG") here. This module places the sections and
connects them. The comparison's input widgets, the API's inputs and the example rows are built from
`settings.FIELDS`: a field that the layout does not place by name lands in the "sampling settings" accordion.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from negprompt_demo.page import handlers
from negprompt_demo.page.app_config import MAX_UPLOAD, AppConfig
from negprompt_demo.page.article import article_row
from negprompt_demo.page.door import DEVICE_LANE, RENDER_CONCURRENCY, RENDER_LANE, Door, keep_sessions_small
from negprompt_demo.page.examples import (
    EXAMPLES_FILE,
    example_cache_folder,
    example_rows,
    examples_section,
    warm_example,
)
from negprompt_demo.page.handlers import EXAMPLE_NAMES, INPUT_NAMES, LINK_OUTPUTS, MODEL_OUTPUTS, UI_OUTPUTS
from negprompt_demo.page.messages import stopped_message
from negprompt_demo.page.panels import article_panel, result_panel, step_panel, sweep_panel
from negprompt_demo.page.seeds_view import SEEDS_API_INPUTS, SeedsHandlers, seeds_panel, wire_seeds
from negprompt_demo.page.step_view import STEP_OUTPUTS
from negprompt_demo.page.tracefile import TraceStore, private_folder
from negprompt_demo.page.widgets import (
    CSS,
    SHOW_RESULT_ON_PHONE_JS,
    api_widget,
    attention_row,
    embedding_upload,
    field_widget,
)
from negprompt_demo.runner import ModelInfo, model_fingerprint, model_info
from negprompt_demo.settings import DEFAULTS, EMBEDDED, FIELDS, GRID_DEFAULTS, GRID_FIELDS

INTRO = """# What does a negative prompt do?
One seed, generated with an **empty** negative prompt and with **yours**; everything else is the same, so every
difference comes from the negative prompt. Below: why (what each guidance branch predicts), over many seeds, when
and how strongly it acts, and where its words look."""

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
  between the two runs' guidance directions (1 = same direction).
- **where each word looks** (when recorded): a word's cross-attention map, on the negative branch for the
  negative's words and on the text branch for the prompt's, over the run with the negative prompt."""


def model_choices(config: AppConfig) -> list[tuple[str, str]]:
    return [("embedded (tiny face model, offline)" if name == EMBEDDED else name, name) for name in config.models]


def build_app(config: AppConfig, warm_first_example: bool = False, private: Path | None = None) -> gr.Blocks:
    """The whole page for one deployment; the default model is loaded first, to learn its defaults (`model_info`).

    With `warm_first_example`, the first example is computed now, before the server starts (once per model: the
    cache stays on disk), so a newcomer's first click on it is answered at once instead of after a whole run
    without a live view. Not in the background: Gradio computes an example through a temporary page-load event,
    which a browser opening the page meanwhile would try to call after it is gone.

    `private` is this process's folder for runs (a new one by default; `run` also puts Gradio's cache there)."""
    info = model_info(config.default_model)
    defaults = info.defaults
    cache_folder = example_cache_folder(info.label, model_fingerprint(config.default_model))
    private = private or private_folder()  # this process's runs: traces and job files, mode 0700
    (private / "jobs").mkdir()
    events = handlers.Handlers(config, TraceStore(private / "traces", cache_folder / "traces"), private / "jobs")

    with gr.Blocks(title="negprompt-demo: what a negative prompt does", delete_cache=(1800, 7200)) as demo:
        gr.Markdown(INTRO)
        article_panel(
            article_row(config.default_model, first_example_values(defaults, config), cache_folder / "article")
        )
        with gr.Accordion("How negative prompts work", open=False):
            gr.Markdown(HELP)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                inputs, buttons, examples_slot, model_note = input_panel(
                    config, info, first_example_seed(defaults, config)
                )
                shown = {"seed_used": buttons.pop("seed_used")}
            with gr.Column(scale=3):
                shown |= result_panel()
        shown |= step_panel(defaults["steps"])
        seeds = seeds_panel()
        sweep = sweep_panel()
        shown |= attention_row()
        with examples_slot:
            examples = examples_section(events, inputs, shown, defaults, config, cache_folder)
        examples.dataset.click(None, js=SHOW_RESULT_ON_PHONE_JS)
        wire_page(demo, config, events, inputs, buttons, shown, model_note)
        wire_links(demo, config, events, inputs, shown, model_note, examples)
        wire_sweep(config, events, inputs, sweep)
        wire_seeds(config, events, inputs, seeds)
        api_endpoints(config, events, defaults)
    # A shared instance: no direct REST route beside the queue, and door.py's lane bounds and turns instead of
    # Gradio's one max_size over every lane (which let one visitor's jobs refuse everyone's slider moves).
    demo.queue(
        max_size=None if config.shared else config.max_queue,
        default_concurrency_limit=config.concurrency,
        api_open=not config.shared,
    )
    keep_sessions_small(demo)  # Gradio's per-session component copies, dropped at each event (door.py)
    if config.shared:
        events.door = Door(demo, config)
    demo.page_examples = examples  # the gr.Examples behind the list (tests click its rows as the page does)
    if warm_first_example:
        warm_example(examples, 0)
    return demo


def input_panel(config: AppConfig, info: ModelInfo, page_seed: int) -> tuple[dict, dict, gr.Column, gr.Markdown]:
    """Prompt, negative prompt, the buttons, the seed row, the model and then every other settings field."""
    inputs: dict[str, gr.components.Component] = {}
    inputs["prompt"] = field_widget("prompt", FIELDS["prompt"], "")
    inputs["negative"] = field_widget("negative", FIELDS["negative"], "")
    with gr.Row(equal_height=True):
        inputs["negative_mode"] = field_widget("negative_mode", FIELDS["negative_mode"], DEFAULTS["negative_mode"])
        # one click for the diagnostics' offer at guidance ≤ 1 or on a distilled model (diagnostics.NAG_OFFER)
        use_nag = gr.Button("use NAG", size="sm", scale=0, min_width=90, elem_id="use-nag")
    with gr.Row():
        buttons = {
            "compare": gr.Button("Compare", variant="primary", elem_id="compare-button"),
            "stop": gr.Button("Stop", variant="stop", elem_id="stop-button"),
        }
    buttons["use_nag"] = use_nag
    examples_slot = gr.Column()  # filled once the outputs exist
    with gr.Row(equal_height=True):
        # A fixed seed (the first example's), so that changing only the negative keeps the same face
        inputs["seed"] = field_widget("seed", FIELDS["seed"], page_seed)
        buttons["random"] = gr.Button("new random seed", size="sm", scale=0, min_width=90, elem_id="random-seed")
        buttons["seed_used"] = gr.Textbox(label="seed used", interactive=False, elem_id="seed-used")  # empty: no run
    inputs["model"] = gr.Dropdown(
        model_choices(config),
        value=config.default_model,
        label="model",
        info=None if config.lock_models else "or type a hub id (owner/name) or a local diffusers folder",
        allow_custom_value=not config.lock_models,
        filterable=not config.lock_models,
    )
    model_note = gr.Markdown(info.note)
    with gr.Accordion("sampling settings", open=False):
        for name, field in FIELDS.items():
            if name == "negative_embedding":  # a visitor's file only where the model list is not locked
                inputs[name] = embedding_upload(field, visible=not config.lock_models)
            elif name not in inputs:
                bounds = info.size_limits if name in ("width", "height") else None
                inputs[name] = field_widget(name, field, info.defaults.get(name, DEFAULTS[name]), bounds)
    return {name: inputs[name] for name in INPUT_NAMES}, buttons, examples_slot, model_note


def first_example_values(defaults: dict, config: AppConfig) -> dict:
    """The first example's inputs by name (the model left out)."""
    rows, _ = example_rows(EXAMPLES_FILE, defaults, config.default_model)
    values = dict(zip(EXAMPLE_NAMES, rows[0], strict=True))
    values.pop("model")
    return values


def first_example_seed(defaults: dict, config: AppConfig) -> int:
    """The seed the page starts with: the first example's, so a newcomer's own negatives land on the same face."""
    return int(first_example_values(defaults, config)["seed"])


def wire_page(demo, config: AppConfig, events, inputs: dict, buttons: dict, shown: dict, model_note) -> None:
    """The page's events: the comparison, Stop, the random seed, the model selector and the step slider (none of
    them public API)."""
    comparison = gr.on(
        [buttons["compare"].click, inputs["prompt"].submit, inputs["negative"].submit, shown["link_run"].change],
        events.compare_ui,
        inputs_kwargs=inputs,
        outputs=[shown[name] for name in UI_OUTPUTS],
        api_visibility="private",
        concurrency_id=DEVICE_LANE,
        concurrency_limit=config.concurrency,
        show_progress_on=[shown["progress"]],
    )
    buttons["stop"].click(
        stopped_message, None, shown["status"], cancels=[comparison], queue=False, api_visibility="private"
    )
    buttons["random"].click(handlers.random_seed, None, inputs["seed"], queue=False, api_visibility="private")
    buttons["use_nag"].click(lambda: "nag", None, inputs["negative_mode"], queue=False, api_visibility="private")
    inputs["model"].input(  # the user's choice only: a link fills in a model together with its own settings
        events.model_selected,
        inputs["model"],
        [{**inputs, "model_info": model_note}[name] for name in MODEL_OUTPUTS],
        api_visibility="private",
        concurrency_id=DEVICE_LANE,
        concurrency_limit=config.concurrency,
    )
    gr.on(
        [shown["step"].input, shown["step"].release, shown["attention_word"].input],
        events.show_step,
        [shown["trace_id"], shown["step"], shown["attention_word"]],
        [shown[name] for name in STEP_OUTPUTS],
        api_visibility="private",
        trigger_mode="always_last",
        show_progress="hidden",
        concurrency_id=RENDER_LANE,
        concurrency_limit=RENDER_CONCURRENCY,
    )


def wire_links(demo, config: AppConfig, events, inputs: dict, shown: dict, model_note, examples) -> None:
    """A page URL with a comparison's inputs as query parameters (`links.py`) fills them on load and runs it
    (`link_run` joins the Compare button's event, so Stop stops it) or, for an example, shows its cached result."""
    events.examples = [dict(zip(EXAMPLE_NAMES, row, strict=True)) for row in examples.examples]
    targets = {**inputs, "model_info": model_note, **shown}
    demo.load(events.open_link, None, [targets[name] for name in LINK_OUTPUTS], api_visibility="private",
              show_progress="hidden", concurrency_limit=None)  # fmt: skip
    shown["link_example"].change(
        lambda index: examples.load_from_cache(int(index)),  # Gradio's own lazy cache, as a click on it
        shown["link_example"],
        [shown[name] for name in UI_OUTPUTS],
        postprocess=False,
        api_visibility="private",
        concurrency_id=DEVICE_LANE,
        concurrency_limit=config.concurrency,
    )


def wire_sweep(config: AppConfig, events, inputs: dict, sweep: dict) -> None:
    """The sweep's button: the negative started at several steps, drawn in a row with its reading."""
    sweep["button"].click(
        events.sweep_ui,
        inputs_kwargs=inputs,
        outputs=[sweep["picture"], sweep["reading"]],
        api_visibility="private",
        concurrency_id=DEVICE_LANE,
        concurrency_limit=config.concurrency,
    )


def api_endpoints(config: AppConfig, events, defaults: dict) -> None:
    """Public `/compare`, `/sweep` and `/seeds`: hidden triggers with their own inputs, one per input and named
    like it (their bounds don't follow a browser session's model; the server checks every value anyway)."""
    # Left out, the seed is random, the size native (0) and the rest the default model's defaults.
    values = {
        **DEFAULTS,
        **GRID_DEFAULTS,
        **defaults,
        "model": config.default_model,
        # An API checkbox has no "blank" (the page's follows the negative, the CLI's blank is `phrased_by_default`):
        # left out, the third column is there whenever there is a negative
        "phrased": True,
        "seed": -1,
        "width": 0,
        "height": 0,
    }
    fields = {**FIELDS, **GRID_FIELDS}
    with gr.Row(visible=False):
        compare_trigger, sweep_trigger = gr.Button("compare (API)"), gr.Button("sweep (API)")
        seeds_trigger = gr.Button("seeds (API)")
        api_inputs = {name: api_widget(name, fields.get(name), values[name]) for name in SEEDS_API_INPUTS}
        compare_outputs = [
            gr.Image(label="without negative prompt", format="png", type="filepath"),
            gr.Image(label="with negative prompt", format="png", type="filepath"),
            gr.Number(label="seed used", precision=0),
            gr.JSON(label="trace"),
        ]
        sweep_outputs = [gr.Gallery(label="no negative, then each start", format="png"), gr.JSON(label="sweep")]
        seeds_outputs = [gr.Gallery(label="every image, by column and seed", format="png"), gr.JSON(label="seeds")]
    comparison_inputs = {name: api_inputs[name] for name in INPUT_NAMES}
    for trigger, function, outputs, name, inputs in (
        (compare_trigger, events.compare_api, compare_outputs, "compare", comparison_inputs),
        (sweep_trigger, events.sweep_api, sweep_outputs, "sweep", comparison_inputs),
        (seeds_trigger, SeedsHandlers(events).seeds_api, seeds_outputs, "seeds", api_inputs),
    ):
        trigger.click(
            function,
            inputs_kwargs=inputs,
            outputs=outputs,
            api_name=name,
            concurrency_id=DEVICE_LANE,
            concurrency_limit=config.concurrency,
        )


def launch_options(config: AppConfig | None = None) -> dict:
    """Theme, CSS and the upload bound, which Gradio 6 takes at launch (tests launch with the same). A shared
    instance takes no file at all (its model list is locked, so it offers no embedding upload): every upload is
    refused at the route, before anything is kept."""
    shared = config is not None and config.shared
    return {"theme": gr.themes.Soft(), "css": CSS, "max_file_size": 0 if shared else MAX_UPLOAD}
