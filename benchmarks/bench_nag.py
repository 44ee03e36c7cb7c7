"""What Normalized Attention Guidance costs (issue 21): a comparison with the negative through NAG at guidance 1
against one through CFG's negative branch (goal ≤ 0.65×: one batch item per run plus the extra attention over the
negative's tokens, instead of two items), and NAG beside CFG against CFG alone (goal ≤ 1.3×); the guidance-1
comparison without NAG is timed too, so the attention's own cost shows. The issue's goal is per *run*, so single
images are timed as well, through the pipeline itself: one image with the negative through CFG (2 UNet items per
step) against one through NAG at guidance 1 (1 item plus the extra attention), and a plain guidance-1 image. Cases
interleaved, ratios from one run, on a model whose UNet dominates the step (a CPU's UNet cost grows with its batch):

    python -m benchmarks.bench_nag --model sd15-random --size 256 --steps 4 --repeats 1 --threads 1  # CPU
    python -m benchmarks.bench_nag --steps 20 --repeats 3                                             # embedded
    python -m benchmarks.bench_nag --model sd15-random --device cuda --size 512 --steps 30            # GPU
"""

from __future__ import annotations

import argparse

import torch

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
from negprompt_demo.models.prompts import encode_text
from negprompt_demo.sampling.engine import compare
from negprompt_demo.sampling.guidance import NegativePlan
from negprompt_demo.sampling.hooks import BatchRows, DenoiserCall
from negprompt_demo.sampling.nag import NagAttention
from negprompt_demo.settings import NAG_DEFAULTS, CompareSettings

GOALS = {"NAG at guidance 1 vs CFG": 0.65, "NAG + CFG vs CFG": 1.3}


def single_image_cases(pipe, args: argparse.Namespace) -> dict:
    """One image through the pipeline: the negative through CFG, through NAG at guidance 1 (`nag.NagAttention` on
    every cross-attention layer, at every step, the authors' defaults), and no negative at guidance 1."""
    size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    common = {"num_inference_steps": args.steps, "width": size, "height": size, "output_type": "np"}

    def image(**kwargs):
        return pipe(PROMPT, generator=torch.Generator().manual_seed(SEED), **common, **kwargs)

    def nag_image():
        context, _ = encode_text(pipe, NEGATIVE, None)
        latent = size // pipe.vae_scale_factor
        one_image = DenoiserCall(0, BatchRows.text_only(1))  # a plain call of one image: its text item is row 0
        nag = NagAttention(
            pipe.unet, one_image, [NegativePlan(0, args.steps)], [0], context, NAG_DEFAULTS["nag_scale"],
            NAG_DEFAULTS["nag_tau"], NAG_DEFAULTS["nag_alpha"], (latent, latent),
        )  # fmt: skip
        with nag:
            return image(guidance_scale=1.0)

    return {
        "one image: CFG": lambda: image(negative_prompt=NEGATIVE, guidance_scale=7.5),
        "one image: NAG at guidance 1": nag_image,
        "one image: guidance 1, no negative": lambda: image(guidance_scale=1.0),
    }


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
    } | single_image_cases(pipe, args)
    with MachineLoad() as load:
        times = time_interleaved(cases, args.repeats, sync=lambda: synchronize(pipe))
    cfg = median(times["CFG"])
    nag_g1, both = median(times["guidance 1, NAG"]) / cfg, median(times["NAG + CFG"]) / cfg
    attention = median(times["guidance 1, NAG"]) / median(times["guidance 1, no NAG"])
    one_cfg = median(times["one image: CFG"])
    one_nag = median(times["one image: NAG at guidance 1"]) / one_cfg
    one_plain = median(times["one image: guidance 1, no negative"]) / one_cfg
    command = command_line("bench_nag", args, ["model", "device", "threads", "size", "steps", "repeats"])
    details = {name: spread(values) for name, values in times.items()}
    details["other processes' CPU use (cores)"] = round(load.other_cores, 2)
    goal_g1, goal_both = GOALS["NAG at guidance 1 vs CFG"], GOALS["NAG + CFG vs CFG"]
    return [
        Row("NAG at guidance 1 vs CFG with the negative (paired comparison)", f"{nag_g1:.2f}×", f"≤ {goal_g1}×",
            nag_g1 <= goal_g1, command, details),
        Row("NAG + CFG vs CFG", f"{both:.2f}×", f"≤ {goal_both}×", both <= goal_both, command, {}),
        Row("NAG at guidance 1 vs the plain guidance-1 comparison", f"{attention:.2f}×", "—", None, command, {}),
        Row("One image: NAG at guidance 1 vs CFG with the negative (per run, the issue's goal)", f"{one_nag:.2f}×",
            f"≤ {goal_g1}×", one_nag <= goal_g1, command, {}),
        Row("One image: plain guidance 1 vs CFG with the negative (the floor)", f"{one_plain:.2f}×", "—", None,
            command, {}),
    ]  # fmt: skip


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
