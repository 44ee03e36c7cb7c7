"""A `GuidanceTrace` saved to one .npz file and read back, so the page's step scrubber works from a file.

The app keeps no trace in server memory between events: a comparison writes its trace here, the page holds the
file (a hidden `gr.File`), and every move of the step slider reads it back. That also lets Gradio's example cache
store a finished comparison, step view included, like any other output file.

Arrays only (`allow_pickle=False` on reading), so a file handed back by a browser cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from negprompt_demo.trace import GuidanceTrace, StepRecord

FORMAT_VERSION = 1


def save_trace(trace: GuidanceTrace, path: Path, negative: str = "") -> Path:
    """Write every step's maps, x0 latents, previews and scalars; `negative` is kept for the view's labels."""
    steps = trace.steps
    header = {
        "format": FORMAT_VERSION,
        "guidance_scale": trace.guidance_scale,
        "cfg_active": trace.cfg_active,
        "prediction_type": trace.prediction_type,
        "negative": negative,
        "has_push": bool(steps) and steps[0].push_map is not None,
    }
    arrays = {
        "header": np.array(json.dumps(header)),
        "index": np.array([step.index for step in steps], dtype=np.int32),
        "timestep": np.array([step.timestep for step in steps], dtype=np.float64),
        "sigma": np.array([step.sigma for step in steps], dtype=np.float64),
        "guidance_mean": np.array([step.guidance_mean for step in steps], dtype=np.float64).reshape(-1, 2),
        "guidance_cosine": np.array([step.guidance_cosine for step in steps], dtype=np.float64),
        "divergence": np.array([step.divergence for step in steps], dtype=np.float64),
    }
    if steps:
        arrays["guidance_map"] = np.stack([step.guidance_map.numpy() for step in steps])
        arrays["x0_latents"] = np.stack([step.x0_latents.numpy() for step in steps])
        arrays["previews"] = np.stack([step.previews for step in steps])
        if header["has_push"]:
            arrays["push_map"] = np.stack([step.push_map.numpy() for step in steps])
            arrays["push_mean"] = np.array([step.push_mean for step in steps], dtype=np.float64)
    path = Path(path)
    with open(path, "wb") as file:
        np.savez_compressed(file, **arrays)
    return path


def load_trace(path: str | Path) -> tuple[GuidanceTrace, str]:
    """Read a file written by `save_trace`; returns the trace and the negative prompt it was made with."""
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        if header.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a trace file of format {FORMAT_VERSION}.")
        trace = GuidanceTrace(header["guidance_scale"], header["cfg_active"], header["prediction_type"])
        for i in range(len(data["index"])):
            record = StepRecord(
                index=int(data["index"][i]),
                timestep=float(data["timestep"][i]),
                sigma=float(data["sigma"][i]),
                guidance_map=torch.from_numpy(data["guidance_map"][i]),
                guidance_mean=(float(data["guidance_mean"][i, 0]), float(data["guidance_mean"][i, 1])),
                guidance_cosine=float(data["guidance_cosine"][i]),
                divergence=float(data["divergence"][i]),
                x0_latents=torch.from_numpy(data["x0_latents"][i]),
                previews=data["previews"][i],
            )
            if header["has_push"]:
                record.push_map = torch.from_numpy(data["push_map"][i])
                record.push_mean = float(data["push_mean"][i])
            trace.steps.append(record)
    return trace, header["negative"]
