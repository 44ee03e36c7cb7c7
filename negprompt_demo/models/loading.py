"""Loading Stable Diffusion pipelines: the embedded model by default, a hub id or a local folder on request.

Loading is where untrusted input (a model name typed into a public page) meets the network and the disk, so it is
strict: only SD 1.x/2.x, SDXL, SD3/SD3.5 and FLUX.1 text-to-image pipelines, safetensors weights only, no remote
code, no custom pipelines, names that are either `owner/name` or an existing local folder. Loaded pipelines are
cached per name with a bound, so switching models cannot exhaust (GPU) memory.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch

from negprompt_demo.embedded import MODEL_DIR
from negprompt_demo.models.families import FAMILY_BY_PIPELINE, family_of
from negprompt_demo.settings import EMBEDDED

SUPPORTED_TEXT = "Stable Diffusion 1.x/2.x, SDXL, SD3/SD3.5 and FLUX.1 text-to-image models"
# Component libraries a model_index.json may name; anything else would mean code from the model repository.
TRUSTED_LIBRARIES = {"diffusers", "transformers", None}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
# Pipelines of this many parameters or fewer don't count against the cache bound (the embedded model is ~3M).
SMALL_MODEL_PARAMETERS = 50_000_000


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do, and is shown to users as it is."""


def pick_device() -> tuple[str, torch.dtype]:
    """CUDA, then Apple MPS, then CPU; half precision only where it is fast and safe (CUDA; SD3 and FLUX.1 load
    in bfloat16 there instead, see `_load_uncached`)."""
    if torch.cuda.is_available():
        return "cuda", torch.float16
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps", torch.float32
    return "cpu", torch.float32


def limit_cpu_threads() -> None:
    """Run torch on all cores but one when generating on the CPU, leaving that core to the rest of the process
    (the page draws step views while sampling) and to other processes on the machine.

    torch's default is one OpenMP thread per core, and a team of threads waits at every operator's barrier for
    its slowest member: when anything else runs on a core, each small operator waits for a time slice. On a
    2-core machine shared with other work, the embedded model's comparison took 3.4-11.7 s with 2 threads and
    0.96 s with 1 (docs/BENCHMARKS.md, "CPU threads"). Only torch's default is lowered: OMP_NUM_THREADS, or a
    smaller count set before, is kept.
    """
    cores = os.cpu_count() or 1
    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() >= cores:
        torch.set_num_threads(max(1, cores - 1))


def check_model_name(name: str | None) -> str:
    """Normalise a model name and refuse anything that is neither a local folder nor an `owner/name` hub id."""
    if name is None or not str(name).strip() or str(name).strip() == EMBEDDED:
        return EMBEDDED
    name = str(name).strip()
    if "\x00" in name or len(name) > 512:
        raise ModelLoadError("That model name is not valid.")
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "model_index.json")):
            raise ModelLoadError(f"The folder '{name}' is not a diffusers model folder (it has no model_index.json).")
        return str(Path(name).resolve())
    if ".." in name or not HUB_ID.match(name):
        raise ModelLoadError(
            f"'{name}' is neither an existing local folder nor a Hugging Face model id of the form owner/name."
        )
    return name


_cache: OrderedDict[str, object] = OrderedDict()
_cache_lock = threading.Lock()  # guards `_cache` and `_loading` only; never held while a model loads
_loading: dict[str, threading.Lock] = {}  # one lock per name being loaded, so a download blocks no other model
_run_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_base_scheduler_configs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def max_loaded_models(device: str) -> int:
    """How many big pipelines may stay loaded at once: one on a GPU (an SDXL alone fills a small card)."""
    return 1 if device in ("cuda", "mps") else 2


def load_pipeline(name: str | None = None):
    """Return the (cached) pipeline for `name`; None or "embedded" means the model shipped in the package."""
    key = check_model_name(name)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        name_lock = _loading.setdefault(key, threading.Lock())
    with name_lock:  # a second request for the same model waits for the first load instead of loading it twice
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        pipe = _load_uncached(key)
        with _cache_lock:
            _cache[key] = pipe
            _loading.pop(key, None)
            _evict_over_bound(pick_device()[0])
        return pipe


def loaded_models() -> list[str]:
    return list(_cache)


def pipeline_lock(pipe) -> threading.Lock:
    """One run at a time per pipeline: hooks, the scheduler, the tokenizer's state and the interrupt flag are
    pipeline state."""
    with _cache_lock:
        if pipe not in _run_locks:
            _run_locks[pipe] = threading.Lock()
            _base_scheduler_configs[pipe] = pipe.scheduler.config
        return _run_locks[pipe]


def base_scheduler_config(pipe):
    """The scheduler configuration the model shipped with (each run builds its scheduler from it)."""
    pipeline_lock(pipe)
    return _base_scheduler_configs[pipe]


