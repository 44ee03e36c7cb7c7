"""Who may run what (page/app_config.py, page/launch.py): the command line's defaults and when models are locked, a
locked deployment's one refusal, and which deployments get a shared instance's bounds."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

from negprompt_demo.page.app import launch_options
from negprompt_demo.page.app_config import MAX_UPLOAD, AppConfig, config_from_args
from negprompt_demo.page.launch import build_parser
from negprompt_demo.settings import InputError
from tests.support.handler_calls import inputs, make


def test_command_line_defaults_and_public_lock(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("NEGPROMPT_MODEL", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", None, "embedded")
    assert not config_from_args(args).lock_models
    assert config_from_args(build_parser().parse_args(["--share"])).lock_models
    for host, locked in (("0.0.0.0", True), ("192.168.1.5", True), ("::", True), ("localhost", False), ("::1", False)):
        assert config_from_args(build_parser().parse_args(["--host", host])).lock_models is locked, host
    assert not config_from_args(build_parser().parse_args(["--host", "0.0.0.0", "--no-lock-models"])).lock_models
    assert not config_from_args(build_parser().parse_args(["--share", "--no-lock-models"])).lock_models
    monkeypatch.setenv("SPACE_ID", "someone/negprompt")
    monkeypatch.setenv("NEGPROMPT_MODEL", "a/b")
    space = config_from_args(build_parser().parse_args(["--models", "a/b,c/d"]))
    assert space.lock_models and space.models == ["a/b", "c/d"] and space.default_model == "a/b"


def test_locked_deployment_refuses_unlisted_models(tiny_sd_folder, tmp_path_factory):
    locked = AppConfig(default_model=str(tiny_sd_folder), models=[], lock_models=True)
    assert locked.check_model("") == str(tiny_sd_folder)
    refusals = set()
    for name in ("someone/any-model", str(tmp_path_factory.getbasetemp()), "/nonexistent", ["a/b"], "../.."):
        with pytest.raises(InputError) as raised:
            locked.check_model(name)
        refusals.add(str(raised.value) if not isinstance(name, list) else "list")
    refusals.discard("list")
    assert len(refusals) == 1 and "only offers these models" in refusals.pop()  # one message: nothing is probed
    with pytest.raises(gr.Error, match="only offers these models"):
        asyncio.run(make(locked, tmp_path_factory).compare_api(**inputs(tiny_sd_folder, model="someone/any-model")))


def test_shared_deployments_get_the_bounds_and_local_keeps_todays():
    parse = build_parser().parse_args
    assert not config_from_args(parse([])).shared
    assert config_from_args(parse(["--host", "0.0.0.0"])).shared
    assert config_from_args(parse(["--share"])).shared
    assert not config_from_args(parse(["--share", "--no-shared"])).shared
    assert config_from_args(parse(["--shared", "--trust-proxy"])).trusted_proxy
    assert launch_options(AppConfig(shared=True))["max_file_size"] == 0
    assert launch_options(AppConfig())["max_file_size"] == launch_options()["max_file_size"] == MAX_UPLOAD
