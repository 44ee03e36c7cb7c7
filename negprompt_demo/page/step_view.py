"""The step view's pictures for one step of a stored or streaming run: each run's x0 with its guidance map, the
negative push, what each branch predicts, the curves with the step marked, and a chosen word's attention map.
The page's step slider and the live view during sampling both draw through `step_outputs`."""

from __future__ import annotations

import math

import gradio as gr
import numpy as np

from negprompt_demo.page.jobs import JobFiles
from negprompt_demo.runner import GuidanceTrace
from negprompt_demo.views.attention_views import step_attention
from negprompt_demo.views.legends import step_legend
from negprompt_demo.views.visualize import PART_THRESHOLD, CurvesPicture, describe, step_views

STEP_OUTPUTS = (
    *("x0_without", "guidance_without", "x0_with", "guidance_with", "push", "nag", "legend", "curves", "reading"),
    *("branch_prompt", "branch_empty", "branch_negative", "branch_guided", "branch_note"),
    *("attention", "attention_strip", "attention_reading"),
)


def step_outputs(
    trace: GuidanceTrace,
    index: int,
    files: JobFiles,
    curves: CurvesPicture | None,
    word=None,
    strip: np.ndarray | None = None,
    attention: bool = True,
) -> dict:
    """The step view for step `index` (0-based): both runs' x0 with and without the guidance overlay, the push
    map, the legend, when given the run's curves, the curves with that step marked and their reading, and the
    chosen word's attention map with its strip over the steps (`strip`: that word's maps at the kept steps, read
    from the trace in memory when not given; `attention=False` leaves those outputs as they are)."""
    views = step_views(trace, index)
    updates = {name: files.png(views.get(name), name) for name in ("x0_without", "guidance_without", "x0_with")}
    updates["guidance_with"] = files.png(views["guidance_with"], "guidance_with")
    updates["push"] = files.png(views.get("push"), "push")
    updates["nag"] = files.png(views.get("nag"), "nag")  # how far NAG moved the attention output (NAG runs only)
    for branch in ("prompt", "empty", "negative"):
        updates[f"branch_{branch}"] = files.png(views.get(f"branch_{branch}"), f"branch_{branch}")
    updates["branch_guided"] = updates["x0_with"] if "branch_prompt" in views else None
    updates["branch_note"] = branch_note(trace, index, "branch_prompt" in views)
    updates["legend"] = files.png(step_legend(trace), "legend")
    if curves is not None:
        updates["curves"] = files.png(curves.marked(index), "curves")
        updates["reading"] = describe(trace)
    if attention:
        updates.update(attention_outputs(trace, index, files, word, strip))
    return updates


def telling_step(trace: GuidanceTrace) -> int:
    """The step the view opens at (0-based): where the two runs part (their latents first differ by
    `visualize.PART_THRESHOLD`, the step the curves' reading names), while the negative acts. There the branch
    pictures still differ; at the last step they all look alike. The last step when the runs never part."""
    steps = trace.steps
    if not steps or not trace.cfg_active:
        return max(len(steps) - 1, 0)
    parted = [i for i, step in enumerate(steps) if step.negative_active and step.divergence > PART_THRESHOLD]
    return parted[0] if parted else len(steps) - 1


def guidance_rule(trace: GuidanceTrace, index: int) -> str:
    """The guided step that was applied at step `index`, in words: window, strength and Perp-Neg included."""
    scale = f"{trace.guidance_scale:g}"
    if not trace.steps[index].negative_active:
        return (
            f"empty + {scale} × (prompt − empty): **the negative does not act at this step** (outside its window), "
            "so this run takes the same step as the run without it would"
        )
    if trace.negative_mode == "nag":  # the CFG branch stays the empty prompt's; the negative acts in attention
        return (
            f"empty + {scale} × (prompt′ − empty), where prompt′ is the prompt's prediction with its attention "
            "pushed away from the negative's (NAG; the NAG map shows where)"
        )
    nag = " — and the prompt's attention pushed away from the negative's (NAG)" if trace.negative_mode == "both" else ""
    return cfg_rule(trace, scale) + nag


