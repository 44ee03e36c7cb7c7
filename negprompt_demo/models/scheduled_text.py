"""Prompts and negatives that change during sampling (A1111 prompt editing and alternation, `prompt_editing.py`):
each run's text at every step, each distinct text encoded once, and the rows the guidance hook conditions each
batch item on at each step.

The pipeline is handed the embeddings of step 0; where any text changes later, `StepConditioning` tells the
guidance hook (`guidance.BranchHook`) which encoded text each batch item's prompt and negative branch take at
step k, and the hook swaps them into the step's one batched UNet call.

Texts of different chunk counts (a prompt over 75 tokens with a short negative, say) are padded to one length for
the pipeline, but each is read at its own length, as A1111 does by default ("pad_cond_uncond" off: it runs the
prompt and the negative as separate UNet calls when their chunk counts differ): `TextLengths` tells the hook each
item's length, and the hook makes one UNet call per length, only at steps where the lengths differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from negprompt_demo.models.embeddings import NegativeEmbedding
from negprompt_demo.models.families import family_of
from negprompt_demo.models.prompts import RunText, encode_runs, encoded_length
from negprompt_demo.syntax.prompt_editing import step_texts


@dataclass
class StepConditioning:
    """Every distinct (prompt, negative) pair's encoding, and which pair each run takes at each step."""

    table: dict  # encode_runs' keyword arguments, one row per distinct pair
    pair_of: list[list[int]]  # [step][run] → row of `table`

    def rows(self, step: int, items: list[tuple[str, int]]) -> dict:
        """The encoder inputs at `step` of batch items given as ("prompt" | "negative", item): hidden states and
        SDXL's pooled embedding ("text_embeds"). Items are [seed0 run0, seed0 run1, …, seed1 run0, …]."""
        runs = len(self.pair_of[step])
        branch_name = {"prompt": "prompt_embeds", "negative": "negative_prompt_embeds"}
        pooled_name = {"prompt": "pooled_prompt_embeds", "negative": "negative_pooled_prompt_embeds"}

        def stacked(names: dict) -> torch.Tensor:
            return torch.stack([self.table[names[branch]][self.pair_of[step][item % runs]] for branch, item in items])

        rows = {"encoder_hidden_states": stacked(branch_name)}
        if "pooled_prompt_embeds" in self.table:
            rows["text_embeds"] = stacked(pooled_name)
        return rows


@dataclass
class TextLengths:
    """Each run's prompt and negative length in places (77 per chunk; None: zeros, any length) at each step."""

    prompt: list[list[int | None]]  # [step][run]
    negative: list[list[int | None]]

    def of(self, step: int, branch: str, item: int) -> int | None:
        row = (self.prompt if branch == "prompt" else self.negative)[step]
        return row[item % len(row)]


def text_lengths(
    pipe, by_step: list[list[RunText]], cfg_active: bool, embedding: NegativeEmbedding | None
) -> TextLengths | None:
    """The texts' own lengths, or None where they are all one length (the batch needs no splitting)."""
    if family_of(pipe).flow_matching:  # their encoders read the text whole, in one length
        return None
    length = {}
    for text in {text for step in by_step for run_text in step for text in (run_text.prompt, run_text.negative)}:
        length[text] = encoded_length(pipe, text, embedding)
    lengths = TextLengths(
        [[length[text.prompt] for text in step] for step in by_step],
        [[length[text.negative] for text in step] for step in by_step],
    )
    used = {value for value in length.values() if value is not None}
    return lengths if cfg_active and len(used) > 1 else None


def texts_by_step(texts: list[RunText], steps: int) -> list[list[RunText]]:
    """Each run's prompt and negative as they stand at each step 0 … steps − 1 (A1111's counting)."""
    prompts = [step_texts(text.prompt, steps) for text in texts]
    negatives = [None if text.negative is None else step_texts(text.negative, steps) for text in texts]
    return [
        [
            RunText(prompt[step], None if negative is None else negative[step])
            for prompt, negative in zip(prompts, negatives)
        ]
        for step in range(steps)
    ]


def encode_scheduled(
    pipe,
    texts: list[RunText],
    seed_count: int,
    cfg_active: bool,
    steps: int,
    embedding: NegativeEmbedding | None = None,
) -> tuple[dict, StepConditioning | None, TextLengths | None]:
    """The pipeline's embeddings keyword arguments (step 0's texts); where a text changes during sampling, the
    per-step conditioning (None: every step is step 0's); where texts differ in length, each one's (None: one
    length)."""
    by_step = texts_by_step(texts, steps)
    lengths = text_lengths(pipe, by_step, cfg_active, embedding)
    if all(step == by_step[0] for step in by_step):
        return encode_runs(pipe, by_step[0], seed_count, cfg_active, embedding), None, lengths
    pairs = list(dict.fromkeys(text for step in by_step for text in step))
    table = encode_runs(pipe, pairs, 1, cfg_active, embedding)  # each distinct text encoded once
    pair_of = [[pairs.index(text) for text in step] for step in by_step]
    first = torch.tensor(pair_of[0])
    arguments = {name: value[first].repeat(seed_count, *([1] * (value.ndim - 1))) for name, value in table.items()}
    return arguments, StepConditioning(table, pair_of), lengths


def used_texts(step_texts: list[RunText], negative_active: bool) -> dict:
    """What the traced with-run (run 1) was conditioned on at one step: its prompt, and its negative branch's text
    (the run without's baseline outside the window; None: SDXL's zero embeddings)."""
    negative = step_texts[1].negative if negative_active else step_texts[0].negative
    return {"prompt": step_texts[1].prompt, "negative": negative}
