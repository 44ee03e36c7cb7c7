"""The hook base (hooks.py): what a hook puts on a model comes off when its block ends, also on error or when
installing fails half-way; and the rows the branch hook announces for each denoiser call are where the runs'
items really are, for the one batched CFG call and for FLUX.1's split calls."""

from __future__ import annotations

import pytest
import torch

from negprompt_demo.sampling.guidance import NO_NEGATIVE, BranchHook, NegativePlan
from negprompt_demo.sampling.hooks import BatchRows, CallHolds, DenoiserCall, ModelHook

NEGATIVE_TAG, TEXT_TAG = (10.0, 11.0), (20.0, 21.0)  # each run's conditioning, by run: without-run 0, with-run 1


class Everything(ModelHook):
    """Installs one of each kind, then optionally fails."""

    def __init__(self, model, fail: bool = False):
        super().__init__(model)
        self.fail = fail

    def install(self) -> None:
        self.add_pre_hook(self.model, lambda module, args, kwargs: None)
        self.add_post_hook(self.model, lambda module, args, kwargs, output: None)
        self.replace_processors(lambda name, processor: object.__new__(type(processor)))
        self.replace_forward(lambda *args, **kwargs: None)
        if self.fail:
            raise RuntimeError("install failed")


class ForwardOnly(ModelHook):
    """Replaces the forward of a model that has no attention processors."""

    def install(self) -> None:
        self.replace_forward(lambda *args, **kwargs: None)


def model_state(model) -> tuple:
    return (
        dict(model.attn_processors),
        "forward" in vars(model),
        len(model._forward_pre_hooks),
        len(model._forward_hooks),
    )


def test_everything_installed_comes_off_when_the_block_raises(sd_pipe):
    unet = sd_pipe.unet
    before = model_state(unet)
    with pytest.raises(ValueError), Everything(unet):
        assert model_state(unet) != before
        raise ValueError("sampling failed")
    assert model_state(unet) == before  # the very same processor objects, the class's forward, no hooks


def test_an_install_that_fails_half_way_takes_off_what_it_put_on(sd_pipe):
    unet = sd_pipe.unet
    before = model_state(unet)
    with pytest.raises(RuntimeError, match="install failed"), Everything(unet, fail=True):
        pass
    assert model_state(unet) == before


def test_a_hook_is_installed_once_at_a_time():
    hook = ForwardOnly(torch.nn.Linear(2, 2))
    with hook:
        with pytest.raises(RuntimeError, match="already installed"), hook:
            pass
    with hook:  # after its block it may be installed again
        pass


def test_an_instance_forward_is_put_back():
    model = torch.nn.Linear(2, 2)
    own = model.forward
    model.forward = own  # an instance's own forward, as another tool may have set
    with ForwardOnly(model):
        assert model.forward is not own
    assert vars(model)["forward"] is own


class TaggedDenoiser(torch.nn.Module):
    """A stand-in denoiser that, inside each call, checks the branch hook's rows against what the rows hold:
    every latent is filled with its run's number, every conditioning with its run's and branch's tag."""

    def __init__(self):
        super().__init__()
        self.call: DenoiserCall | None = None  # the branch hook's
        self.seen = []

    def forward(self, hidden_states, timestep, encoder_hidden_states):
        rows, latents, tags = self.call.rows, hidden_states[:, 0, 0].tolist(), encoder_hidden_states[:, 0].tolist()
        for run in (0, 1):
            negative, text = rows.negative_row(run), rows.text_row(run)
            if negative is not None:
                assert (latents[negative], tags[negative]) == (run, NEGATIVE_TAG[run])
            if text is not None:
                shared = rows.shares[run]
                assert (latents[text], tags[text]) == (shared, TEXT_TAG[shared])
        self.seen.append((self.call.step, rows.holds, rows.negative_row(1), rows.text_row(1)))
        return (hidden_states * 2,)


def sample(split_calls: bool, steps: int = 5) -> list[tuple]:
    """A with-run whose window is steps 2–3 (shared with the without-run before, ε_∅ after), through the hook."""
    plans, source = [NO_NEGATIVE, NegativePlan(2, 4)], [0, 0]
    denoiser = TaggedDenoiser()
    hook = BranchHook(denoiser, plans, source, push_runs=(1,), split_calls=split_calls)
    denoiser.call = hook.call
    latents = torch.arange(2.0)[:, None, None].expand(2, 3, 4)
    negatives, texts = torch.tensor(NEGATIVE_TAG)[:, None], torch.tensor(TEXT_TAG)[:, None]
    with hook:
        for _ in range(steps):
            if split_calls:
                denoiser(latents, torch.ones(2), encoder_hidden_states=texts.expand(2, 5))
                denoiser(latents, torch.ones(2), encoder_hidden_states=negatives.expand(2, 5))
            else:
                conditioning = torch.cat([negatives, texts]).expand(4, 5)
                denoiser(torch.cat([latents, latents]), torch.ones(4), encoder_hidden_states=conditioning)
            hook.step_done()
    return denoiser.seen


def test_rows_of_the_one_batched_call():
    """[negative items, text items, ε_∅ items]: before its window the with-run takes the without-run's text item;
    inside it has a negative item of its own; after it its negative branch is its ε_∅ item."""
    both = CallHolds.BOTH
    assert sample(split_calls=False) == [
        (0, both, None, 1),  # rows: negative 0, text 0
        (1, both, None, 1),
        (2, both, 1, 3),  # negative 0, negative 1, text 0, text 1, ε_∅ 1 (the push map)
        (3, both, 1, 3),
        (4, both, None, 2),  # negative 0, text 0, text 1, ε_∅ 1
    ]


def test_rows_of_flux_split_calls():
    """The text call holds text items only, the negative call negative and ε_∅ items only."""
    text, negative = CallHolds.TEXT, CallHolds.NEGATIVE
    assert sample(split_calls=True) == [
        (0, text, None, 0),
        (0, negative, None, None),
        (1, text, None, 0),
        (1, negative, None, None),
        (2, text, None, 1),
        (2, negative, 1, None),
        (3, text, None, 1),
        (3, negative, 1, None),
        (4, text, None, 1),
        (4, negative, None, None),
    ]


def test_a_call_without_guidance_holds_one_text_item_per_run():
    rows = BatchRows.text_only(3)
    assert [rows.text_row(run) for run in range(3)] == [0, 1, 2]
    assert [rows.negative_row(run) for run in range(3)] == [None, None, None]
