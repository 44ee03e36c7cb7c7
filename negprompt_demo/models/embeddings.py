"""Negative textual-inversion embeddings (EasyNegative, badhandv4, …): read from a `.safetensors` file, checked
against the model, and put into the text encoder for one request only.

A1111's rule: the file's name is the trigger word (`EasyNegative.safetensors` → write "EasyNegative" in the
negative prompt), found where the text's token ids hold the name's token ids (A1111's
`EmbeddingDatabase.find_embedding_at_position`): any case, and also inside longer words whose tokens begin with
the name's ("EasyNegative2", "_EasyNegative", "xEasyNegative", "bad-hands-5x" for bad-hands-5), but not where the
tokenizer splits the name differently ("EasyNegativeé"); a multi-vector embedding takes as many token places as it
has vectors. Formats read: A1111's `{"emb_params": [n, 768]}` (SD 1.x; 1024 wide for SD 2.x), diffusers'
single-tensor files, and SDXL's `{"clip_l": [n, 768], "clip_g": [n, 1280]}` (clip_l into `text_encoder`, clip_g into
`text_encoder_2`). Pickle files (.pt, .bin, .ckpt) are refused: loading them can run code.

How the vectors reach the text encoder: `prompts.py` reads the trigger into placeholder token places, and
`vectors_injected` overwrites the token-embedding output at those places while the text is encoded. Nothing is
added to the shared tokenizer or text encoder, so an embedding cannot outlive its request or reach another user's
run; it is also how A1111 inserts embeddings, and it avoids diffusers' `load_textual_inversion`, whose expansion of
a multi-vector trigger misses a mixed-case name ("EasyNegative") with transformers 5's CLIP tokenizer and so
silently uses only the first vector, and whose `unload_textual_inversion` rebuilds the tokenizer without its decoder.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from negprompt_demo.models.families import family_of
from negprompt_demo.models.loading import hub_reachable
from negprompt_demo.settings import InputError, embedding_name

MAX_FILE_BYTES = 16 * 1024 * 1024  # a textual-inversion file is 4–100 KB; anything this large is something else
MAX_VECTORS = 75  # one chunk
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A file on the Hugging Face Hub: owner/name/path/to/file.safetensors, "datasets/" first for a dataset repository.
HUB_FILE = re.compile(
    r"^(?P<datasets>datasets/)?(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})/"
    r"(?P<file>[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*\.safetensors)$"
)


@dataclass
class NegativeEmbedding:
    """A checked embedding: its trigger word and its vectors per text encoder (attribute name → [n, width])."""

    name: str
    vectors: dict[str, torch.Tensor]
    path: Path

    @property
    def vector_count(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def trigger_ids(self, tokenizer) -> list[int]:
        """The name's token ids (no start or end token), the sequence A1111 looks for in a text's tokens."""
        return tokenizer(self.name, add_special_tokens=False, truncation=False, verbose=False).input_ids


def with_trigger(ids: list[int], trigger: list[int]) -> list:
    """A text's token ids with ("embedding",) in place of each occurrence of the trigger's ids, left to right."""
    tokens, place = [], 0
    while place < len(ids):
        if trigger and ids[place : place + len(trigger)] == trigger:
            tokens.append(("embedding",))
            place += len(trigger)
        else:
            tokens.append(ids[place])
            place += 1
    return tokens


def trigger_in(tokenizer, text: str, embedding: NegativeEmbedding) -> bool:
    """Whether A1111 would find the embedding's name in the text."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    return ("embedding",) in with_trigger(ids, embedding.trigger_ids(tokenizer))


def embedding_file(source: str) -> Path:
    """The local `.safetensors` file a setting names: a path, or `owner/name/file.safetensors` on the Hub (downloaded
    once into the Hugging Face cache). Raises InputError with what to do."""
    shown = source if len(source) <= 80 else source[:79] + "…"
    path = Path(source).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InputError(
            f"The negative embedding '{shown}' is a pickle file ({path.suffix}); pickle files are refused because "
            "loading them can run arbitrary code. Use the .safetensors version of the embedding."
        )
    if path.suffix.lower() != ".safetensors":
        raise InputError(f"The negative embedding must be a .safetensors file, got '{shown}'.")
    if path.is_file():
        return path
    match = HUB_FILE.match(source)
    if match is None or os.path.isabs(source) or source.startswith("."):
        raise InputError(
            f"The negative embedding file '{shown}' does not exist (give a local .safetensors file, or a file on the "
            "Hugging Face Hub as owner/name/file.safetensors)."
        )
    return _download(match["repo"], match["file"], "dataset" if match["datasets"] else "model", shown)


