"""What Normalized Attention Guidance does on the embedded model, measured with the attribute probe.

For each negative, on the same held-out seeds: at guidance 1 (no CFG branch) the image without a negative vs the
negative through NAG; at the model's guidance the image without a negative vs the negative through CFG's negative
branch, through NAG (CFG branch the empty prompt's) and through both. Every attribute's rate in each column, with
Wilson 95 % intervals, so side effects show beside the named attribute. `variants` repeat the guidance-1 pair with
other NAG inputs (to see whether the model reacts at all, not to pick the best).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from negprompt_demo.embedded.faces import ATTRIBUTES
from negprompt_demo.models.prompts import encode_text
from negprompt_demo.sampling.engine import generate_pairs, prepare
from negprompt_demo.sampling.nag import _attend, nag_blend
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views.attributes import Rate, _probe

BASE_PROMPT = "portrait photo of a man"
COLUMNS = ("none, g=1", "NAG, g=1", "none", "CFG", "NAG", "both")


def column_images(pipe, negative: str, seeds: list[int], sampling: dict, nag: dict, chunk: int) -> dict[str, list]:
    """The six columns' images (`COLUMNS`) over `seeds`, `chunk` seeds per pipeline call."""
    base = CompareSettings(BASE_PROMPT, negative, **sampling, **nag)
    calls = {
        ("none, g=1", "NAG, g=1"): base.replace(guidance=1.0, negative_mode="nag"),
        ("none", "CFG"): base.replace(negative_mode="cfg"),
        (None, "NAG"): base.replace(negative_mode="nag"),
        (None, "both"): base.replace(negative_mode="both"),
    }
    images: dict[str, list] = {column: [] for column in COLUMNS}
    for (without, with_negative), settings in calls.items():
        for start in range(0, len(seeds), chunk):
            pairs = generate_pairs(pipe, settings, seeds[start : start + chunk])
            if without is not None:
                images[without] += [pair[0] for pair in pairs]
            images[with_negative] += [pair[1] for pair in pairs]
    return images


def column_rates(images: dict[str, list]) -> dict[str, dict[str, Rate]]:
    """Every attribute's rate per column, as the probe reads the images."""
    probe = _probe()
    rates = {}
    for column, shown in images.items():
        scores = probe.scores(shown)
        rates[column] = {name: Rate(int((scores[name] > 0).sum()), len(shown)) for name in ATTRIBUTES}
    return rates


def nag_study(pipe, seeds: list[int], negatives: list[str], sampling: dict, nag: dict, variants: list[dict], chunk=64):
    """The study's results as a dict (see the module docstring); `nag` holds NAG's inputs (empty: the model's)."""
    results: dict = {
        "prompt": BASE_PROMPT,
        "seeds": f"{seeds[0]}:{seeds[-1] + 1}",
        "sampling": sampling,
        "nag": nag or "the model's defaults",
        "negatives": {},
    }
    for negative in negatives:
        rates = column_rates(column_images(pipe, negative, seeds, sampling, nag, chunk))
        found = {column: {a: [r.present, r.total] for a, r in by.items()} for column, by in rates.items()}
        checks = []
        for variant in variants:
            inputs = {**sampling, "guidance": 1.0, "negative_mode": "nag", **variant}
            settings = CompareSettings(BASE_PROMPT, negative, **inputs)
            shown = [pair[1] for start in range(0, len(seeds), chunk) for pair in
                     generate_pairs(pipe, settings, seeds[start : start + chunk])]  # fmt: skip
            rate = column_rates({"v": shown})["v"]
            checks.append({"nag": variant, "rates": {a: [r.present, r.total] for a, r in rate.items()}})
        results["negatives"][negative] = {"columns": found, "variants_at_guidance_1": checks}
        print(study_markdown_one(negative, results["negatives"][negative]), flush=True)
    return results


def _cell(pair: list[int]) -> str:
    return Rate(*pair).text()


