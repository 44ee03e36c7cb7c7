"""negprompt-demo: the same seed with and without a negative prompt, and the guidance that tells them apart."""

__version__ = "0.1.0"

import os

# transformers warns at import time that torchvision is absent (it is not needed here); keep the console clean.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def compare(prompt: str, negative: str, *, model: str | None = None, **settings):
    """One comparison in one line, the way the page and the CLI run it (through `runner.stream`): the same seed
    without and with the negative prompt, both images and the per-step trace.

        >>> import negprompt_demo
        >>> result = negprompt_demo.compare("portrait photo of a man", "mustache", seed=3)
        >>> result.with_negative.save("with.png"); result.trace.steps[4].guidance_mean

    `model`: None for the embedded model, a diffusers folder or a Hub id. `settings`: any of `settings.FIELDS`
    (steps, guidance, seed, negative_start, negative_mode, …); left out, the model's defaults. Bad input raises
    `settings.InputError` with the message the page shows. Returns a `sampling.engine.Comparison`, its
    `.warnings` included. Imports torch only when called."""
    from negprompt_demo.runner import CompareRequest, Done, stream
    from negprompt_demo.settings import CompareSettings

    request = CompareRequest(CompareSettings(prompt, negative, **settings))
    return next(event.comparison for event in stream(model, request) if isinstance(event, Done))
