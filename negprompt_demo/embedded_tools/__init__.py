"""Tools for the embedded model, kept out of the runtime package `negprompt_demo.embedded`: training
(`train`, `clip_vocab`), the attribute probe's training (`probe_training`), and the evaluation behind
docs/EMBEDDED.md (`evaluate`). Command line: `python -m negprompt_demo.embedded_tools --help`.
"""