def cfg_rule(trace: GuidanceTrace, scale: str) -> str:
    """The guided step through CFG's negative branch: plain, with a strength, or Perp-Neg."""
    strength = trace.negative_strength
    if strength == 1.0 and not trace.perp_neg:
        return f"negative + {scale} × (prompt − negative): the negative took the empty prompt's place"
    push = "(negative − empty)⊥, the part perpendicular to (prompt − empty) (Perp-Neg)" if trace.perp_neg else None
    push = push or "(negative − empty)"
    return f"empty + {scale} × (prompt − empty) − {strength:g} × ({scale} − 1) × {push}"


def branch_note(trace: GuidanceTrace, index: int, recorded: bool) -> str:
    """What the branch row shows at this step, in the article's words, with the rule that was applied."""
    if not trace.cfg_active:
        note = "Guidance is off (scale ≤ 1): there is only the prompt's prediction, so no branches to compare."
        if trace.negative_mode != "cfg" and trace.steps[index].negative_active:
            note += " The negative acts in attention at this step (NAG): its map shows where it moved the output."
        return note
    rule = guidance_rule(trace, index)
    if not recorded:
        return (
            f"Step {index + 1}: guided step = {rule}. Tick “record what the empty prompt predicts” to see what each "
            "branch predicts at every step."
        )
    return (
        f"Step {index + 1}, from the with-negative run's current sample: the **prompt** alone (conditional), the "
        "**empty prompt** alone (unconditional: it still heads for a decent image, but it could be anything), "
        f"the **negative prompt** alone, and the **guided step** the sampler took = {rule}."
    ) + scheduled_texts_note(trace, index)


def scheduled_texts_note(trace: GuidanceTrace, index: int) -> str:
    """Which texts the branches used at this step, where they change during sampling (A1111 prompt editing)."""
    texts = [step.texts for step in trace.steps if step.texts is not None]
    if not texts or all(step_texts == texts[0] for step_texts in texts):
        return ""
    used = trace.steps[index].texts or {}
    negative = used.get("negative")
    shown = "the empty prompt's" if not negative else f"“{negative}”"
    return (
        f" Prompt editing: at this step the prompt is “{used.get('prompt', '')}” and the negative branch reads {shown}."
    )


def step_slider(total: int, at: int) -> dict:
    """The step slider's update for a run of `total` steps shown at step `at` (1-based). A one-step run gets a
    slider that cannot move (Gradio refuses a slider whose minimum equals its maximum)."""
    return gr.update(minimum=1, maximum=max(total, 2), value=min(max(at, 1), max(total, 1)), interactive=total > 1)


def attention_outputs(trace: GuidanceTrace, index: int, files: JobFiles, word, strip: np.ndarray | None) -> dict:
    """The chosen word's map over the with-run's x0 at step `index`, its strip over the kept steps and a reading."""
    overlay, picture, reading = step_attention(trace, index, word, strip)
    return {
        "attention": files.png(overlay, "attention"),
        "attention_strip": files.png(picture, "attention_strip"),
        "attention_reading": reading,
    }


def live_trace(records: list, settings) -> GuidanceTrace:
    """The steps recorded so far as a trace, to draw while sampling (`settings`: the run's CompareSettings). The
    tracer writes a NaN cosine exactly when classifier-free guidance is off, which is how a partial trace knows."""
    cfg_active = bool(records) and math.isfinite(records[0].guidance_cosine)
    trace = GuidanceTrace(settings.guidance, cfg_active, "epsilon", steps=list(records))
    trace.negative_strength, trace.perp_neg = settings.negative_strength, settings.perp_neg
    trace.negative_mode = settings.negative_mode
    return trace
