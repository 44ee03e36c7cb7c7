"""Writing a comparison to files: PNGs that carry their generation parameters, the step animation, the trace JSON.

Used by the CLI (`compare --out DIR`) and by the app's downloads, so both produce the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from negprompt_demo.views.visualize import side_by_side, step_frames


def save_png(image: Image.Image, path: Path, parameters: str) -> Path:
    """Lossless PNG with an A1111-style `parameters` text chunk, which A1111, ComfyUI and Civitai read back."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    image.save(path, format="PNG", pnginfo=info)
    return path


def save_gif(frames: list[Image.Image], path: Path, frame_ms: int = 160, last_frame_ms: int = 1500) -> Path:
    """An endlessly looping animation that holds the final frame a little longer."""
    durations = [frame_ms] * (len(frames) - 1) + [last_frame_ms]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def trace_document(comparison) -> dict:
    """Everything needed to reproduce and read the run, as plain JSON."""
    document = {
        "model": comparison.model,
        "settings": comparison.settings.as_dict(),
        "seconds": round(comparison.seconds, 3),
        "warnings": comparison.warnings,
    }
    if comparison.negative_reading is not None:  # how the negative prompt was read: chunks, weights, embedding
        document["negative_reading"] = comparison.negative_reading.as_dict()
    if comparison.trace is not None:
        document.update(comparison.trace.to_json())
    return document


def write_outputs(comparison, out_dir: Path) -> dict[str, Path]:
    """Write the five output files of a comparison into `out_dir` (six on FLUX.1 with true CFG: the plain distilled
    image too) and return their paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = comparison.settings
    with_parameters = settings.parameters_text(comparison.model)
    without_parameters = settings.replace(negative="", negative_embedding="").parameters_text(comparison.model)
    paths = {
        "without_negative": save_png(comparison.without_negative, out_dir / "without_negative.png", without_parameters),
        "with_negative": save_png(comparison.with_negative, out_dir / "with_negative.png", with_parameters),
        "side_by_side": save_png(side_by_side(comparison), out_dir / "side_by_side.png", with_parameters),
    }
    if getattr(comparison, "distilled", None) is not None:  # FLUX.1 with true CFG: the plain distilled run
        distilled_parameters = f"{settings.replace(negative='').parameters_text(comparison.model)}, True CFG: off"
        paths["distilled"] = save_png(comparison.distilled, out_dir / "distilled_no_true_cfg.png", distilled_parameters)
    trace_path = out_dir / "trace.json"
    trace_path.write_text(json.dumps(trace_document(comparison), indent=1, ensure_ascii=False), encoding="utf-8")
    paths["trace"] = trace_path
    if comparison.trace is not None and comparison.trace.steps:
        paths["steps_gif"] = save_gif(step_frames(comparison.trace, settings.negative), out_dir / "steps.gif")
    return paths
