"""When and how strongly the negative prompt acts: the denoiser hook that decides each run's negative branch per step.

A pipeline call samples several runs of one seed side by side (the run without the negative prompt first, then
runs with it). The denoiser is the UNet (SD 1.x/2.x, SDXL) or the transformer (SD3, FLUX.1). diffusers asks it
for both branches of classifier-free guidance in one of two ways:

    one call per step   (SD 1.x/2.x, SDXL, SD3): the batch is [negative branch of every run, text branch of every
                        run], the answer is split in two halves;
    two calls per step  (FLUX.1 with true CFG, pipeline_flux.py): first the text branch of every run, then the
                        negative branch of every run, each a batch of its own (`split_calls`; the hook tells the
                        calls apart by that order and refuses a third call in a step).

and then takes ε = ε_neg + g·(ε_text − ε_neg) per run. This hook rewrites what the denoiser is asked and what it
answers, so that for a with-run at step k:

    outside its window [start_step, end_step):  ε_neg := ε_∅   (the empty prompt, as in the without-run)
    inside, plain:                              ε_neg := ε_∅ + m·(ε_n − ε_∅)
    inside, Perp-Neg:                           ε_neg := ε_∅ + m·(ε_n − ε_∅)⊥   (⊥: perpendicular to ε_text − ε_∅)

which makes the guided step ε_∅ + g·(ε_text − ε_∅) − m·(g − 1)·(ε_n − ε_∅): m = 1 is plain CFG with the negative,
m = 0 no negative, m = 2 twice the push away from it. ε_∅ on the with-run's own latents is one extra batch item
(the "three-branch" batch), asked only where it is needed (m ≠ 1, Perp-Neg, outside the window, or the trace's
negative-push map). Perp-Neg here is Armandpour et al.'s (arXiv 2304.04968; ComfyUI's PerpNegGuider) with its
negative scale written as m·(g − 1)/g, so that m keeps one meaning with and without it.

Shared steps: before its window opens, a with-run is the same computation as the without-run of its seed (same
noise, same conditioning), so its items are not sent to the denoiser at all and it takes the without-run's
answers: a late negative costs fewer items, not more. Everything stays one denoiser call per step (two for FLUX.1's
true CFG, ε_∅ then going with the negative branch's call), except where the step's texts differ in chunk count:
then one call per length, each text read at its own as in A1111's default (`scheduled_text.TextLengths`).

Texts that change during sampling (A1111 prompt editing, `scheduled_text.StepConditioning`): the hook conditions
every item of the step's call on its prompt or negative of that step.

An "unguided" run (FLUX.1's plain distilled run, shown beside the true-CFG pair) gets its own text answer as its
negative branch: ε_neg + g·(ε_text − ε_neg) is then exactly ε_text, what FLUX.1 without true CFG samples, and the
run is never sent for a negative branch.

With the defaults (window 0–1, m = 1, no Perp-Neg, no push map) the hook sends the batch unchanged: the result is
exactly a plain diffusers call's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from negprompt_demo.sampling.hooks import BatchRows, CallHolds, DenoiserCall, ModelHook

if TYPE_CHECKING:
    from negprompt_demo.models.scheduled_text import StepConditioning, TextLengths


@dataclass(frozen=True)
class NegativePlan:
    """How one run uses the negative prompt. The without-run's plan is `NO_NEGATIVE` (never active)."""

    start_step: int  # first 0-based step at which the negative acts
    end_step: int  # first step at which it no longer acts
    strength: float = 1.0
    perp_neg: bool = False

    def active(self, step: int) -> bool:
        return self.start_step <= step < self.end_step

    def needs_empty(self, step: int) -> bool:
        """Whether this run needs ε_∅ on its own latents at `step` (the third branch)."""
        return not self.active(step) or self.strength != 1.0 or self.perp_neg


NO_NEGATIVE = NegativePlan(0, 0)


@dataclass
class Branches:
    """What the denoiser answered at one step, per run (index = batch item of the pipeline's latents)."""

    sample: torch.Tensor  # [B, ...] each run's (scaled) model input: [B, c, h, w], FLUX.1's packed [B, n, 4c]
    timestep: torch.Tensor | float
    negative: torch.Tensor  # [B, ...] the negative branch each run's guidance used
    text: torch.Tensor  # [B, ...]
    empty: dict[int, torch.Tensor]  # run → ε_∅ on its latents, where it was computed
    active: list[bool]  # whether each run's negative acted at this step


