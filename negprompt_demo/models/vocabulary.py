"""The words a model was trained to mean, where the model says so: a `negprompt_vocabulary.json` in its folder,
beside its `negprompt_defaults.json`.

The embedded model ships one (written by `embedded_tools.train` from every word its training captions can use,
`embedded.faces.caption_vocabulary`): its text encoder learned only those words, and any other word tokenizes fine
but was never paired with an image. Other models were trained on open text and ship none: they know no fixed
vocabulary (None), and no word of theirs is reported as unseen.
"""

from __future__ import annotations

import json
import os

VOCABULARY_FILE = "negprompt_vocabulary.json"


def model_vocabulary(pipe) -> frozenset[str] | None:
    """The words the model of `pipe` was trained on, read from its folder; None where it ships no vocabulary."""
    folder = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path")
    path = os.path.join(folder, VOCABULARY_FILE) if folder and os.path.isdir(folder) else None
    if path is None or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        return frozenset(json.load(file)["words"])


def vocabulary_words(text: str) -> list[str]:
    """A text's words as a vocabulary file counts them: lower case, runs of letters, digits and '-' (the rule
    `embedded.faces.caption_words` counted the embedded model's captions by)."""
    return "".join(ch if ch.isalnum() or ch == "-" else " " for ch in text.lower()).split()


def vocabulary_document(words: frozenset[str] | set[str]) -> str:
    """The text of a vocabulary file holding `words` (sorted, so that a re-export changes it only where the words
    change)."""
    document = {
        "about": "Every word this model's training captions use: the only words its text encoder was trained to mean.",
        "words": sorted(words),
    }
    return json.dumps(document, indent=1) + "\n"