def _evict_over_bound(device: str) -> None:
    """Drop the least recently used big pipelines over the bound, never one that is running right now."""
    big = [key for key, pipe in _cache.items() if _parameter_count(pipe) > SMALL_MODEL_PARAMETERS]
    idle = [key for key in big if not (_cache[key] in _run_locks and _run_locks[_cache[key]].locked())]
    while len(big) > max_loaded_models(device) and idle:
        key = idle.pop(0)  # least recently used first
        big.remove(key)
        del _cache[key]
        _free_accelerator_memory()


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _parameter_count(pipe) -> int:
    return sum(p.numel() for p in family_of(pipe).denoiser(pipe).parameters())


def _load_uncached(key: str):
    device, dtype = pick_device()
    if key == EMBEDDED:
        if not (MODEL_DIR / "model_index.json").is_file():
            raise ModelLoadError(f"The embedded model is missing from the package (expected it in {MODEL_DIR}).")
        source, shown = str(MODEL_DIR), "the embedded model"
    else:
        source, shown = key, f"'{key}'"

    index = _read_model_index(source, shown)
    class_name = index.get("_class_name")
    if not isinstance(class_name, str) or class_name not in FAMILY_BY_PIPELINE:
        raise ModelLoadError(f"{shown} is a {class_name or 'unknown'} model; this demo supports {SUPPORTED_TEXT}.")
    for component, spec in index.items():
        if isinstance(spec, list) and spec and spec[0] not in TRUSTED_LIBRARIES:
            raise ModelLoadError(
                f"{shown} needs custom code for its '{component}' ({spec[0]}); this demo never runs code from a "
                "model repository."
            )

    family = FAMILY_BY_PIPELINE[class_name]
    if dtype == torch.float16 and family.flow_matching:
        dtype = torch.bfloat16  # their T5 encoder and FLUX.1's transformer overflow in fp16 (black or NaN images)
    try:
        pipe = family.pipeline_class.from_pretrained(source, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as error:
        message = str(error)
        # Only a *missing* safetensors file means pickle-only weights; a corrupt one also names its .safetensors
        # path ("Unable to load weights from checkpoint file for '...safetensors'") and gets the plain message.
        missing = "no file named" in message or "Could not find the necessary" in message
        if "safetensors" in message and missing:
            raise ModelLoadError(
                f"{shown} has no safetensors weights; pickle (.bin/.ckpt) weights are refused because loading them "
                "can run arbitrary code. Use a version of the model saved as safetensors."
            ) from None
        raise ModelLoadError(f"Could not load {shown}: {message.splitlines()[0] if message else error!r}") from None
    pipe.to(device)
    if device == "cpu":
        limit_cpu_threads()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _read_model_index(source: str, shown: str) -> dict:
    """Read model_index.json first, so an unsupported or unsafe model is refused before any weight is fetched."""
    if os.path.isdir(source):
        path = os.path.join(source, "model_index.json")
    else:
        path = _download_model_index(source, shown)
    try:
        with open(path, encoding="utf-8") as file:
            index = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{shown} has an unreadable model_index.json ({error}).") from None
    if not isinstance(index, dict):
        raise ModelLoadError(f"{shown} has an unreadable model_index.json.")
    return index


def _download_model_index(repo_id: str, shown: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline_message = (
        f"Could not load {shown}: it is not a local folder, it is not in the local Hugging Face cache, and the "
        "Hugging Face Hub cannot be reached (offline?). The embedded model works offline (choose 'embedded', or "
        "run without --model)."
    )
    try:  # a model downloaded earlier loads without the network
        return hf_hub_download(repo_id, "model_index.json", local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if not hub_reachable():
        raise ModelLoadError(offline_message)
    try:
        return hf_hub_download(repo_id, "model_index.json")
    except GatedRepoError:
        raise ModelLoadError(f"{shown} is gated on the Hub: accept its licence and log in first.") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{shown} was not found on the Hugging Face Hub (or it is private).") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(offline_message) from None
    except HfHubHTTPError as error:
        if "404" in str(error):
            raise ModelLoadError(f"{shown} is not a diffusers pipeline (it has no model_index.json).") from None
        raise ModelLoadError(f"Could not load {shown}: the Hub answered {str(error).splitlines()[0]}") from None


def hub_reachable(timeout: float = 3.0) -> bool:
    """A fast yes/no before any download: huggingface_hub itself retries for ~25 s when offline."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    parsed = urlparse(constants.ENDPOINT)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def model_defaults(pipe) -> dict:
    """Default steps/guidance/scheduler/size and NAG's inputs: the family's, overridden by a `negprompt_defaults.json`
    that a model folder may ship (the embedded model does, with the settings its results table was measured at)."""
    defaults = family_of(pipe).defaults(pipe)
    folder = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path")
    if folder and os.path.isdir(folder):
        path = os.path.join(folder, "negprompt_defaults.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as file:
                defaults.update(json.load(file))
    return defaults


def model_label(pipe) -> str:
    """The name to show and to write into metadata: 'embedded' for the shipped model, else the hub id/folder."""
    source = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path") or "unknown"
    if os.path.isdir(source) and Path(source).resolve() == MODEL_DIR.resolve():
        return EMBEDDED
    return str(source)
