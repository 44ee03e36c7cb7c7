"""negprompt-demo: the same seed with and without a negative prompt, and the guidance that tells them apart."""

__version__ = "0.1.0"

import os

# transformers warns at import time that torchvision is absent (it is not needed here); keep the console clean.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