# The denoiser's batched inputs: the latents (the UNet's first argument `sample`, a transformer's `hidden_states`),
# the timestep and FLUX.1's distilled guidance follow each item's latents; the text conditioning follows its
# conditioning row. Unbatched ones (FLUX.1's txt_ids/img_ids, attention kwargs) pass unchanged.
LATENT_INPUTS = ("sample", "hidden_states")
PER_ITEM_INPUTS = ("timestep", "guidance")
CONDITIONING_INPUTS = ("encoder_hidden_states", "pooled_projections")


class BranchHook(ModelHook):
    """Denoiser hooks for one pipeline call whose batch holds `plans` (one per run, the without-runs' included).

    `source[b]` is the without-run of b's seed; `push_runs` get ε_∅ at every step they are sampled apart (the
    trace's negative-push map); `unguided` runs take their text answer as their negative branch. `split_calls`:
    the pipeline asks for the text branch and the negative branch in two calls per step (FLUX.1's true CFG). Use
    as a context manager (hooks removed even if sampling raises) and call `step_done()` after every step.
    `conditioning`: each item's prompt and negative per step, where they change (prompt editing); the hook then
    conditions every item of the step's call on its texts of that step. `call` says, during each denoiser call,
    its step and which rows hold which run's branch (`hooks.BatchRows`; attention maps and NAG read it).
    """

    def __init__(
        self,
        denoiser,
        plans: list[NegativePlan],
        source: list[int],
        push_runs: tuple[int, ...] = (),
        capture: bool = False,
        split_calls: bool = False,
        unguided: tuple[int, ...] = (),
        conditioning: StepConditioning | None = None,
        lengths: TextLengths | None = None,
    ):
        super().__init__(denoiser)
        self.plans, self.source, self.push_runs = plans, source, set(push_runs)
        self.capture = capture  # keep each step's `Branches` (the trace reads them)
        self.split_calls, self.unguided = split_calls, set(unguided)
        self.conditioning = conditioning  # prompts or negatives that change during sampling (scheduled_text.py)
        self.lengths = lengths  # texts of different lengths, each read at its own (scheduled_text.py)
        self.call = DenoiserCall()
        self.captured: Branches | None = None
        self._row_items: list[tuple[str, int]] | None = None  # (branch, item) each row is conditioned as
        self._forward = None  # the denoiser's own forward, while split by length
        self._calls = 0  # denoiser calls in this step (split calls: 1 = text branch, 2 = negative branch)
        self._latents = self._timestep = None
        self._text_answers: dict[int, torch.Tensor] = {}  # split calls: the text call's answers, by run

    @property
    def step(self) -> int:
        return self.call.step

    def install(self) -> None:
        self.add_pre_hook(self.model, self._before)
        self.add_post_hook(self.model, self._after)
        if self.lengths is not None:  # between the hooks: the call itself, split by text length
            self._forward = self.replace_forward(self._forward_by_length)

    def step_done(self) -> None:
        self.call.step += 1
        self._calls = 0

    def distinct(self, run: int) -> bool:
        """Whether a run's latents can differ from its seed's without-run yet (a with-run before its window
        opens is the same computation)."""
        plan = self.plans[run]
        return self.source[run] == run or plan.start_step <= self.step and plan.start_step < plan.end_step

    def batch_rows(self, holds: CallHolds) -> BatchRows:
        """The runs whose negative, text and empty (ε_∅) items the denoiser is asked for at this step."""
        if holds is CallHolds.TEXT_ONLY:
            return BatchRows.text_only(len(self.plans))
        runs = [run for run in range(len(self.plans)) if self.distinct(run)]
        negative = [
            run
            for run in runs
            if run not in self.unguided and (self.source[run] == run or self.plans[run].active(self.step))
        ]
        empty = [
            run
            for run in runs
            if self.source[run] != run and (self.plans[run].needs_empty(self.step) or run in self.push_runs)
        ]
        shares = [run if self.distinct(run) else self.source[run] for run in range(len(self.plans))]
        return BatchRows(holds, tuple(negative), tuple(runs), tuple(empty), tuple(shares))

    # --- hooks -----------------------------------------------------------------------------------------------

    def _before(self, module, args, kwargs):
        count, sample = len(self.plans), _latent_input(args, kwargs)
        holds = self._which_call(sample.shape[0])
        if holds is CallHolds.NEGATIVE:  # the step's second call: the items the text call found
            self.call.rows = replace(self.call.rows, holds=holds)
        else:  # the step's first call: each run's latents and timestep, and which items to ask for
            self._latents, self._timestep = sample[:count], _timestep_input(args, kwargs)
            self.call.rows = self.batch_rows(holds)
        self._row_items = None  # what each row of this call is, for `_forward_by_length`
        if holds is CallHolds.TEXT_ONLY:  # nothing to decide but the prompt's text this step
            self._row_items = [("prompt", item) for item in range(count)]
            if self.conditioning is None:
                return None
            return args, self._conditioned(kwargs, self._row_items)
        if self._unchanged():  # plain CFG for every run: the batch goes as the pipeline made it
            if holds is CallHolds.BOTH:
                self._row_items = [(branch, item) for branch in ("negative", "prompt") for item in range(count)]
            return None
        # Rows of this call's input batch: negative items, text items (second half in a BOTH call) and ε_∅ items,
        # which take the run's latents with its seed's without-run negative conditioning (the empty prompt, or
        # SDXL's zeros).
        negative, text, empty = list(self.call.rows.negative), list(self.call.rows.text), list(self.call.rows.empty)
        if holds is CallHolds.BOTH:
            rows = negative + [count + run for run in text] + empty
            condition_rows = negative + [count + run for run in text] + [self.source[run] for run in empty]
        elif holds is CallHolds.TEXT:
            rows = condition_rows = text
        else:
            rows = negative + empty
            condition_rows = negative + [self.source[run] for run in empty]
        args, kwargs = _select_items(args, kwargs, sample.shape[0], rows, condition_rows)
        if holds is CallHolds.BOTH:  # row < count: a negative item (UNet families, the only ones with schedules)
            self._row_items = [("negative", row) if row < count else ("prompt", row - count) for row in condition_rows]
            if self.conditioning is not None:
                kwargs = self._conditioned(kwargs, self._row_items)
        return args, kwargs

    def _forward_by_length(self, *args, **kwargs):
        """The denoiser's forward with each row's text read at its own length (scheduled_text.TextLengths): one
        call per length, only where this call's rows differ (A1111's default, pad_cond_uncond off)."""
        items = self._row_items
        if items is None or kwargs.get("encoder_hidden_states") is None:
            return self._forward(*args, **kwargs)
        lengths = [self.lengths.of(self.step, branch, item) for branch, item in items]
        distinct = sorted({length for length in lengths if length is not None}) or [None]
        groups = {length: [row for row, own in enumerate(lengths) if own == length or own is None and
                           length == distinct[0]] for length in distinct}  # fmt: skip
        batch = len(items)
        if len(groups) == 1:
            kwargs = dict(kwargs, encoder_hidden_states=kwargs["encoder_hidden_states"][:, : distinct[0]])
            return self._forward(*args, **kwargs)
        outputs, predictions = None, [None] * batch
        for length, rows in groups.items():
            group_args, group_kwargs = _select_items(args, kwargs, batch, rows, rows)
            group_kwargs["encoder_hidden_states"] = group_kwargs["encoder_hidden_states"][:, :length]
            outputs = self._forward(*group_args, **group_kwargs)
            answer = outputs[0] if isinstance(outputs, tuple) else outputs.sample
            for row, value in zip(rows, answer):
                predictions[row] = value
        return _replace_prediction(outputs, torch.stack(predictions))

    def _conditioned(self, kwargs: dict, items: list[tuple[str, int]]) -> dict:
        """The UNet's keyword arguments with each item's text conditioning of this step."""
        rows = self.conditioning.rows(self.step, items)
        kwargs = dict(kwargs, encoder_hidden_states=rows["encoder_hidden_states"])
        if "text_embeds" in rows:
            kwargs["added_cond_kwargs"] = dict(kwargs["added_cond_kwargs"], text_embeds=rows["text_embeds"])
        return kwargs

    def _after(self, module, args, kwargs, output):
        prediction = output[0] if isinstance(output, tuple) else output.sample
        count, rows = len(self.plans), self.call.rows
        if rows.holds is CallHolds.TEXT_ONLY:  # every item is a text item, and the guidance is zero
            self.captured = Branches(self._latents, self._timestep, prediction, prediction, {}, [False] * count)
            return None
        answers = iter(prediction)
        if rows.holds is CallHolds.TEXT:
            self._text_answers = {run: next(answers) for run in rows.text}
            if self._unchanged():
                return None
            full_text = [self._text_answers[rows.shares[run]] for run in range(count)]
            return _replace_prediction(output, torch.stack(full_text))
        if self._unchanged() and not self.capture:
            return None
        negative_answers = {run: next(answers) for run in rows.negative}
        both = rows.holds is CallHolds.BOTH
        text_answers = {run: next(answers) for run in rows.text} if both else self._text_answers
        empty_answers = {run: next(answers) for run in rows.empty}
        full_negative, full_text = [], []
        for run in range(count):
            shared = rows.shares[run]  # a run before its window: its source's
            full_text.append(text_answers[shared])
            full_negative.append(self._negative_branch(shared, negative_answers, empty_answers, text_answers[shared]))
        active = [self.source[run] != run and self.plans[run].active(self.step) for run in range(count)]
        negative_branch, text_branch = torch.stack(full_negative), torch.stack(full_text)
        self.captured = Branches(self._latents, self._timestep, negative_branch, text_branch, empty_answers, active)
        if self._unchanged():
            return None
        result = torch.cat([negative_branch, text_branch]) if both else negative_branch
        return _replace_prediction(output, result)

    def _which_call(self, batch: int) -> CallHolds:
        """Which branches this call holds (see the module docstring)."""
        if not self.split_calls:
            return CallHolds.BOTH if batch == 2 * len(self.plans) else CallHolds.TEXT_ONLY
        self._calls += 1
        if self._calls > 2:
            raise RuntimeError(
                "The denoiser was called more than twice in one step; this pipeline's true-CFG loop is not the "
                "one the guidance hook knows (text branch, then negative branch)."
            )
        return CallHolds.TEXT if self._calls == 1 else CallHolds.NEGATIVE

    def _unchanged(self) -> bool:
        """Whether this call's batch is exactly the pipeline's own (plain CFG for every run)."""
        if self.conditioning is not None:  # the texts of each step go in
            return False
        rows = self.call.rows
        every_run = tuple(range(len(self.plans)))
        if rows.holds is CallHolds.TEXT:
            return rows.text == every_run
        return rows.negative == rows.text == every_run and not rows.empty

    def _negative_branch(
        self, run: int, negative: dict[int, torch.Tensor], empty: dict[int, torch.Tensor], text_answer: torch.Tensor
    ) -> torch.Tensor:
        """The negative branch run `run` gets at this step from this call's answers by run (see the module
        docstring)."""
        if run in self.unguided:
            return text_answer
        if self.source[run] == run:
            return negative[run]
        plan = self.plans[run]
        if not plan.active(self.step):
            return empty[run]
        if plan.strength == 1.0 and not plan.perp_neg:  # plain CFG (ε_∅ may be there for the push map only)
            return negative[run]
        push = negative[run] - empty[run]
        if plan.perp_neg:
            direction = (text_answer - empty[run]).flatten().float()
            along = (push.flatten().float() @ direction) / direction.square().sum().clamp_min(1e-12)
            push = push - along.to(push.dtype) * (text_answer - empty[run])
        return empty[run] + plan.strength * push


