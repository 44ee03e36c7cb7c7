"""Profile: where a comparison's time goes, per component, for the naive way, the paired call without the trace
and with it. Each component's time is measured by forward hooks around it (UNet, VAE decoder, text encoder);
"other" is everything else (scheduler, the tracer's per-step records, Python). `--torch-profiler` adds the
operator table of torch.profiler for the paired call with the trace.

Also an A/B of the one fix made from this profile: decoding the previews from channels-last latents on CPU.

    python -m benchmarks.profile_trace
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from benchmarks.bench_paired import naive_pair
from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    SEED,
    ComponentTimer,
    add_common_arguments,
    compare_as_the_app_does,
    load_model,
    machine_state,
    median,
    time_interleaved,
)
from negprompt_demo.models.previews import decode_previews
from negprompt_demo.sampling.engine import compare, prepare
from negprompt_demo.settings import CompareSettings


def breakdown(pipe, run, repeats: int) -> dict[str, float]:
    """Median seconds per component over `repeats` runs of `run` (after one warm-up)."""
    run()
    samples = defaultdict(list)
    for _ in range(repeats):
        timer = ComponentTimer({"UNet": pipe.unet, "VAE decoder": pipe.vae.decoder, "text encoder": pipe.text_encoder})
        started = time.perf_counter()
        try:
            run()
        finally:
            timer.remove()
        total = time.perf_counter() - started
        for name, seconds in timer.seconds.items():
            samples[f"{name} ({timer.calls[name]} calls)"].append(seconds)
        samples["other"].append(total - sum(timer.seconds.values()))
        samples["total"].append(total)
    return {name: median(values) for name, values in samples.items()}


def preview_decode_ab(pipe, steps: int, repeats: int) -> dict[str, float]:
    """The previews of `steps` steps (2 × steps latents), decoded as before the fixes (contiguous fp32 latents)
    and by `decode_previews` as it is now (channels-last; bf16 where the CPU has it)."""
    vae = pipe.vae
    side = pipe.unet.config.sample_size
    latents = torch.randn(2 * steps, vae.config.latent_channels, side, side, device=vae.device, dtype=vae.dtype)

    def before() -> None:
        images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0].float()
        ((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")

    with torch.no_grad():
        times = time_interleaved({"before": before, "after": lambda: decode_previews(pipe, latents)}, repeats=repeats)
    return {name: median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--torch-profiler", action="store_true")
    args = parser.parse_args()
    pipe = load_model(args.model, args.device, args.threads)
    size = {"width": args.size, "height": args.size}
    prepared = prepare(pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=args.steps, **size))
    settings = prepared.settings

    print(machine_state(pipe))
    for label, run in (
        ("naive (two plain calls)", lambda: naive_pair(pipe, settings)),
        ("paired, no trace", lambda: compare(pipe, settings, trace=False)),
        ("paired, trace", lambda: compare(pipe, settings, trace=True)),
        ("paired, trace, x0 pictures (app)", lambda: compare_as_the_app_does(pipe, settings)),
    ):
        parts = breakdown(pipe, run, args.repeats)
        print(f"\n{label}: {parts.pop('total'):.3f} s")
        for name, seconds in parts.items():
            print(f"  {name:28s} {seconds:.3f} s")

    if pipe.device.type == "cpu":
        ab = preview_decode_ab(pipe, settings.steps, args.repeats)
        before, after = ab["before"], ab["after"]
        print(
            f"\npreviews' VAE decode, {2 * settings.steps} latents: before {before:.3f} s, after {after:.3f} s "
            f"({before / after:.2f}× faster)"
        )

    if args.torch_profiler:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pipe.device.type == "cuda" else [])
        with profile(activities=activities) as profiler:
            compare(pipe, settings, trace=True)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