def _download(repo: str, filename: str, repo_type: str, shown: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    try:  # downloaded before: no network needed
        return Path(hf_hub_download(repo, filename, repo_type=repo_type, local_files_only=True))
    except (FileNotFoundError, OSError, ValueError):
        pass
    if not hub_reachable():
        raise InputError(
            f"The negative embedding '{shown}' is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline?). Give a local .safetensors file instead."
        )
    try:
        return Path(hf_hub_download(repo, filename, repo_type=repo_type))
    except RepositoryNotFoundError:
        raise InputError(f"The repository of '{shown}' was not found on the Hub (or it is private).") from None
    except EntryNotFoundError:
        raise InputError(f"The Hub repository has no file '{filename}'.") from None
    except (HfHubHTTPError, OSError) as error:
        raise InputError(f"Could not download '{shown}': {str(error).splitlines()[0]}") from None


def read_embedding(pipe, source: str | None) -> NegativeEmbedding | None:
    """The embedding a setting names (None when blank), checked against this model's text encoders."""
    if not source:
        return None
    path = embedding_file(source)
    name = embedding_name(str(path))
    if not VALID_NAME.match(name):
        raise InputError(
            f"The embedding's file name is its trigger word, so it may hold only letters, digits, '_', '-' and '.' "
            f"(got '{name[:40]}'); rename the file."
        )
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"'{path.name}' is {path.stat().st_size // 2**20} MB: not a textual-inversion embedding.")
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"'{path.name}' is not a readable safetensors file ({str(error)[:80]}).") from None
    return NegativeEmbedding(name, _vectors_for(pipe, tensors, path.name), path)


def _vectors_for(pipe, tensors: dict, file_name: str) -> dict[str, torch.Tensor]:
    """The file's vectors by text encoder, or InputError saying what does not fit this model."""
    sdxl_keys = {"clip_l", "clip_g"}
    if family_of(pipe).two_clips:
        if not sdxl_keys <= set(tensors):
            raise InputError(
                f"'{file_name}' is not an SDXL embedding (SDXL needs its vectors for both text encoders, 'clip_l' and "
                f"'clip_g'; this file has {_names(tensors)}). Use an SDXL version of the embedding."
            )
        by_encoder = {"text_encoder": tensors["clip_l"], "text_encoder_2": tensors["clip_g"]}
    elif sdxl_keys & set(tensors):
        raise InputError(f"'{file_name}' is an SDXL embedding (clip_l, clip_g); this model is SD 1.x/2.x.")
    else:
        candidates = [key for key in ("emb_params", "string_to_param.*") if key in tensors] or list(tensors)
        if len(candidates) != 1:
            raise InputError(
                f"'{file_name}' is not a textual-inversion embedding: it has {_names(tensors)} (expected one tensor, "
                "'emb_params' in A1111's files)."
            )
        by_encoder = {"text_encoder": tensors[candidates[0]]}

    vectors = {}
    for attribute, tensor in by_encoder.items():
        encoder = getattr(pipe, attribute, None)
        if encoder is None:
            continue
        tensor = tensor.unsqueeze(0) if tensor.ndim == 1 else tensor
        width = encoder.get_input_embeddings().weight.shape[-1]
        if tensor.ndim != 2 or tensor.shape[-1] != width or not 1 <= tensor.shape[0] <= MAX_VECTORS:
            encoder_name = attribute.replace("_", " ")
            raise InputError(
                f"'{file_name}' holds vectors of shape {list(tensor.shape)}, but this model's {encoder_name} "
                f"takes 1–{MAX_VECTORS} vectors of width {width} (SD 1.x embeddings are 768 wide, SD 2.x 1024, SDXL "
                "768 + 1280): it was made for another model family."
            )
        if not torch.isfinite(tensor).all():
            raise InputError(f"'{file_name}' contains NaN or infinite values.")
        vectors[attribute] = tensor.float()
    counts = {tensor.shape[0] for tensor in vectors.values()}
    if len(counts) != 1:
        raise InputError(f"'{file_name}' has different vector counts for clip_l and clip_g.")
    return vectors


def _names(tensors: dict) -> str:
    names = sorted(tensors)
    return ", ".join(f"'{name[:30]}'" for name in names[:5]) + (" …" if len(names) > 5 else "") or "no tensors"


@contextlib.contextmanager
def vectors_injected(text_encoder, replacements: dict[int, torch.Tensor]) -> Iterator[None]:
    """While the block runs, the text encoder's token embeddings at these token positions (of every batch item)
    are the given vectors: an embedding's vectors, put where the prompt's placeholders are. Removed on exit."""
    if not replacements:
        yield
        return

    def replace(module, args, output):
        output = output.clone()
        for position, vector in replacements.items():
            output[:, position] = vector.to(dtype=output.dtype, device=output.device)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()
