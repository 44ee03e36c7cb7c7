"""Faults at engine level: a model that fails to load, a NaN-producing run and an exception inside the pipeline
each end with a clear error and leave the pipeline exactly as usable as before (no hook, lock or scheduler state
left behind: the next run gives bit-identical images to a run before the fault)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from negprompt_demo.models.loading import ModelLoadError, load_pipeline
from negprompt_demo.sampling.engine import GenerationCancelled, NonFiniteError, compare, pipeline_lock
from negprompt_demo.settings import CompareSettings

SETTINGS = CompareSettings("portrait photo of a man", "mustache", seed=99, steps=5, push_map=True)


def images(comparison) -> np.ndarray:
    return np.stack([np.asarray(comparison.without_negative), np.asarray(comparison.with_negative)])


def assert_clean(pipe) -> None:
    """Nothing a run installs may outlive it."""
    assert not pipe.unet._forward_hooks and not pipe.unet._forward_pre_hooks
    assert not pipe_lock_held(pipe)


def pipe_lock_held(pipe) -> bool:
    return pipeline_lock(pipe).locked()


@pytest.fixture(scope="module")
def reference(sd_pipe) -> np.ndarray:
    return images(compare(sd_pipe, SETTINGS))


def fault_at_unet_call(pipe, call: int, fault):
    """A forward hook on the UNet that returns fault(output) at the `call`-th call (1-based), output otherwise."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        return fault(output) if len(calls) == call else None

    return pipe.unet.register_forward_hook(hook)


def test_exception_inside_the_pipeline_leaves_it_usable(sd_pipe, reference):
    def explode(output):
        raise RuntimeError("simulated CUDA error: device-side assert")

    handle = fault_at_unet_call(sd_pipe, 3, explode)
    try:
        with pytest.raises(RuntimeError, match="simulated CUDA error"):
            compare(sd_pipe, SETTINGS)
    finally:
        handle.remove()
    assert_clean(sd_pipe)
    assert np.array_equal(images(compare(sd_pipe, SETTINGS)), reference)


def test_exception_in_the_callers_step_callback_leaves_the_pipeline_usable(sd_pipe, reference):
    def broken_consumer(done, total, record):
        if done == 2:
            raise ValueError("the page went away")

    with pytest.raises(ValueError, match="page went away"):
        compare(sd_pipe, SETTINGS, on_step=broken_consumer)
    assert_clean(sd_pipe)
    assert np.array_equal(images(compare(sd_pipe, SETTINGS)), reference)


def test_nan_in_the_unet_output_names_the_step_and_the_pipeline_recovers(sd_pipe, reference):
    handle = fault_at_unet_call(sd_pipe, 4, lambda output: (torch.full_like(output[0], float("nan")),))
    try:
        with pytest.raises(NonFiniteError, match="step 4 of 5"):
            compare(sd_pipe, SETTINGS)
    finally:
        handle.remove()
    assert_clean(sd_pipe)
    assert np.array_equal(images(compare(sd_pipe, SETTINGS)), reference)


def test_nan_from_the_vae_is_caught_before_it_becomes_a_black_image(sd_pipe, reference):
    def nan_decoder(module, args, output):
        return torch.full_like(output, float("nan"))

    handle = sd_pipe.vae.decoder.register_forward_hook(nan_decoder)
    try:
        with pytest.raises(NonFiniteError, match="decoded image contains NaN/inf"):
            compare(sd_pipe, SETTINGS, trace=False)
    finally:
        handle.remove()
    assert_clean(sd_pipe)
    assert np.array_equal(images(compare(sd_pipe, SETTINGS)), reference)


def test_cancel_then_fault_then_normal_run_in_a_row(sd_pipe, reference):
    """Faults of different kinds back to back, as a busy public demo sees them."""
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationCancelled, match="after step 1 of 5"):
        compare(sd_pipe, SETTINGS, stop=stop)
    handle = fault_at_unet_call(sd_pipe, 1, lambda output: (output[0] * float("inf"),))
    try:
        with pytest.raises(NonFiniteError):
            compare(sd_pipe, SETTINGS)
    finally:
        handle.remove()
    assert_clean(sd_pipe)
    assert np.array_equal(images(compare(sd_pipe, SETTINGS)), reference)


def corrupt_copy(folder, destination):
    """The tiny model with its UNet weights cut short, as an interrupted download leaves them."""
    shutil.copytree(folder, destination)
    weights = destination / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return destination


def test_model_that_fails_to_load_is_a_clear_error_and_loading_still_works(tiny_sd_folder, tmp_path):
    broken = corrupt_copy(tiny_sd_folder, tmp_path / "broken")
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(str(broken))
    message = str(error.value)
    assert message.startswith(f"Could not load '{broken}'") and "Unable to load weights" in message
    assert "pickle" not in message, "a damaged safetensors file is not a pickle-only model"
    with pytest.raises(ModelLoadError):  # a failed load is not cached: asking again fails the same way
        load_pipeline(str(broken))
    pipe = load_pipeline(str(tiny_sd_folder))
    result = compare(pipe, SETTINGS.replace(steps=2))
    assert result.without_negative.size == (32, 32)
