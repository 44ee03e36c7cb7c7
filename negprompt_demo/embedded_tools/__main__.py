"""Command line of the embedded model's tools: train it, measure it, draw its evidence.

python -m negprompt_demo.embedded_tools train [--steps N] [--bpe bpe_simple_vocab_16e6.txt.gz]
python -m negprompt_demo.embedded_tools tokenizer --bpe FILE --out DIR
python -m negprompt_demo.embedded_tools probe-train | probe-accuracy
python -m negprompt_demo.embedded_tools evaluate --prompt P --negative N --attribute A [--seeds 0:64]
python -m negprompt_demo.embedded_tools table [--seeds 0:256] | grid
python -m negprompt_demo.embedded_tools delayed [--seeds 0:256] [--threads 1]
python -m negprompt_demo.embedded_tools side-effects [--first-seed 5000 --count 96]
python -m negprompt_demo.embedded_tools attention [--seeds-per-attribute 64] [--threads 1]
python -m negprompt_demo.embedded_tools nag [--seeds 5000:5064] [--negatives mustache,hat] [--threads 1]

Settings not given (guidance, steps, scheduler) are the loaded model's defaults, as in the app.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

# Heavy modules (torch, diffusers, the engine) are imported inside the commands, so that --help is instant.

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _set_threads(threads: int | None) -> None:
    """A fixed torch CPU thread count (1 on a busy shared machine); None keeps torch's choice."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _load_vae(checkpoint: Path | None) -> AutoencoderKL:
    """The shipped model's VAE, or the one in a training checkpoint (to train the probe mid-run)."""
    import torch
    from diffusers import AutoencoderKL

    from negprompt_demo.embedded import MODEL_DIR
    from negprompt_demo.embedded_tools.architecture import build_vae

    if checkpoint is None:
        return AutoencoderKL.from_pretrained(MODEL_DIR / "vae").eval()
    vae = build_vae()
    vae.load_state_dict(torch.load(checkpoint, map_location="cpu")["model"])
    return vae.eval()


def train_command(args: argparse.Namespace) -> None:
    """`train`: sizes not given keep TrainConfig's, the ones the shipped model was trained with."""
    from negprompt_demo.embedded_tools.train import TrainConfig, train

    sizes = {
        "out_dir": args.out,
        "steps": args.steps,
        "vae_steps": args.vae_steps,
        "images": args.images,
        "vae_images": args.vae_images,
        "batch": args.batch,
    }
    given = {name: value for name, value in sizes.items() if value is not None}
    train(TrainConfig(run_dir=args.run_dir, seed=args.seed, threads=args.threads, **given), args.bpe)


def tokenizer_command(args: argparse.Namespace) -> None:
    """`tokenizer`: only needed to re-derive the committed tokenizer files."""
    from negprompt_demo.embedded_tools.clip_vocab import derive_tokenizer_files

    derive_tokenizer_files(args.bpe, args.out)


def probe_train_command(args: argparse.Namespace) -> None:
    """`probe-train`: retrain the probe; only needed when the VAE changes."""
    from negprompt_demo.embedded_tools.probe_training import train_probe

    _set_threads(args.threads)
    train_probe(_load_vae(args.vae_checkpoint), n=args.images, steps=args.steps)


def probe_accuracy_command(args: argparse.Namespace) -> None:
    """`probe-accuracy`: print the probe's accuracy and write it next to docs/EMBEDDED.md, which quotes it."""
    from negprompt_demo.embedded_tools.probe_training import probe_accuracy

    result = json.dumps(probe_accuracy(_load_vae(args.vae_checkpoint)), indent=2)
    print(result)
    (DOCS / "embedded_probe_accuracy.json").write_text(result + "\n")


def evaluate_command(args: argparse.Namespace) -> None:
    """`evaluate`: one row, as JSON on stdout."""
    from negprompt_demo.embedded_tools.evaluate import evaluate, parse_seeds

    seeds = parse_seeds(args.seeds)
    result = evaluate(
        args.prompt, args.negative, args.attribute, seeds, args.model, args.guidance, args.steps, args.scheduler
    )
    print(json.dumps(result, indent=2))


def table_command(args: argparse.Namespace) -> None:
    """`table`: measure (or merge parallel parts of) the results table, written as OUT.json and OUT.md."""
    from negprompt_demo.embedded_tools.evaluate import (
        merge_tables,
        parse_seeds,
        results_table,
        sampling_settings,
        table_markdown,
    )
    from negprompt_demo.models.loading import load_pipeline

    _set_threads(args.threads)
    if args.merge:
        res = merge_tables([json.loads(path.read_text()) for path in args.merge])
    else:
        pipe = load_pipeline(None)
        settings = sampling_settings(pipe, guidance=args.guidance)
        attributes = args.attributes.split(",")
        res = results_table(pipe, parse_seeds(args.seeds), attributes, **settings, unrelated=not args.no_unrelated)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table_markdown(res))
    print(table_markdown(res))


