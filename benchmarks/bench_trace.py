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
    MachineLoad,
    Row,
    add_common_arguments,
    command_line,
    configure_threads,
    load_model,
    machine_state,
    median,
    print_table,
    spread,
    synchronize,
    time_interleaved,
    write_json,
)
from negprompt_demo.engine import compare, prepare
from negprompt_demo.settings import CompareSettings

TRACE_GOAL = 0.05


def run(args: argparse.Namespace, pipe) -> list[Row]:
    size = {"width": args.size, "height": args.size}
    settings, _ = prepare(pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=args.steps, **size))
    with_push = settings.replace(push_map=True)

    def live(done: int, total: int, record) -> None:
        """What the app's step callback needs: the record, with its previews (decoded by the engine)."""

    cases = {
        "no trace": lambda: compare(pipe, settings, trace=False),
        "trace": lambda: compare(pipe, settings, trace=True),
        "trace + push map": lambda: compare(pipe, with_push, trace=True),
        "trace, live previews (app)": lambda: compare(pipe, settings, trace=True, on_step=live),
    }
    with MachineLoad() as load:
        times = time_interleaved(cases, repeats=args.repeats, sync=lambda: synchronize(pipe))
    base = median(times["no trace"])
    overhead = median(times["trace"]) / base - 1
    push = median(times["trace + push map"]) / base - 1
    live_overhead = median(times["trace, live previews (app)"]) / base - 1
    command = command_line("bench_trace", args, ["model", "device", "threads", "repeats", "steps", "size"])
    details = {name: spread(values) for name, values in times.items()}
    details["other processes' CPU use (cores)"] = round(load.other_cores, 2)
    return [
        Row(
            "trace overhead",
            f"{100 * overhead:+.1f} %",
            f"≤ {100 * TRACE_GOAL:.0f} %",
            overhead <= TRACE_GOAL,
            command,
            details,
        ),
        Row("trace + push map overhead", f"{100 * push:+.1f} %", "reported only", None, command, {}),
        Row("trace, live previews (app path)", f"{100 * live_overhead:+.1f} %", "reported only", None, command, {}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    args = parser.parse_args()
    configure_threads(args.threads)
    pipe = load_model(args.model, args.device)
    rows = run(args, pipe)
    print(rows[0].details)
    state = machine_state(pipe)
    print_table(rows, state)
    write_json(args.json, rows, state)


if __name__ == "__main__":
    main()
