"""What every hook on a model shares: installed for a `with` block and removed when it ends, and which rows of a
denoiser call hold which run's branch.

`ModelHook` is the base of the branch hook (`guidance.BranchHook`), the attention recorder
(`attention.AttentionRecorder`) and NAG (`nag.NagAttention`, `nag_joint.JointNag`): a subclass says in `install`
what it puts on the model (forward hooks, attention processors, a replaced forward) through the helpers below, and
the base takes all of it off again in reverse order when the block ends, also when sampling raises or `install`
itself fails half-way. The idea is castorini/daam's `ObjectHooker` (hook on enter, unhook on exit, refuse to hook
twice), restated for PyTorch's hook handles and diffusers' attention processors.

`BatchRows` says, for the denoiser call being computed, which row of its batch holds each run's negative item,
text item and ε_∅ item (see guidance.py for when a run has which). The branch hook writes it into a `DenoiserCall`
before every call; hooks that act inside the call (attention maps, NAG) read it there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import torch


class ModelHook:
    """Something put on `model` for the length of a `with` block; `install` says what (subclasses override it)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._undo: list[Callable[[], None]] = []  # how to take off each thing installed, in install order
        self._installed = False

    def __enter__(self):
        if self._installed:
            raise RuntimeError(f"{type(self).__name__} is already installed on this model.")
        self._installed = True
        try:
            self.install()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def install(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        """Take off everything `install` put on, the last first (what was installed later may wrap it)."""
        while self._undo:
            self._undo.pop()()
        self._installed = False

    # --- what a subclass may install -------------------------------------------------------------------------

    def add_pre_hook(self, module: torch.nn.Module, hook: Callable) -> None:
        """`hook(module, args, kwargs)` before each call of `module` (it may return new (args, kwargs))."""
        self._undo.append(module.register_forward_pre_hook(hook, with_kwargs=True).remove)

    def add_post_hook(self, module: torch.nn.Module, hook: Callable) -> None:
        """`hook(module, args, kwargs, output)` after each call of `module` (it may return a new output)."""
        self._undo.append(module.register_forward_hook(hook, with_kwargs=True).remove)

    def replace_processors(self, replace: Callable[[str, object], object]) -> None:
        """Each attention processor of the model becomes `replace(name, processor)` (names as
        `model.attn_processors` gives them); the originals come back on removal."""
        originals = self.model.attn_processors
        self.model.set_attn_processor({name: replace(name, processor) for name, processor in originals.items()})
        self._undo.append(lambda: self.model.set_attn_processor(dict(originals)))

    def replace_forward(self, forward: Callable) -> Callable:
        """The model's `forward` becomes `forward` (its registered hooks still run around it); returns the one it
        replaces, to call from the new one. Removal restores the instance's own forward, else the class's."""
        own = vars(self.model).get("forward")
        previous = self.model.forward
        self.model.forward = forward

        def restore() -> None:
            if own is None:
                del self.model.forward
            else:
                self.model.forward = own

        self._undo.append(restore)
        return previous


class CallHolds(enum.Enum):
    """Which classifier-free guidance branches one denoiser call holds."""

    TEXT_ONLY = "text only"  # no CFG: one text item per run, the batch as the pipeline made it
    BOTH = "both"  # the one batched CFG call: negative items, then text items, then ε_∅ items
    TEXT = "text"  # FLUX.1's true CFG, first call of a step: text items
    NEGATIVE = "negative"  # its second call: negative items, then ε_∅ items


@dataclass(frozen=True)
class BatchRows:
    """Which row of one denoiser call's batch holds which run's item (runs: the pipeline's batch items).

    `negative`, `text` and `empty` are the runs that have an item of that branch at this step, in row order;
    `shares[run]` is the run whose items `run` takes this step (itself, or its seed's run without the negative
    while its own window has not opened: guidance.py)."""

    holds: CallHolds
    negative: tuple[int, ...]
    text: tuple[int, ...]
    empty: tuple[int, ...]
    shares: tuple[int, ...]

    @classmethod
    def text_only(cls, runs: int) -> BatchRows:
        """A call without classifier-free guidance: row r is run r's text item."""
        every = tuple(range(runs))
        return cls(CallHolds.TEXT_ONLY, (), every, (), every)

    def negative_row(self, run: int) -> int | None:
        """The row of the run's own negative-branch item; None where this call holds none (no CFG, the text call
        of split calls, or its negative branch is another item's: ε_∅ outside its window, its text when unguided)."""
        if self.holds not in (CallHolds.BOTH, CallHolds.NEGATIVE) or run not in self.negative:
            return None
        return self.negative.index(run)

    def text_row(self, run: int) -> int | None:
        """The row of the text item the run takes (its own, or the run it shares); None in a negative call."""
        if self.holds is CallHolds.NEGATIVE:
            return None
        before = len(self.negative) if self.holds is CallHolds.BOTH else 0
        return before + self.text.index(self.shares[run])


@dataclass
class DenoiserCall:
    """The denoiser call being computed: its 0-based step and what its rows hold. Written by the branch hook before
    each call (`rows` is None before the first), read by the hooks acting inside it."""

    step: int = 0
    rows: BatchRows | None = None
