"""When and how strongly the negative prompt acts: the UNet hook that decides each run's negative branch per step.

A pipeline call samples several runs of one seed side by side (the run without the negative prompt first, then
runs with it). diffusers batches the UNet input as `[negative branch of every run, text branch of every run]` and
then takes ε = ε_neg + g·(ε_text − ε_neg) per run. This hook rewrites what the UNet is asked and what it answers,
so that for a with-run at step k:

    outside its window [start_step, end_step):  ε_neg := ε_∅   (the empty prompt, as in the without-run)
    inside, plain:                              ε_neg := ε_∅ + m·(ε_n − ε_∅)
    inside, Perp-Neg:                           ε_neg := ε_∅ + m·(ε_n − ε_∅)⊥   (⊥: perpendicular to ε_text − ε_∅)

which makes the guided step ε_∅ + g·(ε_text − ε_∅) − m·(g − 1)·(ε_n − ε_∅): m = 1 is plain CFG with the negative,
m = 0 no negative, m = 2 twice the push away from it. ε_∅ on the with-run's own latents is one extra batch item
(the "three-branch" batch), asked only where it is needed (m ≠ 1, Perp-Neg, outside the window, or the trace's
negative-push map). Perp-Neg here is Armandpour et al.'s (arXiv 2304.04968; ComfyUI's PerpNegGuider) with its
negative scale written as m·(g − 1)/g, so that m keeps one meaning with and without it.

Shared steps: before its window opens, a with-run is the same computation as the without-run of its seed (same
noise, same conditioning), so its items are not sent to the UNet at all and it takes the without-run's answers:
a late negative costs fewer UNet items, not more. Everything stays one UNet call per step.

With the defaults (window 0–1, m = 1, no Perp-Neg, no push map) the hook sends the batch unchanged: the result is
exactly a plain diffusers call's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def window_steps(start: float, end: float, steps: int) -> tuple[int, int]:
    """A fraction window of the sampling steps in whole steps, as A1111's prompt editing counts them:
    `[mustache:0.3]` acts from step int(0.3·steps) (0-based), `[mustache::0.6]` until before int(0.6·steps)."""
    return int(start * steps), int(end * steps)


@dataclass
class Branches:
    """What the UNet answered at one step, per run (index = batch item of the pipeline's latents)."""

    sample: torch.Tensor  # [B, c, h, w] each run's (scaled) model input
    timestep: torch.Tensor | float
    negative: torch.Tensor  # [B, c, h, w] the negative branch each run's guidance used
    text: torch.Tensor  # [B, c, h, w]
    empty: dict[int, torch.Tensor]  # run → ε_∅ on its latents, where it was computed
    active: list[bool]  # whether each run's negative acted at this step


class BranchHook:
    """UNet hooks for one pipeline call whose batch holds `plans` (one per run, the without-runs' included).

    `source[b]` is the without-run of b's seed; `push_runs` get ε_∅ at every step they are sampled apart (the
    trace's negative-push map). Use as a context manager (hooks removed even if sampling raises) and call
    `step_done()` after every denoising step.
    """

    def __init__(
        self,
        unet,
        plans: list[NegativePlan],
        source: list[int],
        push_runs: tuple[int, ...] = (),
        capture: bool = False,
    ):
        self.unet, self.plans, self.source, self.push_runs = unet, plans, source, set(push_runs)
        self.capture = capture  # keep each step's `Branches` (the trace reads them)
        self.step = 0
        self.captured: Branches | None = None
        self._layout = None  # what the pre-hook asked for this step: (negative runs, text runs, empty runs)
        self._latents = self._timestep = None
        self._handles = []

    def __enter__(self) -> BranchHook:
        self._handles.append(self.unet.register_forward_pre_hook(self._before, with_kwargs=True))
        self._handles.append(self.unet.register_forward_hook(self._after, with_kwargs=True))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def step_done(self) -> None:
        self.step += 1

    def distinct(self, run: int) -> bool:
        """Whether a run's latents can differ from its seed's without-run yet (a with-run before its window
        opens is the same computation)."""
        plan = self.plans[run]
        return self.source[run] == run or plan.start_step <= self.step and plan.start_step < plan.end_step

    def layout(self) -> tuple[list[int], list[int], list[int]]:
        """The runs whose negative, text and empty (ε_∅) items the UNet is asked for at this step."""
        runs = [run for run in range(len(self.plans)) if self.distinct(run)]
        negative = [run for run in runs if self.source[run] == run or self.plans[run].active(self.step)]
        empty = [
            run
            for run in runs
            if self.source[run] != run and (self.plans[run].needs_empty(self.step) or run in self.push_runs)
        ]
        return negative, runs, empty

    def rows_of(self, run: int) -> tuple[int | None, int]:
        """Where run `run` is in the UNet batch of the step being computed: (row of its negative-branch item, row
        of its text item). None: it has no negative item of its own (classifier-free guidance is off, or its
        window is closed and its negative branch is ε_∅). Read during the UNet call, e.g. by attention maps."""
        if self._layout is None:  # no CFG: the batch is one text item per run
            return None, run
        negative, text, _ = self._layout
        shared = run if self.distinct(run) else self.source[run]  # a with-run before its window is its source
        negative_row = negative.index(run) if run in negative else None
        return negative_row, len(negative) + text.index(shared)

    # --- hooks -----------------------------------------------------------------------------------------------

    def _before(self, module, args, kwargs):
        count, sample = len(self.plans), args[0]
        self._latents, self._timestep = sample[:count], args[1]  # each run's latents (both halves hold them)
        if sample.shape[0] != 2 * count:  # no classifier-free guidance: nothing to decide
            self._layout = None
            return None
        negative, text, empty = self._layout = self.layout()
        if self._unchanged():
            return None  # plain CFG for every run: the batch goes as the pipeline made it
        # Rows: negative items from the first half, text items from the second; an ε_∅ item takes the run's
        # latents with its seed's without-run negative conditioning (the empty prompt, or SDXL's zeros).
        rows = torch.tensor(negative + [count + run for run in text] + empty, device=sample.device)
        condition_rows = torch.tensor(
            negative + [count + run for run in text] + [self.source[run] for run in empty], device=sample.device
        )
        timestep = args[1]
        if torch.is_tensor(timestep) and timestep.ndim == 1 and timestep.shape[0] == 2 * count:
            timestep = timestep[rows]
        kwargs = dict(kwargs)
        kwargs["encoder_hidden_states"] = kwargs["encoder_hidden_states"][condition_rows]
        added = kwargs.get("added_cond_kwargs")
        if added:
            kwargs["added_cond_kwargs"] = {key: value[condition_rows] for key, value in added.items()}
        return (sample[rows], timestep, *args[2:]), kwargs

    def _after(self, module, args, kwargs, output):
        prediction = output[0] if isinstance(output, tuple) else output.sample
        count = len(self.plans)
        if self._layout is None:  # no CFG: every item is a text item, and the guidance is zero
            self.captured = Branches(self._latents, self._timestep, prediction, prediction, {}, [False] * count)
            return None
        if self._unchanged() and not self.capture:
            return None
        negative, text, empty = self._layout
        answers = iter(prediction)
        by_run = {
            "negative": {run: next(answers) for run in negative},
            "text": {run: next(answers) for run in text},
            "empty": {run: next(answers) for run in empty},
        }
        full_negative, full_text = [], []
        for run in range(count):
            shared = run if self.distinct(run) else self.source[run]  # a run before its window: its source's
            full_text.append(by_run["text"][shared])
            full_negative.append(self._negative_branch(shared, by_run, by_run["text"][shared]))
        active = [self.source[run] != run and self.plans[run].active(self.step) for run in range(count)]
        negative_branch, text_branch = torch.stack(full_negative), torch.stack(full_text)
        self.captured = Branches(self._latents, self._timestep, negative_branch, text_branch, by_run["empty"], active)
        if self._unchanged():
            return None
        result = torch.cat([negative_branch, text_branch])
        return (result,) if isinstance(output, tuple) else type(output)(sample=result)

    def _unchanged(self) -> bool:
        negative, text, empty = self._layout
        return negative == text == list(range(len(self.plans))) and not empty

    def _negative_branch(self, run: int, by_run: dict, text_answer: torch.Tensor) -> torch.Tensor:
        """The negative branch run `run` gets at this step (see the module docstring)."""
        if self.source[run] == run:
            return by_run["negative"][run]
        plan = self.plans[run]
        if not plan.active(self.step):
            return by_run["empty"][run]
        if plan.strength == 1.0 and not plan.perp_neg:  # plain CFG (ε_∅ may be there for the push map only)
            return by_run["negative"][run]
        empty = by_run["empty"][run]
        push = by_run["negative"][run] - empty
        if plan.perp_neg:
            direction = (text_answer - empty).flatten().float()
            along = (push.flatten().float() @ direction) / direction.square().sum().clamp_min(1e-12)
            push = push - along.to(push.dtype) * (text_answer - empty)
        return empty + plan.strength * push