def study_markdown_one(negative: str, found: dict) -> str:
    columns = found["columns"]
    lines = [
        f'### Negative "{negative}"\n',
        "| attribute | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for attribute in ATTRIBUTES:
        lines.append(f"| {attribute} | " + " | ".join(_cell(columns[c][attribute]) for c in COLUMNS) + " |")
    if found["variants_at_guidance_1"]:
        lines += ["", "Other NAG inputs at guidance 1 (the named attribute only):", ""]
        for check in found["variants_at_guidance_1"]:
            inputs = ", ".join(f"{k} {v:g}" for k, v in check["nag"].items())
            lines.append(f"- {inputs}: {_cell(check['rates'][negative])}")
    return "\n".join(lines) + "\n"


def write_study(results: dict, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    head = (
        f'Prompt "{results["prompt"]}", seeds {results["seeds"]}, sampling {results["sampling"]}, NAG '
        f"{results['nag']}. Columns: no negative and the negative through NAG at guidance 1; no negative, the "
        "negative through CFG, through NAG (CFG branch empty) and through both at the model's guidance. Each cell: "
        "images the probe reads the attribute in (Wilson 95 % interval).\n"
    )
    parts = [head] + [study_markdown_one(n, found) for n, found in results["negatives"].items()]
    out.with_suffix(".md").write_text("\n".join(parts), encoding="utf-8")


class _LayerStats:
    """A cross-attention processor that answers as the original and records, per call, how NAG would see the
    layer: Z⁺ vs Z⁻ (cosine), the extrapolation's L1 ratio against τ, how far NAG would move the output, and how
    large the layer's output is next to its input (what a change here can do to the image)."""

    def __init__(self, original, name: str, stats: dict, nag: dict):
        self.original, self.name, self.stats, self.nag = original, name, stats, nag

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        output = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if encoder_hidden_states is None:
            return output
        query = attn.to_q(hidden_states)
        positive = _attend(attn, query, encoder_hidden_states)
        negative = _attend(attn, query, self.nag["context"].expand(len(query), -1, -1))
        s, tau, alpha = self.nag["scale"], self.nag["tau"], self.nag["alpha"]
        ratio = (s * positive - (s - 1) * negative).abs().sum(-1) / positive.abs().sum(-1)
        moved = nag_blend(positive, negative, s, tau, alpha) - positive
        row = self.stats.setdefault(self.name, {"cosine": [], "ratio": [], "clipped": [], "moved": [], "output": []})
        row["cosine"].append(torch.nn.functional.cosine_similarity(positive, negative, dim=-1).mean().item())
        row["ratio"].append(ratio.mean().item())
        row["clipped"].append((ratio > tau).float().mean().item())
        row["moved"].append((moved.norm(dim=-1) / positive.norm(dim=-1)).mean().item())
        row["output"].append((output.norm(dim=-1) / hidden_states.norm(dim=-1)).mean().item())
        return output


def layer_diagnostics(pipe, negative: str, seeds: list[int], sampling: dict, nag: dict) -> dict:
    """Per cross-attention layer, averaged over the steps of plain guidance-1 runs of `seeds`: the `_LayerStats`
    figures, to say why NAG does or does not move an attribute on this model."""
    prepared = prepare(pipe, CompareSettings(BASE_PROMPT, negative, seed=seeds[0], **sampling, **nag))
    resolved = prepared.settings
    context, _ = encode_text(pipe, negative, None)
    inputs = {"context": context, "scale": resolved.nag_scale, "tau": resolved.nag_tau, "alpha": resolved.nag_alpha}
    stats: dict = {}
    originals = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(
        {name: _LayerStats(p, name, stats, inputs) if name.endswith("attn2.processor") else p
         for name, p in originals.items()}
    )  # fmt: skip
    try:
        generate_pairs(pipe, resolved.replace(guidance=1.0, negative_mode="cfg"), seeds)
    finally:
        pipe.unet.set_attn_processor(dict(originals))
    return {
        name.removesuffix(".processor"): {key: round(float(np.mean(values)), 4) for key, values in row.items()}
        for name, row in stats.items()
    }
