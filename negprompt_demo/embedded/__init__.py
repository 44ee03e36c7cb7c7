"""The embedded default model: a tiny Stable-Diffusion-architecture model shipped inside the package."""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"
