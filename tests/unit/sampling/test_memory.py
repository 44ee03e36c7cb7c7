"""50 consecutive comparisons in one process leak nothing: no hooks, traces, tensors or worker threads are left
behind, and resident memory grows < 5 % after the first few (the figure for the embedded model is in
docs/BENCHMARKS.md, from `python -m benchmarks.bench_memory`)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref

import pytest
import torch

from negprompt_demo.runner import CompareRequest, Done, astream
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings

pytestmark = pytest.mark.slow  # 50 comparisons per test

RUNS, SETTLE = 50, 5


def rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def settings_for(run: int) -> CompareSettings:
    """Vary what a run keeps (push map, previews, sizes) so every code path's leftovers would pile up."""
    return CompareSettings(
        "portrait photo of a man", f"mustache {run}", seed=run, steps=3, push_map=run % 2 == 0, width=24 + 8 * (run % 2)
    )


def test_fifty_engine_comparisons_leak_nothing(sd_pipe):
    traces = []
    for run in range(RUNS):
        if run == SETTLE:
            tensors_after_settle, rss_after_settle = live_tensors(), rss_bytes()
        on_step = (lambda done, total, record: None) if run % 3 == 0 else None
        result = compare(sd_pipe, settings_for(run), on_step=on_step)
        traces.append(weakref.ref(result.trace))
        del result
    tensors_at_end, rss_at_end = live_tensors(), rss_bytes()

    assert not sd_pipe.unet._forward_hooks and not sd_pipe.unet._forward_pre_hooks
    assert all(trace() is None for trace in traces), "a trace outlived its comparison"
    assert tensors_at_end <= tensors_after_settle, f"live tensors grew {tensors_after_settle} → {tensors_at_end}"
    growth = rss_at_end / rss_after_settle - 1
    assert growth < 0.05, f"RSS grew {100 * growth:.1f} % over {RUNS - SETTLE} comparisons"


def test_fifty_app_comparisons_leave_no_threads_or_tensors(tiny_sd_folder):
    """The app's path: each comparison runs on its own worker thread, which must end with it."""

    async def one(run: int) -> None:
        async for event in astream(str(tiny_sd_folder), CompareRequest(settings_for(run))):
            if isinstance(event, Done):
                assert event.comparison.settings.seed == run

    threads_before = threading.active_count()
    for run in range(RUNS):
        if run == SETTLE:
            tensors_after_settle, rss_after_settle = live_tensors(), rss_bytes()
        asyncio.run(one(run))
    tensors_at_end, rss_at_end = live_tensors(), rss_bytes()

    assert threading.active_count() <= threads_before, "worker threads were left running"
    assert tensors_at_end <= tensors_after_settle, f"live tensors grew {tensors_after_settle} → {tensors_at_end}"
    growth = rss_at_end / rss_after_settle - 1
    assert growth < 0.05, f"RSS grew {100 * growth:.1f} % over {RUNS - SETTLE} comparisons"