def grid_command(args: argparse.Namespace) -> None:
    """`grid`: the sample grid of docs/EMBEDDED.md and its probe-check companion, for looking by eye."""
    from negprompt_demo.embedded.probe import Probe
    from negprompt_demo.embedded_tools.evaluate import (
        BASE_PROMPT,
        parse_seeds,
        probe_check_grid,
        probe_pairs,
        sample_grid,
        sampling_settings,
    )
    from negprompt_demo.models.loading import load_pipeline

    pipe, probe = load_pipeline(None), Probe()
    seeds = parse_seeds(args.seeds)
    _, pairs = probe_pairs(pipe, BASE_PROMPT, args.attribute, seeds, probe, **sampling_settings(pipe), keep_images=True)
    titles = (f'"{BASE_PROMPT}"', f'same seeds + negative "{args.attribute}"')
    sample_grid(pairs, probe, args.attribute, titles).save(args.out)
    check = args.out.with_name(args.out.stem + "_probe_check.png")
    probe_check_grid([p[0] for p in pairs] + [p[1] for p in pairs], probe).save(check)
    print(f"wrote {args.out} and {check}")


def delayed_command(args: argparse.Namespace) -> None:
    """`delayed`: the negative prompt's window swept (Ban et al.'s delayed effect), written as OUT.json and OUT.md."""
    from negprompt_demo.embedded_tools.delayed import delayed_effect, delayed_markdown, write_results
    from negprompt_demo.embedded_tools.evaluate import parse_seeds, sampling_settings
    from negprompt_demo.models.loading import load_pipeline

    _set_threads(args.threads)
    pipe = load_pipeline(None)
    attributes = tuple(args.attributes.split(","))
    res = delayed_effect(pipe, parse_seeds(args.seeds), attributes, **sampling_settings(pipe), chunk=args.chunk)
    write_results(res, args.out)
    print(delayed_markdown(res))


def side_effects_command(args: argparse.Namespace) -> None:
    """`side-effects`: every attribute's rate without and with each negative, written as OUT.json and OUT.md."""
    from negprompt_demo.embedded_tools.side_effects import side_effects_tables, write_side_effects
    from negprompt_demo.models.loading import load_pipeline

    _set_threads(args.threads)
    results = side_effects_tables(load_pipeline(None), args.first_seed, args.count, args.negatives.split(","))
    write_side_effects(results, args.out)


def attention_command(args: argparse.Namespace) -> None:
    """`attention`: where the negative word's cross-attention map lands vs where the attribute is drawn."""
    from negprompt_demo.embedded_tools.attention_study import attention_study, study_markdown, write_study
    from negprompt_demo.embedded_tools.evaluate import sampling_settings
    from negprompt_demo.models.loading import load_pipeline

    _set_threads(args.threads)
    pipe = load_pipeline(None)
    res, runs = attention_study(pipe, args.seeds_per_attribute, sampling_settings(pipe))
    write_study(res, runs, args.out)
    print(study_markdown(res))


def nag_command(args: argparse.Namespace) -> None:
    """`nag`: attribute rates with the negative through NAG, CFG and both, and at guidance 1 (nag_study.py)."""
    from negprompt_demo.embedded_tools.evaluate import parse_seeds, sampling_settings
    from negprompt_demo.embedded_tools.nag_study import nag_study, write_study
    from negprompt_demo.models.loading import load_pipeline

    _set_threads(args.threads)
    pipe = load_pipeline(None)
    nag = {name: value for name, value in (("nag_scale", args.scale), ("nag_tau", args.tau)) if value is not None}
    nag |= {} if args.alpha is None else {"nag_alpha": args.alpha}
    variants = [json.loads(text) for text in args.variant]
    results = nag_study(
        pipe, parse_seeds(args.seeds), args.negatives.split(","), sampling_settings(pipe), nag, variants
    )
    write_study(results, args.out)


