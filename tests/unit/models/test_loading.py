"""Loading: names are validated, unsafe or unsupported models are refused with clear messages, the cache is bounded."""

from __future__ import annotations

import json

import pytest
import torch

from negprompt_demo.models import loading
from negprompt_demo.models.families import family_of
from negprompt_demo.models.loading import (
    ModelLoadError,
    check_model_name,
    load_pipeline,
    model_defaults,
)
from negprompt_demo.page.app_config import KNOWN_MODELS
from tests.support.tiny_models import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "owner/../name", "a/b/c", "/definitely/not/here", "no-slash", "own er/name", "x" * 600, "a\x00b"],
)
def test_bad_names_are_refused(name):
    with pytest.raises(ModelLoadError):
        check_model_name(name)


@pytest.mark.parametrize("name", [None, "", "  ", "embedded"])
def test_blank_means_embedded(name):
    assert check_model_name(name) == loading.EMBEDDED


def test_hub_id_offline_fails_fast_with_one_clear_message(monkeypatch):
    """Fast by construction: only the local cache is asked, never the network (whose retries take ~25 s)."""
    import huggingface_hub

    asked = []

    def local_cache_only(repo_id, filename, local_files_only=False, **kwargs):
        asked.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", local_cache_only)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelLoadError) as error:
        load_pipeline("stabilityai/some-model-that-is-not-cached")
    assert asked == [True], "an unreachable Hub must not be asked over the network"
    message = str(error.value)
    assert "'stabilityai/some-model-that-is-not-cached'" in message
    assert "embedded model works offline" in message


@pytest.mark.parametrize("name", [name for name in KNOWN_MODELS if "stable-diffusion-3" in name or "FLUX" in name])
def test_sd3_and_flux_hub_models_offline_get_the_same_message(name, monkeypatch):
    import huggingface_hub

    def local_cache_only(repo_id, filename, local_files_only=False, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", local_cache_only)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelLoadError, match=f"Could not load '{name}'.*embedded model works offline"):
        load_pipeline(name)


@pytest.mark.parametrize("family, make", [("sd3", tiny_sd3_pipeline), ("flux", tiny_flux_pipeline)])
def test_sd3_and_flux_folders_load_as_safetensors_only(family, make, tmp_path, monkeypatch):
    """The new families go through the same strict loader: their safetensors folder loads, pickle weights don't."""
    pipe = make(tmp_path / "tokenizers")
    pipe.save_pretrained(tmp_path / "safe")
    loaded = load_pipeline(str(tmp_path / "safe"))
    assert family_of(loaded).key == family and type(loaded) is type(pipe)
    pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: pytest.fail("torch.load was called on pickle weights"))
    with pytest.raises(ModelLoadError, match="no safetensors weights; pickle"):
        load_pipeline(str(tmp_path / "pickled"))


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(str(tmp_path))


def test_unsupported_pipeline_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ModelLoadError, match="KandinskyV22Pipeline model; this demo supports Stable Diffusion"):
        load_pipeline(str(tmp_path))


def test_custom_code_components_are_refused(tmp_path):
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["my_module", "MyUNet"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="never runs code from a model repository"):
        load_pipeline(str(tmp_path))


def test_pickle_only_model_is_refused_before_any_weight_is_unpickled(sd_pipe, tmp_path, monkeypatch):
    sd_pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert list((tmp_path / "pickled").rglob("*.bin")), "the fixture must really hold pickle weights"

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on pickle weights")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ModelLoadError, match="no safetensors weights; pickle"):
        load_pipeline(str(tmp_path / "pickled"))


def test_local_folder_loads_and_is_cached(tiny_sd_folder):
    pipe = load_pipeline(str(tiny_sd_folder))
    assert load_pipeline(str(tiny_sd_folder)) is pipe
    assert family_of(pipe).native_size(pipe) == 32
    assert model_defaults(pipe)["guidance"] == 7.5


def test_cache_keeps_a_bounded_number_of_big_models(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "SMALL_MODEL_PARAMETERS", 0)  # treat the tiny models as big
    monkeypatch.setattr(loading, "max_loaded_models", lambda device: 1)
    folders = []
    for name in ("first", "second"):
        tiny_sd_pipeline(tmp_path / f"tok_{name}").save_pretrained(tmp_path / name)
        folders.append(str((tmp_path / name).resolve()))
    load_pipeline(folders[0])
    load_pipeline(folders[1])
    assert folders[0] not in loading.loaded_models()
    assert folders[1] in loading.loaded_models()


def test_hub_path_checks_the_index_before_downloading_weights(tiny_sd_folder, monkeypatch):
    """The online path, with the Hub replaced by a local folder: model_index.json is fetched first, then the
    pipeline class it names is loaded with safetensors only."""
    import huggingface_hub
    from diffusers import StableDiffusionPipeline

    requested = []

    def fake_download(repo_id, filename, local_files_only=False, **kwargs):
        requested.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(tiny_sd_folder / filename)

    real_from_pretrained = StableDiffusionPipeline.from_pretrained.__func__
    loads = []

    def fake_from_pretrained(cls, source, **kwargs):
        loads.append((source, kwargs))
        return real_from_pretrained(cls, str(tiny_sd_folder), **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", classmethod(fake_from_pretrained))
    pipe = load_pipeline("someone/tiny-sd")
    assert isinstance(pipe, StableDiffusionPipeline)
    assert requested == [("someone/tiny-sd", "model_index.json", True), ("someone/tiny-sd", "model_index.json", False)]
    assert loads[0][0] == "someone/tiny-sd" and loads[0][1]["use_safetensors"] is True


def test_missing_hub_repo_gets_a_clear_message(monkeypatch):
    import huggingface_hub

    def fake_download(repo_id, filename, local_files_only=False, **kwargs):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        response = type("Response", (), {"status_code": 404, "headers": {}, "request": None, "url": ""})()
        raise huggingface_hub.errors.RepositoryNotFoundError("404 Repository Not Found", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: True)
    with pytest.raises(ModelLoadError, match="was not found on the Hugging Face Hub"):
        load_pipeline("someone/does-not-exist")
