"""Command line of the embedded model: train it, measure it, draw its evidence.

python -m negprompt_demo.embedded train [--steps N] [--bpe bpe_simple_vocab_16e6.txt.gz]
python -m negprompt_demo.embedded tokenizer --bpe FILE --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _load_vae(checkpoint: Path | None = None):
    """The shipped model's VAE, or the one in a training checkpoint (to train the probe mid-run)."""
    import torch
    from diffusers import AutoencoderKL

    from negprompt_demo.embedded import MODEL_DIR
    from negprompt_demo.embedded.train import build_vae

    if checkpoint is None:
        return AutoencoderKL.from_pretrained(MODEL_DIR / "vae").eval()
    vae = build_vae()
    vae.load_state_dict(torch.load(checkpoint, map_location="cpu")["model"])
    return vae.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m negprompt_demo.embedded",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("tokenizer", help="derive CLIPTokenizer files from CLIP's BPE merges")
    p.add_argument("--bpe", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("probe-train", help="train the attribute probe (uses the shipped model's VAE)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--images", type=int, default=12000)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy shared machine)")
    p.add_argument("--vae-checkpoint", type=Path, default=None, help="e.g. runs/embedded/vae.pt")

    p = sub.add_parser("probe-accuracy", help="probe accuracy on held-out drawn portraits and VAE round trips")
    p.add_argument("--vae-checkpoint", type=Path, default=None)

    p = sub.add_parser("evaluate", help="attribute rate over seeds, empty negative vs NEGATIVE (JSON)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--attribute", required=True, help="mustache, beard, glasses, hat, earrings or smile")
    p.add_argument("--seeds", default="0:64", help="'start:stop' or a comma list")
    p.add_argument("--model", default=None, help="default: the embedded model")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's negprompt_defaults.json")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--scheduler", default=None)

    p = sub.add_parser("table", help="the results table of docs/EMBEDDED.md")
    p.add_argument("--seeds", default="0:256")
    p.add_argument("--attributes", default="mustache,glasses,hat,beard,earrings")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--out", type=Path, default=DOCS / "embedded_results")
    p.add_argument("--no-unrelated", action="store_true", help="skip the unrelated-negative row")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="instead of measuring, merge these JSON parts (disjoint --attributes runs) into --out",
    )

    p = sub.add_parser("grid", help="sample grids: plain prompt vs negative 'mustache', and probe calls")
    p.add_argument("--seeds", default="0:32")
    p.add_argument("--attribute", default="mustache")
    p.add_argument("--out", type=Path, default=DOCS / "embedded_grid.png")

    args = parser.parse_args(argv)
    if args.command == "train":
        from negprompt_demo.embedded.train import TrainConfig, train

        cfg = TrainConfig(run_dir=args.run_dir, seed=args.seed, threads=args.threads)
        for name in ("out", "steps", "vae_steps", "images", "vae_images", "batch"):
            value = getattr(args, name)
            if value is not None:
                setattr(cfg, "out_dir" if name == "out" else name, value)
        train(cfg, args.bpe)
    elif args.command == "tokenizer":
        from negprompt_demo.embedded.clip_vocab import derive_tokenizer_files

        derive_tokenizer_files(args.bpe, args.out)
    elif args.command == "probe-train":
        import torch

        from negprompt_demo.embedded.probe import train_probe

        if args.threads:
            torch.set_num_threads(args.threads)

        train_probe(_load_vae(args.vae_checkpoint), n=args.images, steps=args.steps)
    elif args.command == "probe-accuracy":
        from negprompt_demo.embedded.probe import probe_accuracy

        result = probe_accuracy(_load_vae(args.vae_checkpoint))
        print(json.dumps(result, indent=2))
        (DOCS / "embedded_probe_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    elif args.command == "evaluate":
        from negprompt_demo.embedded.evaluate import evaluate, parse_seeds

        print(
            json.dumps(
                evaluate(
                    args.prompt,
                    args.negative,
                    args.attribute,
                    parse_seeds(args.seeds),
                    args.model,
                    args.guidance,
                    args.steps,
                    args.scheduler,
                ),
                indent=2,
            )
        )
    elif args.command == "table":
        import torch

        from negprompt_demo.embedded.evaluate import (
            merge_tables,
            model_defaults,
            parse_seeds,
            results_table,
            table_markdown,
        )

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.merge:
            res = merge_tables([json.loads(path.read_text()) for path in args.merge])
        else:
            d = model_defaults()
            guidance = d["guidance"] if args.guidance is None else args.guidance
            res = results_table(
                parse_seeds(args.seeds),
                args.attributes.split(","),
                guidance,
                d["steps"],
                d["scheduler"],
                unrelated=not args.no_unrelated,
            )
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table_markdown(res))
        print(table_markdown(res))
    elif args.command == "grid":
        from negprompt_demo.embedded.evaluate import (
            BASE_PROMPT,
            model_defaults,
            parse_seeds,
            probe_check_grid,
            probe_pairs,
            sample_grid,
        )
        from negprompt_demo.embedded.probe import Probe
        from negprompt_demo.loading import load_pipeline

        d, probe = model_defaults(), Probe()
        _, pairs = probe_pairs(
            load_pipeline(None),
            BASE_PROMPT,
            args.attribute,
            parse_seeds(args.seeds),
            probe,
            guidance=d["guidance"],
            steps=d["steps"],
            scheduler=d["scheduler"],
            keep_images=True,
        )
        titles = (f'"{BASE_PROMPT}"', f'same seeds + negative "{args.attribute}"')
        sample_grid(pairs, probe, args.attribute, titles).save(args.out)
        check = args.out.with_name(args.out.stem + "_probe_check.png")
        probe_check_grid([p[0] for p in pairs] + [p[1] for p in pairs], probe).save(check)
        print(f"wrote {args.out} and {check}")


if __name__ == "__main__":
    main()
