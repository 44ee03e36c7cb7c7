"""Stored runs (page/tracefile.py): a trace saved once and read back one step at a time by its owner only (examples'
by everyone), an id that names no file, runs removed after an age limit, the run folder capped oldest first, and a
private folder whose cleanup follows no link."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from negprompt_demo.models.previews import fill_previews
from negprompt_demo.page.tracefile import (
    TraceKind,
    TraceNotFound,
    TraceStore,
    private_folder,
    remove_old_folders,
    trim_folders,
)
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views.visualize import curves_picture


def test_stored_trace_reads_one_step_and_every_scalar(sd_pipe, tmp_path):
    comparison = compare(sd_pipe, CompareSettings("a cat", "dog", seed=1, steps=3, push_map=True))
    fill_previews(sd_pipe, comparison.trace.steps)
    store = TraceStore(tmp_path / "runs")
    curves = curves_picture(comparison.trace)
    trace_id = store.save(comparison.trace, curves, owner="me")
    for index, original in enumerate(comparison.trace.steps):
        trace, stored_curves = store.load(trace_id, index, owner="me")
        assert np.array_equal(np.asarray(stored_curves.image), np.asarray(curves.image))
        assert trace.to_json() == comparison.trace.to_json()  # every step's scalars, for the curves
        loaded = trace.steps[index]
        assert np.array_equal(loaded.previews, original.previews)
        assert np.array_equal(loaded.branch_previews, original.branch_previews)
        assert np.array_equal(loaded.guidance_map.numpy(), original.guidance_map.numpy())
        assert np.array_equal(loaded.push_map.numpy(), original.push_map.numpy())
        assert all(step.previews is None for i, step in enumerate(trace.steps) if i != index)  # read one step only
    with pytest.raises(TraceNotFound):
        store.load(trace_id, 0, owner="someone else")


@pytest.fixture(scope="module")
def two_steps(sd_pipe):
    """A two-step comparison's trace and curves, with every step's x0 pictures."""
    comparison = compare(sd_pipe, CompareSettings("a cat", "dog", seed=2, steps=2))
    fill_previews(sd_pipe, comparison.trace.steps)
    return comparison.trace, curves_picture(comparison.trace)


@pytest.mark.parametrize(
    "trace_id", ["../runs", "run-" + "0" * 32, "run-ABC", "attack-" + "0" * 32, None, ["run-0"], 7]
)
def test_an_id_that_is_not_a_stored_trace_names_no_file(two_steps, tmp_path, trace_id):
    store = TraceStore(tmp_path / "runs", tmp_path / "examples")
    store.save(*two_steps, owner="me")
    with pytest.raises(TraceNotFound):
        store.load(trace_id, 0, owner="me")


def test_an_examples_trace_answers_every_session_and_a_step_past_the_end_reads_the_last(two_steps, tmp_path):
    trace, curves = two_steps
    store = TraceStore(tmp_path / "runs", tmp_path / "examples")
    trace_id = store.save(trace, curves, kind=TraceKind.EXAMPLE)
    assert trace_id.startswith("example-") and (tmp_path / "examples" / trace_id.removeprefix("example-")).is_dir()
    for owner in ("session-a", "session-b", None):
        loaded, _ = store.load(trace_id, 99, owner=owner)
        assert np.array_equal(loaded.steps[-1].previews, trace.steps[-1].previews) and loaded.steps[0].previews is None
    with pytest.raises(ValueError, match="keeps no example traces"):
        TraceStore(tmp_path / "runs").save(trace, curves, kind=TraceKind.EXAMPLE)


def test_saving_a_run_removes_runs_older_than_the_age_limit(two_steps, tmp_path):
    runs = tmp_path / "runs"
    old, recent = runs / ("a" * 32), runs / ("b" * 32)
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "trace.json").write_text("{}")
    os.utime(old, (0, 0))  # written at the epoch: far past RUN_MAX_AGE_S
    trace_id = TraceStore(runs).save(*two_steps)
    assert not old.exists() and recent.exists() and (runs / trace_id.removeprefix("run-")).is_dir()


def test_the_run_folder_is_trimmed_oldest_first(tmp_path):
    jobs, cache = tmp_path / "jobs", tmp_path / "gradio"
    for number, root in enumerate([jobs, cache, jobs, cache]):
        folder = root / f"entry{number}"
        folder.mkdir(parents=True)
        (folder / "data").write_bytes(b"x" * 1000)
        os.utime(folder, (number * 100, number * 100))
    assert trim_folders([jobs, cache, tmp_path / "absent"], cap=2500) == 2000
    assert sorted(p.name for root in (jobs, cache) for p in root.iterdir()) == ["entry2", "entry3"]


def test_run_files_live_in_a_private_folder_and_cleanup_follows_no_link(tmp_path):
    """Another local user could plant a link at a fixed name in the shared temp folder; the app's folder is new
    per process, mode 0700, and the cleanup of old runs neither follows nor deletes through a link."""
    private = private_folder()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    victim = tmp_path / "victim"
    (victim / "old").mkdir(parents=True)
    (victim / "old" / "precious.txt").write_text("keep")
    os.utime(victim / "old", (0, 0))
    (private / "planted").symlink_to(victim)
    (private / "old-run").mkdir()
    os.utime(private / "old-run", (0, 0))
    remove_old_folders(private, max_age_s=60)
    assert (victim / "old" / "precious.txt").read_text() == "keep" and (private / "planted").is_symlink()
    assert not (private / "old-run").exists()
