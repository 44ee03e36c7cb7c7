"""Tools for the embedded model, kept out of the runtime package `negprompt_demo.embedded`: training (`train`,
`clip_vocab`), the attribute probe's training (`probe_training`), and the studies behind docs/EMBEDDED.md: the
results table and sample grids (`evaluate`), the negative's window (`delayed`), side effects (`side_effects`),
where negative words' attention lands (`attention_study`) and NAG against CFG (`nag_study`). Command line (every
subcommand is listed in `__main__`): `python -m negprompt_demo.embedded_tools --help`.
"""
