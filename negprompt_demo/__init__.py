"""negprompt-demo: the same seed with and without a negative prompt, and the guidance that tells them apart."""

__version__ = "0.1.0"
