"""What else a negative prompt moves: every attribute's rate without and with each attribute as the negative.

The many-seeds view's own engine and reading (`many_seeds.sample_grid`, `attributes.side_effects`) over held-out
seeds, one table per negative, for docs/EMBEDDED.md: the push is away from the negative's direction in the
model's space, not a clean cut of one region, and other attributes move with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from negprompt_demo.sampling.engine import prepare
from negprompt_demo.sampling.many_seeds import new_grid, sample_grid
from negprompt_demo.settings import EMBEDDED, CompareSettings
from negprompt_demo.views.attributes import grid_reading, side_effects, side_effects_markdown

BASE_PROMPT = "portrait photo of a man"


def side_effects_tables(pipe, first_seed: int, count: int, negatives: list[str]) -> dict:
    """Per negative: the side-effects rows over `count` seeds from `first_seed` (the engine takes any count;
    the page's limit of 64 is for one user's request)."""
    results: dict = {"prompt": BASE_PROMPT, "seeds": f"{first_seed}:{first_seed + count}", "negatives": {}}
    for negative in negatives:
        prepared = prepare(pipe, CompareSettings(BASE_PROMPT, negative, seed=first_seed))
        reading = grid_reading(sample_grid(pipe, prepared, new_grid(prepared.settings, EMBEDDED, False), count))
        table = side_effects(reading)
        results["negatives"][negative] = {
            "markdown": side_effects_markdown(table),
            "rows": [
                {
                    "attribute": row["attribute"],
                    "without": [row["without"].present, row["without"].total],
                    "with": [row["with"].present, row["with"].total],
                    "change_interval_95": [round(v, 4) for v in row["interval"]],
                    "moved": row["moved"],
                }
                for row in table
            ],
        }
        print(f"negative {negative!r}:\n{results['negatives'][negative]['markdown']}\n", flush=True)
    return results


def write_side_effects(results: dict, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    parts = [f'Prompt "{results["prompt"]}", seeds {results["seeds"]}, the model\'s default settings.\n']
    for negative, table in results["negatives"].items():
        parts.append(f'### Negative prompt "{negative}"\n\n{table["markdown"]}\n')
    out.with_suffix(".md").write_text("\n".join(parts), encoding="utf-8")
