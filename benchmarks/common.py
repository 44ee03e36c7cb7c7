"""What every benchmark shares: models to measure, interleaved timing, memory and machine-load readings.

Every figure the benchmarks report is a ratio (or a time) taken in one process on one machine, from medians of
interleaved repetitions (A B A B ... rather than A A ... B B ...), so a burst of load from another process on a
shared machine slows all the cases alike instead of one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SD15_CONFIG = Path(__file__).with_name("sd15_architecture.json")
SD15_RANDOM = "sd15-random"
PROMPT = "portrait photo of a smiling woman, studio light"
NEGATIVE = "glasses, blurry"
SEED = 1234


@dataclass
class Row:
    """One line of the final table: what was measured, the figure, the goal and how to reproduce it."""

    name: str
    figure: str
    goal: str
    met: bool | None  # None: no goal, or it could not be checked here
    command: str
    details: dict = field(default_factory=dict)


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int = 5) -> None:
    parser.add_argument(
        "--model",
        default="embedded",
        help=f"'embedded' (default), a diffusers folder, or '{SD15_RANDOM}' (random weights, SD-1.5 architecture)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the app's, cores - 1)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repetitions per case (medians of these)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=None, help="image width = height in px (default: the model's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")


def configure_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def load_model(name: str, device: str, threads: int | None = None):
    """The pipeline to measure, on `device`: fp16 on CUDA, fp32 on CPU, and on the CPU as many torch threads as
    the app uses (`loading.limit_cpu_threads`: all cores but one) unless `threads` says otherwise."""
    from negprompt_demo.models.loading import limit_cpu_threads, load_pipeline

    if name == SD15_RANDOM:
        pipe = build_sd15_random(device)
    else:
        pipe = load_pipeline(None if name == "embedded" else name)
        if str(pipe.device) != device and device == "cuda":
            pipe.to("cuda", torch.float16)
        pipe.set_progress_bar_config(disable=True)
    if device == "cpu":
        limit_cpu_threads()
    configure_threads(threads)
    return pipe


def build_sd15_random(device: str):
    """A StableDiffusionPipeline with SD-1.5's exact architecture (859.5M-parameter UNet, 83.7M VAE, 123M CLIP-L
    text encoder) and random weights, built from the configs in sd15_architecture.json: no download needed.

    The tokenizer is the real CLIP BPE tokenizer that ships with the embedded model (the same vocabulary as SD-1.5).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from negprompt_demo.embedded import MODEL_DIR

    config = json.loads(SD15_CONFIG.read_text())
    tokenizer_dir = MODEL_DIR / "tokenizer"
    if not (tokenizer_dir / "vocab.json").is_file() and not (tokenizer_dir / "tokenizer.json").is_file():
        raise SystemExit(f"{SD15_RANDOM} needs the CLIP tokenizer of the embedded model in {tokenizer_dir}.")
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialise the weights where they will run: seconds on a GPU instead of a minute
        unet = UNet2DConditionModel.from_config(config["unet"])
        vae = AutoencoderKL.from_config(config["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**config["text_encoder"]))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=unet,
        scheduler=PNDMScheduler.from_config(config["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ComponentTimer:
    """Wall time spent inside each watched module, summed over calls (modules here are never nested)."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._start(name)))
            self._handles.append(module.register_forward_hook(self._stop(name)))
        self._started: dict[str, float] = {}

    def _start(self, name):
        def hook(module, args):
            self._started[name] = time.perf_counter()

        return hook

    def _stop(self, name):
        def hook(module, args, output):
            self.seconds[name] += time.perf_counter() - self._started.pop(name)
            self.calls[name] += 1

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def compare_as_the_app_does(pipe, settings):
    """One comparison the way the app makes it (runner.device.sample_on_device): trace on, x0
    pictures decoded live at most every LIVE_PREVIEW_INTERVAL_S while sampling, the other steps' pictures in
    one batch afterwards (the scrubber and the animation show every step)."""
    from negprompt_demo.models.previews import LivePreviews, fill_previews
    from negprompt_demo.sampling.engine import compare

    live = LivePreviews(pipe)
    result = compare(
        pipe, settings, trace=True, on_step=lambda done, total, record: live.decode_if_due(done, total, record)
    )
    fill_previews(pipe, result.trace.steps)
    return result


def synchronize(pipe) -> None:
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each case: `warmup` untimed rounds, then `repeats` rounds taking the cases in turn."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for run in cases.values():
            run()
            sync()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            sync()
            started = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """Median with the min–max range, in seconds, for the details column."""
    return f"{median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def rss_bytes() -> int:
    """Resident memory of this process now, from /proc (no psutil needed)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Highest resident memory this process has had (VmHWM)."""
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM missing from /proc/self/status")


class MachineLoad:
    """How busy the rest of the machine was while a block ran: CPU cores used by other processes, on average.

    Reads /proc/stat (all CPU time) and this process's own CPU time; the difference is everyone else.
    """

    def __enter__(self) -> MachineLoad:
        self._busy, self._own, self._wall = _busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        wall = time.perf_counter() - self._wall
        others = (_busy_seconds() - self._busy) - (_own_cpu_seconds() - self._own)
        self.other_cores = max(0.0, others / wall) if wall > 0 else 0.0


def _busy_seconds() -> float:
    with open("/proc/stat") as file:
        fields = [int(value) for value in file.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def machine_state(pipe=None) -> dict:
    """What the figures were measured on, printed with every table."""
    state = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        state["gpu"] = torch.cuda.get_device_name(0)
    if pipe is not None:
        state["unet_parameters"] = sum(p.numel() for p in pipe.unet.parameters())
        state["dtype"] = str(pipe.unet.dtype)
        state["device"] = str(pipe.device)
    return state


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(rows: list[Row], state: dict) -> None:
    """The summary, printed last: figure, goal, met or not, and the command that reproduces the row."""
    print()
    print("machine: " + ", ".join(f"{key}={value}" for key, value in state.items()))
    header = ("benchmark", "figure", "goal", "met")
    lines = [(row.name, row.figure, row.goal, {True: "yes", False: "NO", None: "-"}[row.met]) for row in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(4)]
    for line in [header, tuple("-" * width for width in widths), *lines]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)))
    print()
    for row in rows:
        print(f"{row.name}: {row.command}")


def write_json(path: Path | None, rows: list[Row], state: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"machine": state, "rows": [row.__dict__ for row in rows]}
    path.write_text(json.dumps(data, indent=2, default=str))


def command_line(module: str, args: argparse.Namespace, keys: list[str]) -> str:
    """The exact command that reproduces a row, with the options that differ from the defaults."""
    parts = [f"python -m benchmarks.{module}"]
    for key in keys:
        value = getattr(args, key)
        if value is not None and value is not False:
            parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(parts)


def model_benchmark_main(description: str, run: Callable[[argparse.Namespace, object], list[Row]]) -> None:
    """The command line every single-model benchmark shares: parse the common flags, load the model, run,
    print each row's details, then the table, and write the JSON when asked."""
    parser = argparse.ArgumentParser(description=description)
    add_common_arguments(parser)
    args = parser.parse_args()
    pipe = load_model(args.model, args.device, args.threads)
    rows = run(args, pipe)
    for row in rows:
        print(row.name, row.details)
    state = machine_state(pipe)
    print_table(rows, state)
    write_json(args.json, rows, state)
