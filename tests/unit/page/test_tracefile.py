"""Stored runs (page/tracefile.py): a trace saved once and read back one step at a time by its owner only, the run
folder capped oldest first, and a private folder whose cleanup follows no link."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from negprompt_demo.models.previews import fill_previews
from negprompt_demo.page.tracefile import TraceNotFound, TraceStore, private_folder, remove_old_folders, trim_folders
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
        assert np.array_equal(loaded.guidance_map.numpy(), original.guidance_map.numpy())
        assert np.array_equal(loaded.push_map.numpy(), original.push_map.numpy())
        assert all(step.previews is None for i, step in enumerate(trace.steps) if i != index)  # read one step only
    with pytest.raises(TraceNotFound):
        store.load(trace_id, 0, owner="someone else")


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
