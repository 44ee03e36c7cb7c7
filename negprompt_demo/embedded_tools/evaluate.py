"""The evidence: attribute rates over many seeds, measured by the probe on images from the app's own engine.

Every number goes through `negprompt_demo.sampling.engine.generate_pairs`, the paired call the app makes: for one
prompt and a set of seeds it returns, per seed, the image with an empty negative prompt and the image with
the negative prompt. So row (a) "portrait photo of a man" and row (c) "(a) + negative 'mustache'" come from
the same call and the same starting noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from negprompt_demo.embedded.faces import ATTRIBUTES
from negprompt_demo.embedded.probe import OUTPUTS, Probe
from negprompt_demo.models.loading import load_pipeline, model_defaults
from negprompt_demo.sampling.engine import generate_pairs
from negprompt_demo.settings import EMBEDDED, CompareSettings

BASE_PROMPT = "portrait photo of a man"
# per attribute: (phrase after "without", bare negative prompt, phrase after "with")
TABLE_ATTRIBUTES: dict[str, tuple[str, str, str]] = {
    "mustache": ("mustache", "mustache", "a mustache"),
    "glasses": ("glasses", "glasses", "glasses"),
    "hat": ("hat", "hat", "a hat"),
    "beard": ("beard", "beard", "a beard"),
    "earrings": ("earrings", "earrings", "earrings"),
}
UNRELATED_NEGATIVE = "blurry"  # names nothing these portraits show (a common real negative); see EMBEDDED.md


def parse_seeds(text: str) -> list[int]:
    """'0:64' -> 0..63; '1,5,9' -> [1, 5, 9]."""
    if ":" in text:
        start, stop = text.split(":")
        return list(range(int(start), int(stop)))
    return [int(s) for s in text.split(",") if s.strip()]


def sampling_settings(
    pipe, guidance: float | None = None, steps: int | None = None, scheduler: str | None = None
) -> dict[str, float | int | str]:
    """Guidance, steps and scheduler: the given ones, the rest from the loaded model's defaults (the embedded
    model's negprompt_defaults.json, else its family's), so the tools measure at the settings the app uses."""
    defaults = model_defaults(pipe)
    return {
        "guidance": defaults["guidance"] if guidance is None else guidance,
        "steps": defaults["steps"] if steps is None else steps,
        "scheduler": defaults["scheduler"] if scheduler is None else scheduler,
    }


@dataclass
class PairRates:
    """Probe results over the seeds for one paired call: rates (0..1) per output, without / with the negative."""

    prompt: str
    negative: str
    seeds: int
    without: dict[str, float]
    with_negative: dict[str, float]


def probe_pairs(
    pipe,
    prompt: str,
    negative: str,
    seeds: list[int],
    probe: Probe,
    *,
    guidance: float,
    steps: int,
    scheduler: str,
    chunk: int = 64,
    keep_images: bool = False,
) -> tuple[PairRates, list[tuple[Image.Image, Image.Image]]]:
    """Run the engine's paired generation over `seeds` (in chunks of one call each) and probe every image."""
    settings = CompareSettings(prompt=prompt, negative=negative, steps=steps, guidance=guidance, scheduler=scheduler)
    calls: dict[str, list[np.ndarray]] = {"without": [], "with": []}
    kept: list[tuple[Image.Image, Image.Image]] = []
    for i in range(0, len(seeds), chunk):
        pairs = generate_pairs(pipe, settings, seeds[i : i + chunk])
        for side, k in (("without", 0), ("with", 1)):
            pred = probe.predict([pair[k] for pair in pairs])
            calls[side].append(np.stack([pred[name] for name in OUTPUTS], axis=1))
        if keep_images:
            kept += pairs
    rates = {
        side: dict(zip(OUTPUTS, np.concatenate(v).mean(0).round(4).tolist(), strict=True)) for side, v in calls.items()
    }
    return PairRates(prompt, negative, len(seeds), rates["without"], rates["with"]), kept


