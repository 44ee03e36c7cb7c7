"""Command line: `python -m negprompt_demo compare --prompt P --negative N --out DIR`.

Its flags are built from `settings.FIELDS`, like the page and the API. Parsing imports no torch or diffusers, so
`--help` and usage errors answer at once. Bad input exits with code 2 and one clear line on stderr; a progress bar
runs on the terminal while sampling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from negprompt_demo.settings import FIELDS, GRID_FIELDS, Field, Kind, default_model

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def add_field_flag(parser: argparse.ArgumentParser, name: str, field: Field) -> None:
    """One `--flag` for a settings field: its type, choices and help, default blank (the model's or random)."""
    flag = "--" + name.replace("_", "-")
    if field.kind is Kind.FLAG:  # --flag / --no-flag; neither: the field's default
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.help)
        return
    bounds = f" ({field.minimum:g}-{field.maximum:g})" if field.minimum is not None and field.is_number else ""
    note = "; default: the model's" if field.model_default else ""
    parser.add_argument(
        flag,
        type=field.python_type,
        choices=list(field.choices) or None,
        required=name == "prompt",
        default=None,
        help=f"{field.help}{bounds}{note}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m negprompt_demo",
        description="Generate one seed with and without a negative prompt and record what guidance did.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="run one paired comparison and write its files")
    sweep = commands.add_parser("sweep", help="when does it act? the negative started at several steps, one call")
    seeds = commands.add_parser("seeds", help="many seeds: no negative, the negative in the prompt, the negative")
    for command in (compare, sweep, seeds):
        for name, field in FIELDS.items():
            add_field_flag(command, name, field)
        command.add_argument(
            "--model",
            default=default_model(),
            help="hub id (owner/name) or local diffusers folder; default: the embedded model (offline)",
        )
    compare.add_argument("--out", required=True, type=Path, help="folder for the PNGs, steps.gif and trace.json")
    sweep.add_argument("--out", required=True, type=Path, help="folder for sweep.png, sweep.json and each image")
    sweep.add_argument(
        "--starts",
        type=lambda text: tuple(float(value) for value in text.split(",")),
        default=None,
        help="fractions of the steps at which the negative starts, comma-separated (default 0,0.1,0.2,0.3,0.5,0.7)",
    )
    seeds.add_argument("--out", required=True, type=Path, help="folder for seeds.png, space.png, seeds.json, images")
    for name, field in GRID_FIELDS.items():
        add_field_flag(seeds, name, field)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"compare": run_compare, "sweep": run_sweep, "seeds": run_seeds}
    return exit_code_of(commands[args.command], args)


def exit_code_of(command, args: argparse.Namespace) -> int:
    """Run a command; the errors a user can act on are one line on stderr and an exit code (2: the input, 1: the
    run or writing its files failed), never a traceback."""
    from negprompt_demo.runner import ModelLoadError, NonFiniteError
    from negprompt_demo.settings import InputError

    try:
        return command(args)
    except (InputError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"error: could not write the outputs: {error}", file=sys.stderr)
        return EXIT_FAILED


