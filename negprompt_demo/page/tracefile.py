"""The stored runs that the page's step scrubber reads: written by the server, found by an id, read one step at a time.

A finished comparison's trace is written to a folder of its own: the per-step scalars as JSON, each per-step
array (previews, guidance maps, push maps, attention maps) as an uncompressed `.npy` file and the curves as a
picture. Moving the
slider reads the scalars and memory-maps the arrays to copy out the one step shown, and marks the step on the
stored curves, so a scrub costs the same for a 150-step SDXL run as for a 5-step one and no trace is kept in
server memory between events.

The page holds only the trace's id: a random 128-bit name the server chose. A client can neither name a file nor
hand back one of its own, and a run's trace answers only the browser session that made it (examples' traces,
stored with the example cache, answer everyone).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from negprompt_demo.runner import RUNS, AttentionPlan, GuidanceTrace, StepRecord
from negprompt_demo.views.visualize import CurvesPicture

FORMAT_VERSION = 2
TRACE_ID = re.compile(r"^(run|example)-([0-9a-f]{32})$")
RUN_MAX_AGE_S = 3600  # a run's files are kept this long (Gradio has copied what it serves into its cache by then)
RUN_FOLDER_CAP = 1024 * 2**20  # bytes: this process's runs, traces and Gradio's cache together, oldest go first
ARRAYS = ("previews", "guidance_map", "push_map", "attention_maps", "nag_map")


class TraceKind(Enum):
    """Whose a stored trace is, which says where it lives and who may read it (its id starts with the value)."""

    RUN = "run"  # a visitor's run: in this process's private folder, read by its session only, gone after an hour
    EXAMPLE = "example"  # an example's: beside Gradio's example cache, read by everyone, kept with that cache


class TraceNotFound(LookupError):
    """The id names no trace this server keeps for this session."""


def private_folder(prefix: str = "negprompt-demo-") -> Path:
    """A fresh folder only this user can read (mode 0700), so no other local user can plant links in it."""
    return Path(tempfile.mkdtemp(prefix=prefix))


class TraceStore:
    """Traces of this process's runs (in a private temporary folder) and of the examples (beside their cache)."""

    def __init__(self, runs_root: Path, examples_root: Path | None = None):
        self.roots = {
            TraceKind.RUN: Path(runs_root),
            TraceKind.EXAMPLE: Path(examples_root) if examples_root else None,
        }

    def save(
        self, trace: GuidanceTrace, curves: CurvesPicture, kind: TraceKind = TraceKind.RUN, owner: str | None = None
    ) -> str:
        """Write the trace and its curves picture and return its id; `owner` (a browser session) is the only one
        that may read it back."""
        root = self.roots[kind]
        if root is None:
            raise ValueError(f"this store keeps no {kind.value} traces")
        root.mkdir(parents=True, exist_ok=True)
        if kind is TraceKind.RUN:
            remove_old_folders(root, RUN_MAX_AGE_S)
        name = secrets.token_hex(16)
        folder = root / name
        folder.mkdir(mode=0o700)
        header = {
            "format": FORMAT_VERSION,
            "owner": owner,
            "guidance_scale": trace.guidance_scale,
            "cfg_active": trace.cfg_active,
            "prediction_type": trace.prediction_type,
            "negative_strength": trace.negative_strength,
            "perp_neg": trace.perp_neg,
            "negative_mode": trace.negative_mode,
            "steps": [scalar_fields(step) for step in trace.steps],
            "curves": {"step_x": curves.step_x, "spans": curves.spans},
            "attention": trace.attention.to_json() if trace.attention is not None else None,
        }
        (folder / "trace.json").write_text(json.dumps(header), encoding="utf-8")
        curves.image.save(folder / "curves.png", format="PNG")
        if trace.steps:
            np.save(folder / "previews.npy", np.stack([stored_previews(step) for step in trace.steps]))
            np.save(folder / "guidance_map.npy", np.stack([step.guidance_map.numpy() for step in trace.steps]))
            if trace.steps[0].push_map is not None:
                np.save(folder / "push_map.npy", np.stack([step.push_map.numpy() for step in trace.steps]))
            if any(step.nag_map is not None for step in trace.steps):  # zeros where NAG did not act (its window)
                shape = next(step.nag_map.shape for step in trace.steps if step.nag_map is not None)
                nag = [
                    np.zeros(shape, np.float16) if step.nag_map is None else step.nag_map.numpy()
                    for step in trace.steps
                ]
                np.save(folder / "nag_map.npy", np.stack(nag))
            kept = [step.attention_maps.numpy() for step in trace.steps if step.attention_maps is not None]
            if trace.attention is not None and kept:  # [kept steps, words, h, w]
                np.save(folder / "attention_maps.npy", np.stack(kept))
        return f"{kind.value}-{name}"

    def load(self, trace_id: str, index: int, owner: str | None = None) -> tuple[GuidanceTrace, CurvesPicture]:
        """Every step's scalars and the arrays of step `index` only (clamped to the run; other steps carry none;
        its attention maps are those of the last step at or before it that kept them, on that step's record),
        with the run's curves picture."""
        folder, header = self._open(trace_id, owner)
        trace = GuidanceTrace(header["guidance_scale"], header["cfg_active"], header["prediction_type"])
        trace.negative_strength, trace.perp_neg = header.get("negative_strength", 1.0), header.get("perp_neg", False)
        trace.negative_mode = header.get("negative_mode", "cfg")
        if header.get("attention"):
            trace.attention = AttentionPlan.from_json(header["attention"])
        trace.steps = [record_from_scalars(fields) for fields in header["steps"]]
        if trace.steps:
            index = min(max(int(index), 0), len(trace.steps) - 1)
            step = trace.steps[index]
            step.previews, step.branch_previews = split_previews(
                one_step(folder / "previews.npy", index, len(trace.steps))
            )
            step.guidance_map = torch.from_numpy(one_step(folder / "guidance_map.npy", index, len(trace.steps)))
            if step.push_mean is not None:
                step.push_map = torch.from_numpy(one_step(folder / "push_map.npy", index, len(trace.steps)))
            if step.nag_mean is not None:
                step.nag_map = torch.from_numpy(one_step(folder / "nag_map.npy", index, len(trace.steps)))
            kept = trace.attention.recorded_steps if trace.attention is not None else []
            row = bisect.bisect_right(kept, index) - 1
            if row >= 0:
                maps = one_step(folder / "attention_maps.npy", row, len(kept))
                trace.steps[kept[row]].attention_maps = torch.from_numpy(maps)
        with Image.open(folder / "curves.png") as picture:
            curves = CurvesPicture(picture.convert("RGB"), header["curves"]["step_x"], header["curves"]["spans"])
        return trace, curves

    def word_maps(self, trace_id: str, word: int, owner: str | None = None) -> np.ndarray:
        """One word's attention map at every kept step, [kept steps, h, w] float16 (the step view's strip)."""
        folder, header = self._open(trace_id, owner)
        plan = AttentionPlan.from_json(header["attention"]) if header.get("attention") else None
        if plan is None or not 0 <= word < len(plan.words):
            raise TraceNotFound(trace_id)
        array = np.load(folder / "attention_maps.npy", mmap_mode="r", allow_pickle=False)
        if array.shape[0] != len(plan.recorded_steps):
            raise TraceNotFound(trace_id)
        return np.array(array[:, word])

    def picture_folder(self, trace_id: str, owner: str | None = None) -> Path:
        """Where the step view's pictures of a trace this session may read are kept (`jobs.StepFiles`)."""
        folder, _ = self._open(trace_id, owner)
        return folder / "pictures"

    def _open(self, trace_id: str, owner: str | None) -> tuple[Path, dict]:
        """The folder and header of a trace this session may read."""
        match = TRACE_ID.match(trace_id) if isinstance(trace_id, str) else None
        root = self.roots[TraceKind(match.group(1))] if match else None
        if root is None:
            raise TraceNotFound(trace_id)
        folder = root / match.group(2)
        try:
            header = json.loads((folder / "trace.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise TraceNotFound(trace_id) from None
        if header.get("format") != FORMAT_VERSION or header.get("owner") not in (None, owner):
            raise TraceNotFound(trace_id)
        return folder, header


def one_step(path: Path, index: int, steps: int) -> np.ndarray:
    """Row `index` of a stored array, copied out of a memory map (the rest of the file is never read)."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.shape[0] != steps:
        raise TraceNotFound(str(path))
    return np.array(array[index])


def stored_previews(step: StepRecord) -> np.ndarray:
    """A step's pictures as previews.npy keeps them: each run's (RUNS), then each branch's alone (BRANCHES) where
    they were recorded."""
    if step.branch_previews is None:
        return step.previews
    return np.concatenate([step.previews, step.branch_previews])


def split_previews(pictures: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """`stored_previews` read back: (each run's, each branch's or None)."""
    return pictures[: len(RUNS)], pictures[len(RUNS) :] if len(pictures) > len(RUNS) else None


def scalar_fields(step: StepRecord) -> dict:
    return {
        "index": step.index,
        "timestep": step.timestep,
        "sigma": step.sigma,
        "guidance_mean": list(step.guidance_mean),
        "guidance_peak": step.guidance_peak,
        "guidance_cosine": step.guidance_cosine,
        "divergence": step.divergence,
        "negative_active": step.negative_active,
        "push_mean": step.push_mean,
        "push_peak": step.push_peak,
        "nag_mean": step.nag_mean,
        "nag_peak": step.nag_peak,
        "texts": step.texts,
    }


def record_from_scalars(fields: dict) -> StepRecord:
    return StepRecord(
        index=int(fields["index"]),
        timestep=float(fields["timestep"]),
        sigma=float(fields["sigma"]),
        guidance_map=None,
        guidance_mean=tuple(fields["guidance_mean"]),
        guidance_peak=float(fields["guidance_peak"]),
        guidance_cosine=float(fields["guidance_cosine"]),
        divergence=float(fields["divergence"]),
        x0_latents=None,
        negative_active=bool(fields["negative_active"]),
        push_mean=fields["push_mean"],
        push_peak=fields["push_peak"],
        nag_mean=fields.get("nag_mean"),
        nag_peak=fields.get("nag_peak"),
        texts=fields.get("texts"),
    )


def remove_old_folders(root: Path, max_age_s: float) -> None:
    """Delete this root's sub-folders older than `max_age_s`; links are never followed (nor deleted through)."""
    for entry in root.iterdir():
        try:
            if entry.is_symlink() or not entry.is_dir():
                continue
            if time.time() - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def trim_folders(roots: list[Path], cap: int = RUN_FOLDER_CAP) -> int:
    """Delete the oldest sub-folders of `roots` (one job, one trace, one Gradio cache entry each) until all of them
    together hold at most `cap` bytes; links are never followed. Returns the bytes kept."""
    entries = []
    for root in roots:
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            try:
                if entry.is_dir() and not entry.is_symlink():
                    entries.append((entry.stat().st_mtime, folder_bytes(entry), entry))
            except OSError:
                pass
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries, key=lambda item: item[0]):
        if total <= cap:
            break
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
    return total


def folder_bytes(folder: Path) -> int:
    """The size of the files under a folder (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