def evaluate(
    prompt: str,
    negative: str,
    attribute: str,
    seeds: list[int],
    model: str | None = None,
    guidance: float | None = None,
    steps: int | None = None,
    scheduler: str | None = None,
) -> dict:
    """The `evaluate` command: the attribute's rate without and with the negative prompt, as a dict.

    Settings left as None come from the model's defaults (see `sampling_settings`)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {', '.join(ATTRIBUTES)}")
    pipe = load_pipeline(model)
    settings = sampling_settings(pipe, guidance, steps, scheduler)
    rates, _ = probe_pairs(pipe, prompt, negative, seeds, Probe(), **settings)
    return {
        "model": model or EMBEDDED,
        "prompt": prompt,
        "negative": negative,
        "attribute": attribute,
        "seeds": f"{seeds[0]}..{seeds[-1]} ({len(seeds)})",
        **settings,
        "rate_empty_negative": rates.without[attribute],
        "rate_with_negative": rates.with_negative[attribute],
        "face_rate_empty_negative": rates.without["face"],
        "face_rate_with_negative": rates.with_negative["face"],
    }


def results_table(
    pipe,
    seeds: list[int],
    attributes: list[str],
    *,
    guidance: float,
    steps: int,
    scheduler: str,
    unrelated: bool = True,
) -> dict:
    """All rows of docs/EMBEDDED.md: for each attribute (a) plain, (b) "without", (c) negative, (d) "with"."""
    probe = Probe()
    kw = {"guidance": guidance, "steps": steps, "scheduler": scheduler}
    out: dict = {"seeds": f"{seeds[0]}:{seeds[-1] + 1}", **kw, "attributes": {}}
    for attr in attributes:
        without_word, negative, with_phrase = TABLE_ATTRIBUTES[attr]
        a_c, _ = probe_pairs(pipe, BASE_PROMPT, negative, seeds, probe, **kw)
        b, _ = probe_pairs(pipe, f"{BASE_PROMPT} without {without_word}", negative, seeds, probe, **kw)
        d, _ = probe_pairs(pipe, f"{BASE_PROMPT} with {with_phrase}", negative, seeds, probe, **kw)
        out["attributes"][attr] = {
            "negative": negative,
            "a": {"prompt": BASE_PROMPT, "rate": a_c.without[attr], "face": a_c.without["face"]},
            "b": {"prompt": b.prompt, "rate": b.without[attr], "face": b.without["face"]},
            "c": {
                "prompt": BASE_PROMPT,
                "negative": negative,
                "rate": a_c.with_negative[attr],
                "face": a_c.with_negative["face"],
                "all": a_c.with_negative,
            },
            "d": {"prompt": d.prompt, "rate": d.without[attr], "face": d.without["face"]},
            "b_plus_negative": {"rate": b.with_negative[attr], "face": b.with_negative["face"]},
            "d_plus_negative": {"rate": d.with_negative[attr], "face": d.with_negative["face"]},
            "a_all": a_c.without,
        }
        print(
            json.dumps(
                {
                    attr: {
                        k: v["rate"] for k, v in out["attributes"][attr].items() if isinstance(v, dict) and "rate" in v
                    }
                }
            ),
            flush=True,
        )
    if unrelated:
        rates, _ = probe_pairs(pipe, BASE_PROMPT, UNRELATED_NEGATIVE, seeds, probe, **kw)
        out["unrelated_negative"] = {
            "negative": UNRELATED_NEGATIVE,
            "without": rates.without,
            "with": rates.with_negative,
        }
    return out


def merge_tables(parts: list[dict]) -> dict:
    """One table from runs over disjoint attribute sets (same seeds and settings), e.g. run in parallel."""
    merged = {k: v for k, v in parts[0].items() if k not in ("attributes", "unrelated_negative")}
    settings = list(merged)
    merged["attributes"] = {}
    for part in parts:
        assert all(part[k] == merged[k] for k in settings), "parts differ in settings"
        merged["attributes"].update(part["attributes"])
        if "unrelated_negative" in part:
            merged["unrelated_negative"] = part["unrelated_negative"]
    return merged


def table_markdown(res: dict) -> str:
    """The results as a Markdown table (rates in %)."""
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [
        f"Seeds {res['seeds']}, guidance {res['guidance']}, {res['steps']} steps, {res['scheduler']}.",
        "",
        '| attribute | (a) plain prompt | (b) "…without X" | (c) (a) + negative "X" | (d) "…with X" '
        '| faces found in (c) | (b) + negative "X" |',
        "|---|---|---|---|---|---|---|",
    ]
    for attr, r in res["attributes"].items():
        lines.append(
            f"| {attr} | {pct(r['a']['rate'])} | {pct(r['b']['rate'])} | {pct(r['c']['rate'])} | "
            f"{pct(r['d']['rate'])} | {pct(r['c']['face'])} | {pct(r['b_plus_negative']['rate'])} |"
        )
    if "unrelated_negative" not in res:
        return "\n".join(lines) + "\n"
    u = res["unrelated_negative"]
    lines += [
        "",
        f'Negative "{u["negative"]}" (nothing in the image) on "{BASE_PROMPT}", rates in % (empty negative → with it):',
        "",
        "| " + " | ".join(OUTPUTS) + " |",
        "|" + "---|" * len(OUTPUTS),
        "| " + " | ".join(f"{pct(u['without'][k])} → {pct(u['with'][k])}" for k in OUTPUTS) + " |",
    ]
    return "\n".join(lines) + "\n"


def sample_grid(
    pairs: list[tuple[Image.Image, Image.Image]],
    probe: Probe,
    attribute: str,
    titles: tuple[str, str],
    scale: int = 2,
    cols: int = 8,
) -> Image.Image:
    """Per block of `cols` seeds: empty negative above, with the negative below. A thick red frame marks
    the probe calling the attribute present, a thin gray one absent; a black diagonal means no face found."""
    cell, header = 64 * scale + 6, 16
    rows = (len(pairs) + cols - 1) // cols
    block = header + 2 * cell
    grid = Image.new("RGB", (cols * cell, rows * block), "white")
    draw = ImageDraw.Draw(grid)
    for r in range(rows):
        y0 = r * block
        draw.text((4, y0 + 2), f"top: {titles[0]}    bottom: {titles[1]}", fill="black")
        for side in range(2):
            batch = [p[side] for p in pairs[r * cols : (r + 1) * cols]]
            pred = probe.predict(batch)
            for c, img in enumerate(batch):
                x, y = c * cell, y0 + header + side * cell
                present = bool(pred[attribute][c])
                draw.rectangle(
                    (x, y, x + cell - 2, y + cell - 2),
                    outline=(220, 0, 0) if present else (190, 190, 190),
                    width=3 if present else 1,
                )
                grid.paste(img.resize((64 * scale, 64 * scale), Image.Resampling.NEAREST), (x + 3, y + 3))
                if not pred["face"][c]:
                    draw.line((x + 3, y + 3, x + cell - 5, y + cell - 5), fill="black", width=2)
    return grid


def probe_check_grid(images: list[Image.Image], probe: Probe, scale: int = 2, cols: int = 8) -> Image.Image:
    """Generated images with every probe call written under each (M B G H E S = mustache, beard, glasses,
    hat, earrings, smile; '-' absent; 'noface' if no face): for checking the probe by eye."""
    cell_w, cell_h = 64 * scale + 4, 64 * scale + 16
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    pred = probe.predict(images)
    for i, img in enumerate(images):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        grid.paste(img.resize((64 * scale, 64 * scale), Image.Resampling.NEAREST), (x + 2, y))
        code = "".join(a[0].upper() if pred[a][i] else "-" for a in ATTRIBUTES)
        draw.text((x + 4, y + 64 * scale + 2), code + ("" if pred["face"][i] else " noface"), fill="black")
    return grid
