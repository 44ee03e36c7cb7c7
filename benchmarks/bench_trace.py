"""Benchmark 2: what the guidance trace costs. The paired call with the trace vs without (goal ≤ 5 %), and,
reported separately, with the negative-push map (one extra UNet batch item per step, so about +25 % UNet work).

The trace records x0 as latents; its pictures are decoded when shown. So the app's path is timed too — live
pictures at most every 0.1 s while sampling, the other steps' pictures in one batch afterwards — and the x0
pictures of every step decoded in one batch after a traced call, so the figures users see are on record.

    python -m benchmarks.bench_trace
"""

from __future__ import annotations

import argparse

from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    SEED,
    ComponentTimer,
    MachineLoad,
    Row,
    command_line,
    compare_as_the_app_does,
    median,
    model_benchmark_main,
    spread,
    synchronize,
    time_interleaved,
)
from negprompt_demo.models.previews import fill_previews
from negprompt_demo.sampling.engine import compare, prepare
from negprompt_demo.settings import CompareSettings

TRACE_GOAL = 0.05


def run(args: argparse.Namespace, pipe) -> list[Row]:
    size = {"width": args.size, "height": args.size}
    prepared = prepare(pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=args.steps, **size))
    settings = prepared.settings
    with_push = settings.replace(push_map=True)
    decoder_seconds: dict[str, list[float]] = {}

    def timed_decoder(name: str, call):
        """Run `call`, recording the seconds spent in the VAE decoder (the final decode, plus previews if any)."""

        def run_case() -> None:
            timer = ComponentTimer({"decoder": pipe.vae.decoder})
            try:
                call()
            finally:
                timer.remove()
            decoder_seconds.setdefault(name, []).append(timer.seconds["decoder"])

        return run_case

    def traced_then_all_pictures() -> None:
        result = compare(pipe, settings, trace=True)
        fill_previews(pipe, result.trace.steps)

    cases = {
        "no trace": timed_decoder("no trace", lambda: compare(pipe, settings, trace=False)),
        "trace": timed_decoder("trace", lambda: compare(pipe, settings, trace=True)),
        "trace + push map": lambda: compare(pipe, with_push, trace=True),
        "trace + every step's pictures": timed_decoder("pictures", traced_then_all_pictures),
        "app path": lambda: compare_as_the_app_does(pipe, settings),
    }
    with MachineLoad() as load:
        times = time_interleaved(cases, repeats=args.repeats, sync=lambda: synchronize(pipe))
    base = median(times["no trace"])
    overhead = median(times["trace"]) / base - 1
    push = median(times["trace + push map"]) / base - 1
    pictures = median(times["trace + every step's pictures"]) / base - 1
    app = median(times["app path"]) / base - 1
    # The decoder's share: VAE-decoder time beyond the final decode that every call has (≈ 0 for "trace").
    in_trace = median(decoder_seconds["trace"]) - median(decoder_seconds["no trace"])
    in_pictures = median(decoder_seconds["pictures"]) - median(decoder_seconds["no trace"])
    command = command_line("bench_trace", args, ["model", "device", "threads", "repeats", "steps", "size"])
    details = {name: spread(values) for name, values in times.items()}
    details["VAE decoder beyond the final decode, 'trace'"] = f"{in_trace:.3f} s"
    details["VAE decoder beyond the final decode, every step's pictures"] = f"{in_pictures:.3f} s"
    details["other processes' CPU use (cores)"] = round(load.other_cores, 2)
    goal = f"≤ {100 * TRACE_GOAL:.0f} %"
    return [
        Row("trace overhead", f"{100 * overhead:+.1f} %", goal, overhead <= TRACE_GOAL, command, details),
        Row("trace + push map overhead", f"{100 * push:+.1f} %", "reported only", None, command),
        Row("trace + every step's x0 pictures", f"{100 * pictures:+.1f} %", "reported only", None, command),
        Row("app path (live pictures ≤ 10/s, rest after)", f"{100 * app:+.1f} %", "reported only", None, command),
    ]


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
