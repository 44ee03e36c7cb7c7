"""The delayed effect (Ban et al. 2024, "Understanding the Impact of Negative Prompts", arXiv 2406.02965), measured.

Ban et al. found that a negative prompt acts late — only after a critical step — and that applied too early it can
even add the object it names. Here the embedded model is asked the same question through the app's own engine:
"portrait photo of a man" with the negative prompt "mustache" (or "hat") acting only in a window of the sampling
steps (A1111 prompt editing: 0-based steps int(start·steps) <= k < int(end·steps); outside it the with-run uses
the empty prompt's branch), over many seeds, read by the probe:

* the start sweep: the negative from `start` to the end — if starting it late keeps most of the effect, it acts late;
* the end sweep: the negative from step 0 until `end` — if stopping it early keeps most of the effect, the outcome
  is decided early (not delayed); a rate above the no-negative baseline means early use adds the object.

Start 1 and end 0 are empty windows (no negative at all) and must equal the baseline. Every setting also reports
how much the rest of the image changes: the mean absolute pixel difference (0–255) between the with-run and the
without-run of each seed outside the attribute's box `faces.ATTRIBUTE_REGIONS` (and inside it, for reference).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from negprompt_demo.embedded.faces import ATTRIBUTE_REGIONS, SIZE
from negprompt_demo.embedded.probe import Probe
from negprompt_demo.embedded_tools.evaluate import BASE_PROMPT
from negprompt_demo.sampling.engine import generate_pairs
from negprompt_demo.settings import CompareSettings
from negprompt_demo.syntax.prompt_editing import window_steps

STARTS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # start sweep, end 1
ENDS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # end sweep, start 0
DELAYED_ATTRIBUTES: tuple[str, ...] = ("mustache", "hat")
PAPER = 'Ban et al. 2024, "Understanding the Impact of Negative Prompts", arXiv 2406.02965'


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial rate k/n (95 % for z = 1.96), as (low, high) in 0..1."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Rate:
    """The probe's count of one attribute over n images, with its Wilson 95 % interval (0..1)."""

    k: int
    n: int
    rate: float
    low: float
    high: float

    @classmethod
    def of(cls, present: np.ndarray) -> Rate:
        k, n = int(present.sum()), len(present)
        low, high = wilson(k, n)
        return cls(k, n, round(k / n, 4), round(low, 4), round(high, 4))


@dataclass
class WindowResult:
    """One window of the negative prompt: its rate and how much it changed the image, over the seeds."""

    start: float
    end: float
    start_step: int  # the negative acts at 0-based steps start_step <= k < end_step
    end_step: int
    attribute: Rate
    face: Rate
    diff_outside: float  # mean |with − without| (0–255) outside the attribute's box, over pixels, channels, seeds
    diff_inside: float  # the same inside the box
    changed_images: int  # seeds whose with-run image differs from the without-run image at all


@dataclass
class _Pass:
    """What one sweep setting measured, before it is summarised; the without-run too (the baseline)."""

    with_present: list[np.ndarray]
    with_face: list[np.ndarray]
    without_present: list[np.ndarray]
    without_face: list[np.ndarray]
    outside: list[np.ndarray]
    inside: list[np.ndarray]