def _latent_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return next(kwargs[name] for name in LATENT_INPUTS if kwargs.get(name) is not None)


def _timestep_input(args: tuple, kwargs: dict):
    return args[1] if len(args) > 1 else kwargs["timestep"]


def _select_items(args: tuple, kwargs: dict, batch: int, rows: list[int], condition_rows: list[int]):
    """The denoiser's (args, kwargs) with only the items `rows` (latents, timestep) conditioned as
    `condition_rows` (text conditioning, SDXL's added conditioning)."""
    device = _latent_input(args, kwargs).device
    rows_t = torch.tensor(rows, device=device)
    condition_t = torch.tensor(condition_rows, device=device)

    def per_item(value, index):
        batched = torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == batch
        return value[index] if batched else value

    args = list(args)
    if args:
        args[0] = args[0][rows_t]
    if len(args) > 1:
        args[1] = per_item(args[1], rows_t)
    kwargs = dict(kwargs)
    for name in LATENT_INPUTS + PER_ITEM_INPUTS:
        if name in kwargs:
            kwargs[name] = per_item(kwargs[name], rows_t)
    for name in CONDITIONING_INPUTS:
        if name in kwargs:
            kwargs[name] = per_item(kwargs[name], condition_t)
    if kwargs.get("added_cond_kwargs"):
        kwargs["added_cond_kwargs"] = {key: value[condition_t] for key, value in kwargs["added_cond_kwargs"].items()}
    return tuple(args), kwargs


def _replace_prediction(output, prediction: torch.Tensor):
    return (prediction,) if isinstance(output, tuple) else type(output)(sample=prediction)
