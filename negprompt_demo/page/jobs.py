"""One job's output files: every picture the page or the API returns is a PNG written for that one job (mode 0600),
and the step view's pictures, written once per step of a stored trace.

Gradio caches a returned PIL image under the hash of its bytes and rewrites that file in place, so two jobs with
equal pictures (two users running the same example) would truncate a file another client is downloading; a file
written per job is copied into Gradio's cache under a temporary name and renamed instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


class JobFiles:
    """One job's folder of PNG files, under this process's private output folder."""

    def __init__(self, root: Path):
        self.folder = Path(tempfile.mkdtemp(prefix="job-", dir=root))
        self.count = 0

    def png(self, picture: Image.Image | np.ndarray | None, name: str) -> str | None:
        """Write a picture (PIL or [H, W, 3] uint8) as a new PNG of this job; None stays None."""
        if picture is None:
            return None
        if isinstance(picture, np.ndarray):
            picture = Image.fromarray(picture)
        self.count += 1
        return write_png(picture, self.folder / f"{self.count:04d}-{name}.png")


class StepFiles:
    """The pictures of one step (and chosen word) of a stored trace, in that trace's folder: moving the step slider
    back to a step it showed before writes nothing new (and Gradio, which caches a file by its contents, copies
    nothing new either)."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = folder, key
        self.folder.mkdir(mode=0o700, exist_ok=True)

    def png(self, picture: Image.Image | np.ndarray | None, name: str) -> str | None:
        if picture is None:
            return None
        path = self.folder / f"{self.key}-{name}.png"
        if path.is_file():
            return str(path)
        if isinstance(picture, np.ndarray):
            picture = Image.fromarray(picture)
        partial = path.with_name(f".{path.name}.{os.getpid()}")  # another move may ask for the same file at once
        write_png(picture, partial)
        os.replace(partial, path)
        return str(path)


def write_png(picture: Image.Image, path: Path) -> str:
    """Save a PNG only this user can read: results are a visitor's own, and the temp folder is shared."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        picture.save(file, format="PNG")
    return str(path)
