"""Derive Hugging Face CLIPTokenizer files (vocab.json, merges.txt) from OpenAI's CLIP BPE merges.

The embedded model uses the real CLIP vocabulary (49,408 tokens, 77-token context), so prompts are
split exactly as Stable Diffusion 1.x splits them: any word can be typed, words the model never saw
map to untrained embeddings, and truncation happens at the same place. The merges file
`bpe_simple_vocab_16e6.txt.gz` ships inside the `open_clip_torch` wheel (MIT licence); only the
derived files are committed, so open_clip is needed solely to re-derive them:

    pip download open_clip_torch --no-deps -d /tmp/oc && unzip -j /tmp/oc/*.whl \\
        open_clip/bpe_simple_vocab_16e6.txt.gz -d /tmp/oc
    python -m negprompt_demo.embedded_tools tokenizer --bpe /tmp/oc/bpe_simple_vocab_16e6.txt.gz --out DIR
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (copied from openai/CLIP, MIT)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def derive_tokenizer_files(bpe_gz: Path, out_dir: Path) -> None:
    """Write vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json to out_dir.

    The vocabulary order is the one of openai/CLIP's SimpleTokenizer, which is also the order of
    openai/clip-vit-large-patch14's vocab.json used by Stable Diffusion 1.x.
    """
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
        "errors": "replace",
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