def run_compare(args: argparse.Namespace) -> int:
    # Heavy imports after argument parsing, so `--help` and usage errors answer instantly.
    from tqdm import tqdm

    from negprompt_demo.runner import CompareRequest, Done, Step, stream
    from negprompt_demo.settings import CompareSettings
    from negprompt_demo.views.export import write_outputs

    settings = CompareSettings(**{name: getattr(args, name) for name in FIELDS})
    bar = None
    try:
        for event in stream(args.model, CompareRequest(settings)):
            if isinstance(event, Step):
                if bar is None:  # created on the first step, after the settings were checked
                    bar = tqdm(total=event.total, desc="sampling both runs", unit="step", file=sys.stderr)
                bar.update(event.done - bar.n)
            elif isinstance(event, Done):
                comparison = event.comparison
    finally:
        if bar is not None:
            bar.close()
    paths = write_outputs(comparison, args.out)

    settings = comparison.settings
    print(f"model {comparison.model} · seed {settings.seed} · {settings.steps} steps · {comparison.seconds:.2f} s")
    for warning in comparison.warnings:
        print(f"warning: {warning}")
    print(f"wrote {', '.join(path.name for path in paths.values())} to {args.out}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    """The `sweep` command: the images in a row with their labels (sweep.png), each image and sweep.json."""
    import json

    from negprompt_demo.runner import SWEEP_STARTS, SweepDone, SweepRequest, stream
    from negprompt_demo.settings import CompareSettings
    from negprompt_demo.views.attributes import sweep_reading
    from negprompt_demo.views.visualize import sweep_labels, sweep_picture

    settings = CompareSettings(**{name: getattr(args, name) for name in FIELDS})
    starts = args.starts or SWEEP_STARTS
    if any(not 0 <= start <= 1 for start in starts):
        print("error: every start must be between 0 and 1.", file=sys.stderr)
        return EXIT_BAD_INPUT
    events = list(stream(args.model, SweepRequest(settings, tuple(starts))))
    sweep = next(event.sweep for event in events if isinstance(event, SweepDone))
    args.out.mkdir(parents=True, exist_ok=True)
    marks, reading = sweep_reading(sweep)
    sweep_picture(sweep, marks).save(args.out / "sweep.png")
    for i, image in enumerate([sweep.without_negative, *sweep.with_negative]):
        image.save(args.out / f"sweep_{i}.png")
    info = {"settings": sweep.settings.as_dict(), "model": sweep.model, "labels": sweep_labels(sweep)}
    info["marks"], info["reading"] = marks, reading
    (args.out / "sweep.json").write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"model {sweep.model} · seed {sweep.settings.seed} · {sweep.seconds:.2f} s · {info['reading']}")
    print(f"wrote sweep.png, sweep.json and {len(sweep.with_negative) + 1} images to {args.out}")
    return 0


def run_seeds(args: argparse.Namespace) -> int:
    """The `seeds` command: the grids with the probe's marks (seeds.png), the sampling space where the probe knows
    the attribute (space.png), every image and seeds.json (rates with intervals, side effects)."""
    import json

    from negprompt_demo.runner import SeedsDone, SeedsRequest, stream
    from negprompt_demo.settings import CompareSettings, resolve_grid
    from negprompt_demo.views.attributes import grid_document, grid_reading
    from negprompt_demo.views.seed_pictures import figure_image, marked_grid_picture, sampling_space_figure

    settings = CompareSettings(**{name: getattr(args, name) for name in FIELDS})
    job = SeedsRequest(settings, *resolve_grid(args.seed_count, args.phrased))
    grid = next(event.grid for event in stream(args.model, job) if isinstance(event, SeedsDone))
    args.out.mkdir(parents=True, exist_ok=True)
    reading = grid_reading(grid)
    marked_grid_picture(grid).save(args.out / "seeds.png")
    if reading is not None and reading.attribute is not None:
        space = sampling_space_figure(reading, reading.attribute, grid.settings.negative, grid.columns)
        figure_image(space).save(args.out / "space.png")
    for column in grid.columns:
        for seed, image in zip(grid.seeds, grid.images[column]):
            image.save(args.out / f"{column}_{seed}.png")
    document = grid_document(grid, reading)
    (args.out / "seeds.json").write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    rates = document.get("rates", {})
    attribute = document.get("attribute")
    if attribute:
        line = " → ".join(f"{c} {rates[c][attribute]['present']}/{rates[c][attribute]['total']}" for c in rates)
        print(f"{attribute}: {line}")
    print(f"model {grid.model} · seeds {grid.seeds[0]}–{grid.seeds[-1]} · {grid.seconds:.2f} s · wrote {args.out}")
    return 0
