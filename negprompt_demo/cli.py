"""Command line: `python -m negprompt_demo compare --prompt P --negative N --out DIR`.

Bad input exits with code 2 and one clear line on stderr; a progress bar runs on the terminal while sampling.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from negprompt_demo.settings import MAX_GUIDANCE, MAX_STEPS, SCHEDULERS

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m negprompt_demo",
        description="Generate one seed with and without a negative prompt and record what guidance did.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="run one paired comparison and write its files")
    compare.add_argument("--prompt", required=True, help="what the image should show")
    compare.add_argument("--negative", default="", help="the negative prompt to compare against an empty one")
    compare.add_argument("--seed", type=int, default=None, help="random seed (default: random; always reported)")
    compare.add_argument("--steps", type=int, default=None, help=f"denoising steps, 1-{MAX_STEPS}")
    compare.add_argument("--guidance", type=float, default=None, help=f"guidance scale, 0-{MAX_GUIDANCE:g}")
    compare.add_argument("--scheduler", default=None, choices=list(SCHEDULERS), help="sampler, same for both runs")
    compare.add_argument("--width", type=int, default=None, help="image width in px (multiple of 8)")
    compare.add_argument("--height", type=int, default=None, help="image height in px (multiple of 8)")
    compare.add_argument(
        "--model",
        default=os.environ.get("NEGPROMPT_MODEL"),
        help="hub id (owner/name) or local diffusers folder; default: the embedded model (offline)",
    )
    compare.add_argument("--push-map", action="store_true", help="also record where the negative prompt pushes")
    compare.add_argument("--out", required=True, type=Path, help="folder for the PNGs, steps.gif and trace.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_compare(args)


def run_compare(args: argparse.Namespace) -> int:
    # Heavy imports after argument parsing, so `--help` and usage errors answer instantly.
    from tqdm import tqdm

    from negprompt_demo.engine import GenerationCancelled, NonFiniteError, compare
    from negprompt_demo.export import write_outputs
    from negprompt_demo.loading import ModelLoadError, load_pipeline, model_defaults
    from negprompt_demo.previews import fill_previews
    from negprompt_demo.settings import CompareSettings, InputError

    try:
        pipe = load_pipeline(args.model)
        defaults = model_defaults(pipe)
        settings = CompareSettings(
            prompt=args.prompt,
            negative=args.negative,
            seed=args.seed,
            steps=args.steps if args.steps is not None else defaults.get("steps", 25),
            guidance=args.guidance if args.guidance is not None else defaults.get("guidance", 7.5),
            scheduler=args.scheduler or defaults.get("scheduler", "Euler"),
            width=args.width,
            height=args.height,
            push_map=args.push_map,
        )
        bar = None

        def on_step(done: int, total: int, record) -> None:
            nonlocal bar
            if bar is None:  # created on the first step, after the settings were validated
                bar = tqdm(total=total, desc="sampling both runs", unit="step", file=sys.stderr)
            bar.update(done - bar.n)

        try:
            comparison = compare(pipe, settings, on_step=on_step)
        finally:
            if bar is not None:
                bar.close()
        fill_previews(pipe, comparison.trace.steps)  # the pictures of steps.gif
        paths = write_outputs(comparison, args.out)
    except (InputError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (NonFiniteError, GenerationCancelled) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"error: could not write the outputs: {error}", file=sys.stderr)
        return EXIT_FAILED

    settings = comparison.settings
    print(f"model {comparison.model} · seed {settings.seed} · {settings.steps} steps · {comparison.seconds:.2f} s")
    for warning in comparison.warnings:
        print(f"warning: {warning}")
    print(f"wrote {', '.join(path.name for path in paths.values())} to {args.out}")
    return 0
