"""Links that reopen a comparison: the page URL with the comparison's inputs as query parameters.

`link_query` writes the query of a finished comparison (relative, `?prompt=…&seed=…`, so it works behind a share
link and inside a Space's iframe: the browser completes it from the page's own address); `link_values` reads a
page URL's query back into the values a user could have typed. Parameter names are the comparison's inputs
(`model`, then every `settings.FIELDS` name). Reading converts only what the URL cannot say otherwise (the text
"true"/"false" of a flag, numbers written as text); everything is then checked by `resolve_settings` and the model
policy, like typed input, so a bad or hostile value gets the same message and never reaches the pipeline.

Like `settings`, this module imports no torch or diffusers.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from negprompt_demo.settings import DEFAULTS, FIELDS, CompareSettings

# handlers.INPUT_NAMES in the same order, less the negative embedding: a file on the server that made the run (an
# upload's temporary path, or a local path) means nothing to another visitor and is not for a URL to name.
NOT_IN_LINKS = ("negative_embedding",)
LINK_FIELDS = {name: field for name, field in FIELDS.items() if name not in NOT_IN_LINKS}
LINK_NAMES = ("model", *LINK_FIELDS)


def link_query(model: str, settings: CompareSettings, default_model: str) -> str:
    """`?name=value&…` for resolved settings: every value that differs from the field's default (the seed always,
    and the model's defaults that were filled in: steps, guidance, scheduler, size, NAG's inputs when NAG acts, so
    the link runs the same comparison), and the model when it is not the page's default. Values are URL-encoded
    (`urlencode`), so the query holds only `A-Z a-z 0-9 _ . - ~ % + = &`."""
    pairs = [] if model == default_model else [("model", model)]
    for name, field in LINK_FIELDS.items():
        value = getattr(settings, name)
        if name != "seed" and (value is None or value == DEFAULTS[name]):
            continue
        if name.startswith("nag_") and not settings.uses_nag():  # NAG's inputs change nothing with CFG alone
            continue
        pairs.append((name, field.as_text(value)))
    return "?" + urlencode(pairs)


def link_values(params: Mapping[str, str]) -> dict | None:
    """The comparison inputs a page URL's query parameters name, as values for `CompareSettings` (and "model"), or
    None when it names none (a plain page visit; other parameters, e.g. a Space's `__theme`, are ignored)."""
    values = {name: params[name] for name in LINK_NAMES if name in params}
    if not values:
        return None
    for name, text in values.items():
        if name in LINK_FIELDS:  # the model's name stays text
            values[name] = LINK_FIELDS[name].from_text(text)
    return values
