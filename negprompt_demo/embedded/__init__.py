"""The embedded default model: a tiny Stable-Diffusion-architecture model shipped inside the package.

Only what the app and the tests need at run time lives here (the model folder, the portrait generator and the
attribute probe); training and evaluation tools are in `negprompt_demo.embedded_tools`, so that this package
imports nothing from the engine or the loader.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"
PROBE_PATH = Path(__file__).parent / "probe.safetensors"
