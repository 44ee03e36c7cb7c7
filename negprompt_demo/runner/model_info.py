"""What a front end may know of a model, read through the runner: its name, native size, defaults and the note
the page shows under the model selector, and a fingerprint of its weights (the example cache's key)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from negprompt_demo.models.families import family_of
from negprompt_demo.models.loading import load_pipeline, model_defaults, model_label
from negprompt_demo.settings import size_limits


@dataclass(frozen=True)
class ModelInfo:
    """What a front end shows about a model and fills its blank fields with, read from the loaded pipeline once."""

    label: str  # the name to show and to write into metadata ('embedded' for the shipped model)
    native_size: int  # px
    defaults: dict  # every model default a blank field takes: steps, guidance, scheduler, width, height, NAG's
    note: str  # "Native size … px; sizes …–… px allowed." and what this model family does differently

    @property
    def size_limits(self) -> tuple[int, int]:
        return size_limits(self.native_size)


def model_info_of(pipe) -> ModelInfo:
    """A loaded pipeline's `ModelInfo`."""
    family = family_of(pipe)
    native = family.native_size(pipe)
    low, high = size_limits(native)
    note = f"Native size {native} px; sizes {low}–{high} px allowed." + family.note
    defaults = {"width": native, "height": native, **model_defaults(pipe)}
    return ModelInfo(model_label(pipe), native, defaults, note)


def model_info(model: str) -> ModelInfo:
    """Load `model` (from the module cache when it is there) and say what a front end needs of it; raises
    ModelLoadError for a model that cannot be loaded."""
    return model_info_of(load_pipeline(model))


def weights_fingerprint(pipe) -> bytes:
    """What identifies a model's weights cheaply: every tensor's name, shape and first 16 values, for the denoiser
    (UNet or transformer), the text encoder(s) and the VAE (a retrained or fine-tuned model changes them; reading all
    of an SDXL's 7 GB at every start would not be cheap)."""
    digest = hashlib.sha256()
    for component in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        module = getattr(pipe, component, None)
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            head = tensor.detach().flatten()[:16].float().cpu().numpy()
            digest.update(f"{component}.{name}{tuple(tensor.shape)}".encode() + head.tobytes())
    return digest.digest()


def model_fingerprint(model: str) -> bytes:
    """`weights_fingerprint` of a model by name (what the page's example cache is keyed on)."""
    return weights_fingerprint(load_pipeline(model))
