"""One job's output files: every picture the page or the API returns is a PNG written for that one job.

Gradio caches a returned PIL image under the hash of its bytes and rewrites that file in place, so two jobs with
equal pictures (two users running the same example) would truncate a file another client is downloading; a file
written per job is copied into Gradio's cache under a temporary name and renamed instead.
"""

from __future__ import annotations

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
        path = self.folder / f"{self.count:04d}-{name}.png"
        picture.save(path, format="PNG")
        return str(path)
