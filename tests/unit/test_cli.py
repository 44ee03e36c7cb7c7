"""The command line (`python -m negprompt_demo compare|sweep|seeds`): the output files, PNG metadata, summary, exit
codes and one-line errors, on SD 1.x and SD3 folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from negprompt_demo.cli import main
from tests.support.paths import ROOT


def test_compare_writes_all_outputs(tiny_sd_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["compare", "--prompt", "a man", "--negative", "mustache", "--seed", "5", "--steps", "4"]
        + ["--model", str(tiny_sd_folder), "--push-map", "--out", str(out)]
    )
    assert code == 0
    names = {"without_negative.png", "with_negative.png", "side_by_side.png", "trace.json", "steps.gif"}
    assert names <= {path.name for path in out.iterdir()}

    with Image.open(out / "with_negative.png") as image:
        assert image.size == (32, 32)
        parameters = image.text["parameters"]
    assert parameters.startswith("a man\nNegative prompt: mustache\nSteps: 4, Sampler: Euler, CFG scale: 7.5, Seed: 5")
    with Image.open(out / "without_negative.png") as image:
        assert "Negative prompt: \n" in image.text["parameters"]
    with Image.open(out / "steps.gif") as animation:
        assert animation.n_frames == 4

    trace = json.loads((out / "trace.json").read_text())
    assert trace["settings"]["seed"] == 5 and len(trace["steps"]) == 4 and "push_mean" in trace["steps"][0]

    printed = capsys.readouterr().out
    assert "seed 5" in printed and "wrote" in printed


def test_random_seed_is_printed(tiny_sd_folder, tmp_path, capsys):
    assert (
        main(["compare", "--prompt", "a man", "--steps", "2", "--model", str(tiny_sd_folder), "--out", str(tmp_path)])
        == 0
    )
    printed = capsys.readouterr().out
    seed = json.loads((tmp_path / "trace.json").read_text())["settings"]["seed"]
    assert f"seed {seed}" in printed
    assert "negative prompt is empty" in printed  # warnings reach the terminal


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "500"], "steps must be between 1 and 150"),
        (["--guidance", "99"], "guidance scale must be between 0 and 30"),
        (["--width", "33"], "width must be a multiple of 8"),
        (["--width", "4096"], "width must be between"),
        (["--seed", "99999999999"], "seed must be between"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_sd_folder, tmp_path, capsys, extra, message):
    code = main(["compare", "--prompt", "a man", "--model", str(tiny_sd_folder), "--out", str(tmp_path)] + extra)
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error


def test_negative_embedding_from_a_path(tiny_sd_folder, tmp_path, capsys):
    from safetensors.torch import save_file

    embedding = tmp_path / "EasyNegative.safetensors"
    save_file({"emb_params": torch.randn(3, 32)}, str(embedding))
    out = tmp_path / "out"
    common = ["compare", "--prompt", "a man", "--steps", "2", "--model", str(tiny_sd_folder)]
    arguments = common + ["--negative", "EasyNegative", "--negative-embedding", str(embedding), "--out", str(out)]
    assert main(arguments) == 0
    with Image.open(out / "with_negative.png") as image:
        assert "Negative embedding: EasyNegative, Model:" in image.text["parameters"]
    trace = json.loads((out / "trace.json").read_text())
    assert trace["negative_reading"]["chunks"] == [
        [{"text": "EasyNegative: 3 vectors", "weight": 1.0, "embedding": True}]
    ]
    pickle_file = tmp_path / "EasyNegative.pt"
    pickle_file.write_bytes(b"not even read")
    assert main(common + ["--negative-embedding", str(pickle_file), "--out", str(out)]) == 2
    assert "pickle files are refused" in capsys.readouterr().err


def test_bad_model_exits_2(tmp_path, capsys):
    assert main(["compare", "--prompt", "a man", "--model", "../no-such-folder/model", "--out", str(tmp_path)]) == 2
    assert "neither an existing local folder nor a Hugging Face model id" in capsys.readouterr().err


def test_empty_prompt_exits_2(tiny_sd_folder, tmp_path, capsys):
    assert main(["compare", "--prompt", "   ", "--model", str(tiny_sd_folder), "--out", str(tmp_path)]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_help_works_without_loading_a_model():
    for command in (
        [sys.executable, "-m", "negprompt_demo", "compare", "--help"],
        [sys.executable, "demo.py", "--help"],
    ):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "--model" in result.stdout


def test_unknown_scheduler_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "negprompt_demo",
            "compare",
            "--prompt",
            "a",
            "--scheduler",
            "Heun",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "invalid choice: 'Heun'" in result.stderr


def test_seeds_writes_the_grids_and_their_document(tiny_sd_folder, tmp_path, capsys):
    out = tmp_path / "seeds"
    code = main(
        ["seeds", "--prompt", "a red hat", "--negative", "blue", "--seed", "3", "--steps", "2", "--seed-count", "4"]
        + ["--model", str(tiny_sd_folder), "--out", str(out)]
    )
    assert code == 0
    document = json.loads((out / "seeds.json").read_text())
    assert document["seeds"] == [3, 4, 5, 6] and list(document["columns"]) == ["without", "phrased", "with"]
    assert document["columns"]["phrased"]["prompt"] == "a red hat without blue"
    assert (out / "seeds.png").is_file() and (out / "phrased_6.png").is_file()
    assert not (out / "space.png").exists()  # no probe for this model
    assert "seeds 3–6" in capsys.readouterr().out
    assert (
        main(["seeds", "--prompt", "a", "--seed-count", "99", "--model", str(tiny_sd_folder), "--out", str(out)]) == 2
    )
    assert "between 4 and 64, got 99" in capsys.readouterr().err
    code = main(
        ["seeds", "--prompt", "a", "--negative", "b", "--no-phrased", "--seed-count", "4", "--steps", "1"]
        + ["--model", str(tiny_sd_folder), "--out", str(out / "two")]
    )
    assert code == 0 and list(json.loads((out / "two" / "seeds.json").read_text())["columns"]) == ["without", "with"]


def test_nag_at_guidance_1_from_the_command_line(tiny_sd_folder, tmp_path, capsys):
    out = tmp_path / "nag"
    code = main(
        ["compare", "--prompt", "a man", "--negative", "mustache", "--seed", "5", "--steps", "3", "--guidance", "1"]
        + ["--negative-mode", "nag", "--nag-alpha", "0.25", "--model", str(tiny_sd_folder), "--out", str(out)]
    )
    assert code == 0
    with Image.open(out / "with_negative.png") as image:
        parameters = image.text["parameters"]
    assert ", Negative mode: nag, NAG scale: 5, NAG tau: 2.5, NAG alpha: 0.25," in parameters
    trace = json.loads((out / "trace.json").read_text())
    assert trace["settings"]["negative_mode"] == "nag" and "nag_mean" in trace["steps"][0]
    assert "has no effect" not in capsys.readouterr().out


@pytest.mark.slow
def test_sweep_command_writes_the_row_and_its_reading(tiny_sd_folder, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--prompt", "a red hat", "--negative", "blue", "--seed", "2", "--steps", "10",
                 "--model", str(tiny_sd_folder), "--starts", "0,0.5", "--out", str(out)]) == 0  # fmt: skip
    assert {path.name for path in out.iterdir()} == {
        "sweep.png",
        "sweep.json",
        "sweep_0.png",
        "sweep_1.png",
        "sweep_2.png",
    }
    assert "from step 7/10" in (out / "sweep.json").read_text()  # [neg:0.5] of 10: k = 6, the 7th step
    assert main(["sweep", "--prompt", "x", "--starts", "0,2", "--out", str(out)]) == 2
    assert "every start must be between 0 and 1" in capsys.readouterr().err


def test_a_window_that_ends_before_it_starts_is_one_message_on_the_command_line(tiny_sd_folder, tmp_path, capsys):
    code = main(["compare", "--prompt", "a red hat", "--negative", "blue", "--negative-start", "0.8",
                 "--negative-end", "0.2", "--model", str(tiny_sd_folder), "--out", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: The negative starts at 0.8 of the steps but ends at 0.2: the start must not come after the end."
    )


def test_compare_command_on_an_sd3_folder(tmp_path, capsys):
    from tests.support.tiny_models import tiny_sd3_pipeline

    tiny_sd3_pipeline(tmp_path / "tokenizers").save_pretrained(tmp_path / "sd3")
    code = main(["compare", "--prompt", "portrait photo of a man", "--negative", "mustache", "--seed", "3",
                 "--steps", "3", "--scheduler", "DDIM", "--model", str(tmp_path / "sd3"),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "does not apply to it" in printed and "steps.gif" in printed
    assert {"without_negative.png", "with_negative.png", "trace.json"} <= {p.name for p in (tmp_path / "out").iterdir()}