def _add_training_commands(sub: argparse._SubParsersAction) -> None:
    """train, tokenizer, probe-train, probe-accuracy: they write model and probe files."""
    p = sub.add_parser("train", help="train VAE, UNet and text encoder from scratch; write the model folder")
    p.add_argument("--bpe", type=Path, default=None, help="CLIP's bpe_simple_vocab_16e6.txt.gz (else reuse)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/embedded"), help="checkpoints and logs")
    p.add_argument("--out", type=Path, default=None, help="model folder (default: the shipped one)")
    p.add_argument("--steps", type=int, default=None, help="diffusion training steps")
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument("--images", type=int, default=None, help="training portraits")
    p.add_argument("--vae-images", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy shared machine)")
    p.set_defaults(func=train_command)

    p = sub.add_parser("tokenizer", help="derive CLIPTokenizer files from CLIP's BPE merges")
    p.add_argument("--bpe", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=tokenizer_command)

    p = sub.add_parser("probe-train", help="train the attribute probe (uses the shipped model's VAE)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--images", type=int, default=12000)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy shared machine)")
    p.add_argument("--vae-checkpoint", type=Path, default=None, help="e.g. runs/embedded/vae.pt")
    p.set_defaults(func=probe_train_command)

    p = sub.add_parser("probe-accuracy", help="probe accuracy on held-out drawn portraits and VAE round trips")
    p.add_argument("--vae-checkpoint", type=Path, default=None)
    p.set_defaults(func=probe_accuracy_command)


def _add_measuring_commands(sub: argparse._SubParsersAction) -> None:
    """evaluate, table, grid: they generate through the app's engine and read the images with the probe."""
    p = sub.add_parser("evaluate", help="attribute rate over seeds, empty negative vs NEGATIVE (JSON)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--attribute", required=True, help="mustache, beard, glasses, hat, earrings or smile")
    p.add_argument("--seeds", default="0:64", help="'start:stop' or a comma list")
    p.add_argument("--model", default=None, help="default: the embedded model")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's (negprompt_defaults.json)")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--scheduler", default=None, help="default: the model's")
    p.set_defaults(func=evaluate_command)

    p = sub.add_parser("table", help="the results table of docs/EMBEDDED.md")
    p.add_argument("--seeds", default="0:256")
    p.add_argument("--attributes", default="mustache,glasses,hat,beard,earrings")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's")
    p.add_argument("--out", type=Path, default=DOCS / "embedded_results", help="writes OUT.json and OUT.md")
    p.add_argument("--no-unrelated", action="store_true", help="skip the unrelated-negative row")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="instead of measuring, merge these JSON parts (disjoint --attributes runs) into --out",
    )
    p.set_defaults(func=table_command)

    p = sub.add_parser("grid", help="sample grids: plain prompt vs negative 'mustache', and probe calls")
    p.add_argument("--seeds", default="0:32")
    p.add_argument("--attribute", default="mustache")
    p.add_argument("--out", type=Path, default=DOCS / "embedded_grid.png")
    p.set_defaults(func=grid_command)

    p = sub.add_parser("delayed", help="attribute rate vs the negative's start and end step (Ban et al. 2024)")
    p.add_argument("--seeds", default="0:256", help="'start:stop' or a comma list")
    p.add_argument("--attributes", default="mustache,hat", help="each is also its negative prompt")
    p.add_argument("--chunk", type=int, default=64, help="seeds per generate_pairs call")
    p.add_argument("--out", type=Path, default=DOCS / "delayed_effect", help="writes OUT.json and OUT.md")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy shared machine)")
    p.set_defaults(func=delayed_command)

    p = sub.add_parser("side-effects", help="every attribute's rate without and with each attribute as the negative")
    p.add_argument("--first-seed", type=int, default=5000, help="held out: the model and probe never saw these")
    p.add_argument("--count", type=int, default=96)
    p.add_argument("--negatives", default="mustache,beard,glasses,hat,earrings,smile")
    p.add_argument("--out", type=Path, default=DOCS / "side_effects", help="writes OUT.json and OUT.md")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy shared machine)")
    p.set_defaults(func=side_effects_command)

    p = sub.add_parser("attention", help="concentration of negative words' attention maps on their attribute's box")
    p.add_argument("--seeds-per-attribute", type=int, default=64, help="seeds (from 7000) showing the attribute")
    p.add_argument("--out", type=Path, default=DOCS / "attention_study", help="writes OUT.json, OUT.md, OUT.png")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy shared machine)")
    p.set_defaults(func=attention_command)


def _add_nag_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nag", help="attribute rates: negative through NAG vs CFG vs both, and NAG at guidance 1")
    p.add_argument("--seeds", default="5000:5064", help="held out: the model and probe never saw these")
    p.add_argument("--negatives", default="mustache,hat")
    p.add_argument("--scale", type=float, default=None, help="NAG scale (default: the model's)")
    p.add_argument("--tau", type=float, default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument(
        "--variant", action="append", default=[], help='other NAG inputs at guidance 1, JSON: {"nag_scale": 10}'
    )
    p.add_argument("--out", type=Path, default=DOCS / "nag_study", help="writes OUT.json and OUT.md")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy shared machine)")
    p.set_defaults(func=nag_command)


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per tool; each sets `func`, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="python -m negprompt_demo.embedded_tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_training_commands(sub)
    _add_measuring_commands(sub)
    _add_nag_command(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse `argv` (default: sys.argv) and run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
