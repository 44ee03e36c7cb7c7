"""Benchmark 2: what the guidance trace costs. The paired call with the trace vs without (goal ≤ 5 %), and,
reported separately, with the negative-push map (one extra UNet batch item per step, so about +25 % UNet work).

Also times the paired call the way the app runs it (a step callback that decodes both previews live), so the
figure users see is on record too.

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
    median,
    model_benchmark_main,
    spread,
    synchronize,
    time_interleaved,
)
from negprompt_demo.engine import compare, prepare
from negprompt_demo.settings import CompareSettings

TRACE_GOAL = 0.05


def run(args: argparse.Namespace, pipe) -> list[Row]:
    size = {"width": args.size, "height": args.size}
    settings, _ = prepare(pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=args.steps, **size))
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

    cases = {
        "no trace": timed_decoder("no trace", lambda: compare(pipe, settings, trace=False)),
        "trace": timed_decoder("trace", lambda: compare(pipe, settings, trace=True)),
        "trace + push map": lambda: compare(pipe, with_push, trace=True),
        "trace, live previews (app)": lambda: compare(pipe, settings, on_step=lambda done, total, record: None),
    }
    with MachineLoad() as load:
        times = time_interleaved(cases, repeats=args.repeats, sync=lambda: synchronize(pipe))
    base = median(times["no trace"])
    overhead = median(times["trace"]) / base - 1
    # The previews' share: VAE-decoder time beyond the final decode that every call has.
    previews = median(decoder_seconds["trace"]) - median(decoder_seconds["no trace"])
    capture = (median(times["trace"]) - previews) / base - 1
    push = median(times["trace + push map"]) / base - 1
    live_overhead = median(times["trace, live previews (app)"]) / base - 1
    command = command_line("bench_trace", args, ["model", "device", "threads", "repeats", "steps", "size"])
    details = {name: spread(values) for name, values in times.items()}
    details["previews' VAE decode inside 'trace'"] = f"{previews:.3f} s ({100 * previews / base:.1f} % of 'no trace')"
    details["other processes' CPU use (cores)"] = round(load.other_cores, 2)
    goal = f"≤ {100 * TRACE_GOAL:.0f} %"
    return [
        Row("trace overhead (all of it)", f"{100 * overhead:+.1f} %", goal, overhead <= TRACE_GOAL, command, details),
        Row(
            "  of which trace capture (hooks, records)", f"{100 * capture:+.1f} %", goal, capture <= TRACE_GOAL, command
        ),
        Row("  of which x0 previews (VAE decodes)", f"{100 * previews / base:+.1f} %", "reported only", None, command),
        Row("trace + push map overhead", f"{100 * push:+.1f} %", "reported only", None, command),
        Row("trace, live previews (app path)", f"{100 * live_overhead:+.1f} %", "reported only", None, command),
    ]


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
