"""What Normalized Attention Guidance costs (issue 21): a comparison with the negative through NAG at guidance 1
against one through CFG's negative branch (goal ≤ 0.65×: one batch item per run plus the extra attention over the
negative's tokens, instead of two items), and NAG beside CFG against CFG alone (goal ≤ 1.3×); the guidance-1
comparison without NAG is timed too, so the attention's own cost shows. Cases interleaved, ratios from one run, on
a model whose UNet dominates the step (a CPU's UNet cost grows with its batch):

    python -m benchmarks.bench_nag --model sd15-random --size 256 --steps 4 --repeats 1 --threads 1  # CPU
    python -m benchmarks.bench_nag --steps 20 --repeats 3                                             # embedded
    python -m benchmarks.bench_nag --model sd15-random --device cuda --size 512 --steps 30            # GPU
"""

from __future__ import annotations

import argparse

from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    SEED,
    MachineLoad,
    Row,
    command_line,
    median,
    model_benchmark_main,
    spread,
    synchronize,
    time_interleaved,
)
from negprompt_demo.engine import compare
from negprompt_demo.settings import CompareSettings

GOALS = {"NAG at guidance 1 vs CFG": 0.65, "NAG + CFG vs CFG": 1.3}


def run(args: argparse.Namespace, pipe) -> list[Row]:
    settings = CompareSettings(
        PROMPT, NEGATIVE, seed=SEED, steps=args.steps, width=args.size, height=args.size, scheduler="Euler",
        guidance=7.5, push_map=False,
    )  # fmt: skip
    cases = {
        "guidance 1, no NAG": lambda: compare(pipe, settings.replace(guidance=1.0), trace=False),
        "guidance 1, NAG": lambda: compare(pipe, settings.replace(guidance=1.0, negative_mode="nag"), trace=False),
        "CFG": lambda: compare(pipe, settings, trace=False),
        "NAG + CFG": lambda: compare(pipe, settings.replace(negative_mode="both"), trace=False),
    }
    with MachineLoad() as load:
        times = time_interleaved(cases, args.repeats, sync=lambda: synchronize(pipe))
    cfg = median(times["CFG"])
    nag_g1, both = median(times["guidance 1, NAG"]) / cfg, median(times["NAG + CFG"]) / cfg
    attention = median(times["guidance 1, NAG"]) / median(times["guidance 1, no NAG"])
    command = command_line("bench_nag", args, ["model", "device", "threads", "size", "steps", "repeats"])
    details = {name: spread(values) for name, values in times.items()}
    details["other processes' CPU use (cores)"] = round(load.other_cores, 2)
    goal_g1, goal_both = GOALS["NAG at guidance 1 vs CFG"], GOALS["NAG + CFG vs CFG"]
    return [
        Row("NAG at guidance 1 vs CFG with the negative (paired comparison)", f"{nag_g1:.2f}×", f"≤ {goal_g1}×",
            nag_g1 <= goal_g1, command, details),
        Row("NAG + CFG vs CFG", f"{both:.2f}×", f"≤ {goal_both}×", both <= goal_both, command, {}),
        Row("NAG at guidance 1 vs the plain guidance-1 comparison", f"{attention:.2f}×", "—", None, command, {}),
    ]  # fmt: skip


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