def region_mask(attribute: str) -> np.ndarray:
    """True inside the attribute's ATTRIBUTE_REGIONS box of a SIZE px image."""
    x0, y0, x1, y1 = ATTRIBUTE_REGIONS[attribute]
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def pixel_differences(pairs: list[tuple[Image.Image, Image.Image]], inside: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per pair, the mean absolute pixel difference (0–255) outside and inside the mask."""
    without = np.stack([np.asarray(pair[0].convert("RGB"), dtype=np.float64) for pair in pairs])
    with_negative = np.stack([np.asarray(pair[1].convert("RGB"), dtype=np.float64) for pair in pairs])
    diff = np.abs(with_negative - without).mean(axis=-1)  # N x H x W
    return diff[:, ~inside].mean(axis=1), diff[:, inside].mean(axis=1)


def measure_window(
    pipe,
    probe: Probe,
    attribute: str,
    seeds: list[int],
    start: float,
    end: float,
    *,
    guidance: float,
    steps: int,
    scheduler: str,
    chunk: int = 64,
) -> tuple[WindowResult, Rate]:
    """One window over `seeds`, through `generate_pairs` in chunks; returns it and the without-run's rate."""
    settings = CompareSettings(
        prompt=BASE_PROMPT,
        negative=attribute,
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        negative_start=start,
        negative_end=end,
    )
    mask = region_mask(attribute)
    got = _Pass([], [], [], [], [], [])
    for i in range(0, len(seeds), chunk):
        pairs = generate_pairs(pipe, settings, seeds[i : i + chunk])
        without, with_negative = (probe.predict([pair[k] for pair in pairs]) for k in (0, 1))
        got.with_present.append(with_negative[attribute])
        got.with_face.append(with_negative["face"])
        got.without_present.append(without[attribute])
        got.without_face.append(without["face"])
        outside, inside = pixel_differences(pairs, mask)
        got.outside.append(outside)
        got.inside.append(inside)
    outside, inside = np.concatenate(got.outside), np.concatenate(got.inside)
    start_step, end_step = window_steps(start, end, steps)
    result = WindowResult(
        start=start,
        end=end,
        start_step=start_step,
        end_step=end_step,
        attribute=Rate.of(np.concatenate(got.with_present)),
        face=Rate.of(np.concatenate(got.with_face)),
        diff_outside=round(float(outside.mean()), 3),
        diff_inside=round(float(inside.mean()), 3),
        changed_images=int(((outside + inside) > 0).sum()),
    )
    return result, Rate.of(np.concatenate(got.without_present))


def delayed_effect(
    pipe,
    seeds: list[int],
    attributes: tuple[str, ...] = DELAYED_ATTRIBUTES,
    *,
    guidance: float,
    steps: int,
    scheduler: str,
    chunk: int = 64,
    log=print,
) -> dict:
    """Both sweeps for each attribute (negative = the attribute's word), as the dict docs/delayed_effect.json holds."""
    probe = Probe()
    kw = {"guidance": guidance, "steps": steps, "scheduler": scheduler}
    out: dict = {
        "paper": PAPER,
        "prompt": BASE_PROMPT,
        "seeds": f"{seeds[0]}:{seeds[-1] + 1}",
        "n": len(seeds),
        **kw,
        "window": "the negative acts at 0-based steps int(start*steps) <= k < int(end*steps)",
        "attributes": {},
    }
    started = time.perf_counter()
    windows = list(dict.fromkeys([(start, 1.0) for start in STARTS] + [(0.0, end) for end in ENDS]))
    for attribute in attributes:
        done: dict[tuple[float, float], dict] = {}
        baselines: list[Rate] = []
        for start, end in windows:  # the full window 0-1 is in both sweeps: measured once
            result, without = measure_window(pipe, probe, attribute, seeds, start, end, chunk=chunk, **kw)
            done[start, end] = asdict(result)
            baselines.append(without)
            log(
                f"{attribute} window {start:g}-{end:g} (steps {result.start_step}-{result.end_step}): "
                f"{100 * result.attribute.rate:.1f} % (no negative {100 * without.rate:.1f} %), "
                f"diff outside {result.diff_outside:.2f} inside {result.diff_inside:.2f}; "
                f"{time.perf_counter() - started:.0f} s"
            )
        out["attributes"][attribute] = {
            "negative": attribute,
            "region": list(ATTRIBUTE_REGIONS[attribute]),
            "baseline": asdict(baselines[0]),
            # every call samples the same without-runs, so they must agree
            "baseline_same_in_every_call": all(b == baselines[0] for b in baselines),
            "start_sweep": [done[start, 1.0] for start in STARTS],
            "end_sweep": [done[0.0, end] for end in ENDS],
        }
    out["seconds"] = round(time.perf_counter() - started)
    return out


def _share(rate: float, baseline: float, full: float) -> str:
    """How much of the full window's effect (baseline → full) a window keeps, in %."""
    if abs(baseline - full) < 1e-9:
        return "–"
    return f"{100 * (baseline - rate) / (baseline - full):.0f}"


def delayed_markdown(res: dict) -> str:
    """One table per attribute: the no-negative baseline, then the start sweep and the end sweep."""
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [
        f'"{res["prompt"]}", negative = the attribute\'s word; seeds {res["seeds"]} ({res["n"]}), guidance '
        f"{res['guidance']:g}, {res['steps']} steps, {res['scheduler']}. Rates are the probe's calls in % with Wilson "
        "95 % intervals; *effect kept* is (baseline − rate) / (baseline − rate of the full window 0–1); Δ is the "
        "mean absolute pixel difference (0–255) from the same seed's image without the negative, outside and inside "
        "the attribute's box (`faces.ATTRIBUTE_REGIONS`).",
    ]
    header = [
        "",
        "| negative acts | steps (0-based) | {a} % [95 % CI] | effect kept % | faces % | Δ outside box "
        "| Δ inside box |",
        "|---|---|---|---|---|---|---|",
    ]
    for attribute, r in res["attributes"].items():
        base = r["baseline"]
        full = next(w for w in r["start_sweep"] if w["start"] == 0 and w["end"] == 1)["attribute"]["rate"]
        x0, y0, x1, y1 = r["region"]
        lines += [
            "",
            f'**{attribute}** (negative "{r["negative"]}", box x {x0}–{x1}, y {y0}–{y1} of 64 px): no negative '
            f"{pct(base['rate'])} % [{pct(base['low'])}, {pct(base['high'])}]",
            *(h.format(a=attribute) for h in header),
        ]
        sweeps = (("start_sweep", "from {start:g} to the end"), ("end_sweep", "from the start until {end:g}"))
        for sweep, label in sweeps:
            for w in r[sweep]:
                a = w["attribute"]
                steps = f"{w['start_step']}–{w['end_step'] - 1}" if w["start_step"] < w["end_step"] else "none"
                lines.append(
                    f"| {label.format(**w)} | {steps} | {pct(a['rate'])} [{pct(a['low'])}, {pct(a['high'])}] | "
                    f"{_share(a['rate'], base['rate'], full)} | {pct(w['face']['rate'])} | "
                    f"{w['diff_outside']:.2f} | {w['diff_inside']:.2f} |"
                )
    return "\n".join(lines) + "\n"


def write_results(res: dict, out) -> None:
    """OUT.json and OUT.md."""
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(delayed_markdown(res))
