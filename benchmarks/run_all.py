"""Every benchmark in one run, the summary table printed last (what docs/BENCHMARKS.md shows).

    python -m benchmarks.run_all                     # CPU, embedded model: all rows
    python -m benchmarks.run_all --model sd15-random --device cuda --size 512
                                                     # GPU, SD-1.5 architecture, fp16: paired, trace, attention,
                                                     # scaling

The model is loaded once for the in-process rows (paired, trace, scaling, memory); the embedded-model and
cold-start rows start fresh processes of their own.
"""

from __future__ import annotations

import argparse

from benchmarks import (
    bench_attention,
    bench_cold_start,
    bench_embedded,
    bench_memory,
    bench_paired,
    bench_scaling,
    bench_scrub,
    bench_seeds,
    bench_trace,
)
from benchmarks.common import (
    SD15_RANDOM,
    add_common_arguments,
    load_model,
    machine_state,
    print_table,
    write_json,
)

ALL = ("paired", "trace", "attention", "embedded", "cold_start", "scaling", "memory", "scrub", "seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--only", nargs="+", choices=ALL, default=None, help="run only these benchmarks")
    args = parser.parse_args()
    chosen = set(args.only or ALL)
    if args.model == SD15_RANDOM or args.device == "cuda":
        chosen -= {"embedded", "cold_start", "memory", "scrub"}  # CPU/embedded-model figures
    pipe = load_model(args.model, args.device, args.threads)

    rows = []
    in_process = (("paired", bench_paired), ("trace", bench_trace), ("attention", bench_attention))
    for name, module in (*in_process, ("scaling", bench_scaling), ("seeds", bench_seeds)):
        if name in chosen:
            rows += module.run(args, pipe)
            print(f"{name}: done", flush=True)
    if "memory" in chosen:
        rows += bench_memory.run(args, pipe)
        print("memory: done", flush=True)
    if "scrub" in chosen:
        rows += bench_scrub.run(args, pipe)
        print("scrub: done", flush=True)
    if "embedded" in chosen:
        rows += bench_embedded.run(args)
        print("embedded: done", flush=True)
    if "cold_start" in chosen:
        rows += bench_cold_start.run(argparse.Namespace(model=args.model, repeats=args.repeats))
        print("cold start: done", flush=True)

    for row in rows:
        if row.details:
            print(f"\n{row.name}:")
            for key, value in row.details.items():
                print(f"  {key}: {value}")
    state = machine_state(pipe)
    print_table(rows, state)
    write_json(args.json, rows, state)


if __name__ == "__main__":
    main()
