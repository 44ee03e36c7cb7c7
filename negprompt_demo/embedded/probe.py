"""Attribute probe: a tiny CNN that says which attributes a 64x64 portrait shows, and whether it is a face.

Only inference lives here; how the probe was trained and how accurate it is (`probe-train`,
`probe-accuracy`) is in `negprompt_demo.embedded_tools.probe_training` and docs/EMBEDDED.md. The "face"
output was trained against images without a face, so "the probe still finds a face" is a real check that a
negative prompt did not wreck the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from negprompt_demo.embedded import PROBE_PATH
from negprompt_demo.embedded.faces import ATTRIBUTES, SIZE

OUTPUTS: tuple[str, ...] = (*ATTRIBUTES, "face")


class ProbeNet(nn.Module):
    """Four strided convolutions, then a linear layer over the 4x4 map (attributes sit at fixed places)."""

    def __init__(self) -> None:
        super().__init__()
        chans = (3, 32, 64, 64, 96)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(96 * 4 * 4, len(OUTPUTS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_input(images: list[Image.Image] | np.ndarray) -> torch.Tensor:
    """PIL images (any size) or uint8 N x 64 x 64 x 3 -> float N x 3 x 64 x 64 in [-1, 1], as the probe and VAE take."""
    if not isinstance(images, np.ndarray):
        images = np.stack([np.asarray(im.convert("RGB").resize((SIZE, SIZE))) for im in images])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Probe:
    """The trained probe; `predict` returns one boolean array per output name."""

    def __init__(self, path: Path = PROBE_PATH) -> None:
        self.net = ProbeNet()
        self.net.load_state_dict(load_file(path))
        self.net.eval()

    @torch.no_grad()
    def scores(self, images: list[Image.Image] | np.ndarray) -> dict[str, np.ndarray]:
        """The probe's logit per output and image: > 0 means "present"; how far from 0, how sure."""
        logits = torch.cat([self.net(to_input(images[i : i + 256])) for i in range(0, len(images), 256)])
        return {name: logits[:, k].numpy() for k, name in enumerate(OUTPUTS)}

    def predict(self, images: list[Image.Image] | np.ndarray) -> dict[str, np.ndarray]:
        return {name: score > 0 for name, score in self.scores(images).items()}
