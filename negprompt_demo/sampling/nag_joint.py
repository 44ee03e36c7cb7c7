"""NAG on the joint attention of SD3 and FLUX.1 (see `nag.py` for the formula): there is no cross-attention layer,
image and text tokens attend together, so the negative's text becomes a second text stream computed alongside.

The NAG authors' scheme (ChenDarYen/Normalized-Attention-Guidance, `attention_joint_nag.py` for SD3,
`attention_flux_nag.py` + `transformer_flux.py` for FLUX.1), restated:

- Each with-run text item acting at this step gets a companion row appended to the transformer's batch: the
  negative's text embeddings, with the item's timestep (and FLUX.1's distilled guidance). Its pooled conditioning is
  the item's own on SD3, the negative's on FLUX.1 (as the authors' pipelines build them).
- Image tokens exist once per item through the joint blocks: every adaptive norm takes the first rows of the time
  embedding, as many as the rows it normalises (the image stream: the batch; the text stream: batch + companions).
- In each joint attention the companion row attends with the item's image queries/keys/values and its own
  (negative) text tokens: [negative text ; image] against [prompt text ; image] of the item. The image tokens'
  outputs before the output projection are Z⁻ and Z⁺; the item's become NAG's Z. Text tokens are not guided; the
  companion's text outputs carry its stream to the next block.
- FLUX.1's single blocks run [text ; image] as one sequence: the companion row enters them with a copy of the item's
  image tokens and keeps its own from then on (modulated by its own pooled embedding); both rows' image outputs are
  set to NAG's Z in each single block's attention. The final norm reads only the batch's rows.
- The norm of the clip: L1 on SD3 (as on the UNet), L2 on FLUX.1 (`torch.norm(p=2)` in the authors' FLUX.1
  processor, where their SD3 and SDXL processors use p=1).

One transformer call per step keeps its batch; in the joint blocks the companions cost their text tokens'
projections and MLPs and one extra attention per layer, in FLUX.1's single blocks a whole [text ; image] row each.
FLUX.1's true CFG (a text call, then a negative call per step) gets companions in the text call only
(`NagAttention.rows`: the branch hook's `hooks.BatchRows` of a negative call hold no text items).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb

from negprompt_demo.models.families import StableDiffusion3
from negprompt_demo.sampling.hooks import DenoiserCall
from negprompt_demo.sampling.nag import NagAttention, nag_blend

ADAPTIVE_NORMS = ("AdaLayerNormZero", "AdaLayerNormContinuous", "SD35AdaLayerNormZeroX", "AdaLayerNormZeroSingle")


class JointNag(NagAttention):
    """NAG on every joint attention of `transformer` (SD3 or FLUX.1) while used as a context manager (processors
    and hooks removed also on error). `pooled` is the negative's pooled embedding [1, width] (FLUX.1's companions
    use it); the other arguments are `NagAttention`'s."""

    def __init__(
        self, transformer, call: DenoiserCall, plans, items, context, pooled, family: StableDiffusion3, **nag_inputs
    ):
        super().__init__(transformer, call, plans, items, context, **nag_inputs)
        self.pooled, self.family = pooled, family
        self.norm_p = family.nag_norm
        self.call_rows: list[int] = []  # this call's with-run rows getting NAG (their companions follow the batch)
        self.call_traced: int | None = None
        self.batch = 0  # this call's batch without companions
        self.text_length = 0  # text tokens per row (FLUX.1's single blocks see [text ; image] as one sequence)

    def install(self) -> None:
        model = self.model
        self.replace_processors(
            lambda name, processor: JointNagProcessor(processor, self) if _is_joint_layer(name) else processor
        )
        self.add_pre_hook(model, self._add_companions)
        for name, module in model.named_modules():
            if name == "norm_out":
                self.add_pre_hook(module, self._batch_only)
            elif type(module).__name__ in ADAPTIVE_NORMS:
                self.add_pre_hook(module, _own_rows_of_embedding)
        for block in getattr(model, "single_transformer_blocks", []):
            self.add_pre_hook(block, self._image_for_companions)

    # --- hooks (run in this order within one transformer call) ---------------------------------------------------

    def _add_companions(self, module, args, kwargs):
        """Transformer pre-hook, after the branch hook's: append a companion row per acting with-run item."""
        self.call_rows, self.call_traced = self.rows()
        if not self.call_rows:
            return None
        if args:
            raise RuntimeError("NAG expects the transformer to be called with keyword arguments, as diffusers does.")
        kwargs = dict(kwargs)
        batch = kwargs["hidden_states"].shape[0]
        index = torch.tensor(self.call_rows, device=kwargs["hidden_states"].device)
        count = len(self.call_rows)
        text = kwargs["encoder_hidden_states"]
        if text.shape[1:] != self.context.shape[1:]:
            raise RuntimeError(f"The negative's text is {tuple(self.context.shape)}, the prompt's {tuple(text.shape)}.")
        kwargs["encoder_hidden_states"] = torch.cat([text, self.context.to(text).expand(count, -1, -1)])
        pooled = kwargs["pooled_projections"]
        if self.family.nag_pooled_from_negative:
            companion_pooled = self.pooled.to(pooled).expand(count, -1)
        else:
            companion_pooled = pooled[index]
        kwargs["pooled_projections"] = torch.cat([pooled, companion_pooled])
        for name in ("timestep", "guidance"):  # per item: the companion takes its item's
            value = kwargs.get(name)
            if torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == batch:
                kwargs[name] = torch.cat([value, value[index]])
        self.batch, self.text_length = batch, text.shape[1]
        return args, kwargs

    def _image_for_companions(self, module, args, kwargs):
        """FLUX.1 single-block pre-hook: the companions enter the single blocks with their item's image tokens."""
        image = kwargs.get("hidden_states")
        if not self.call_rows or image is None or image.shape[0] != self.batch:
            return None
        index = torch.tensor(self.call_rows, device=image.device)
        return args, {**kwargs, "hidden_states": torch.cat([image, image[index]])}

    def _batch_only(self, module, args, kwargs):
        """The final norm's pre-hook: only the batch's rows go on to the output (the companions end here)."""
        if not self.call_rows:
            return None
        args = list(args)
        if args:
            args[0] = args[0][: self.batch]
        if len(args) > 1:
            args[1] = args[1][: self.batch]
        for name in ("x", "conditioning_embedding"):
            if name in kwargs:
                kwargs = {**kwargs, name: kwargs[name][: self.batch]}
        return tuple(args), kwargs


def _is_joint_layer(name: str) -> bool:
    """The joint (and FLUX.1 single-block) attention layers; SD3.5's image-only `attn2` is left alone."""
    return name.endswith(".attn.processor")


def _own_rows_of_embedding(module, args, kwargs):
    """An adaptive norm's pre-hook: its time embedding cut to the rows it normalises (the image stream has no
    companions; the text stream has)."""
    x = args[0] if args else next(iter(kwargs.values()))
    rows = x.shape[0]

    def cut(value):
        return value[:rows] if torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] > rows else value

    args = tuple([x, *(cut(value) for value in args[1:])]) if args else ()
    return args, {name: cut(value) for name, value in kwargs.items()}


class JointNagProcessor:
    """A joint attention layer's processor: the original's answer where no row gets NAG; else the layer computed
    here (the operations of diffusers' JointAttnProcessor2_0 / FluxAttnProcessor) with companions and NAG."""

    def __init__(self, original, nag: JointNag):
        self.original, self.nag = original, nag

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary=None, **kwargs):
        nag = self.nag
        if not nag.call_rows:
            rotary_args = () if rotary is None else (rotary,)  # FLUX.1 passes it by position, SD3 not at all
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *rotary_args, **kwargs)
        if attention_mask is not None:
            raise RuntimeError("NAG supports joint attention without a mask.")
        rotary = kwargs.get("image_rotary_emb", rotary)
        index = torch.tensor(nag.call_rows, device=hidden_states.device)
        if encoder_hidden_states is None:  # FLUX.1 single block: [text ; image] per row, companions included
            outputs = _attend(attn, *_heads(attn, hidden_states, "to"), rotary)
            image = outputs[:, nag.text_length :]
            guided = self._guide(image[index], image[nag.batch :])
            outputs = outputs.clone()
            outputs[index, nag.text_length :] = guided
            outputs[nag.batch :, nag.text_length :] = guided
            return outputs
        image_qkv = [torch.cat([part, part[index]]) for part in _heads(attn, hidden_states, "to")]
        text_qkv = _heads(attn, encoder_hidden_states, "add")
        image_first = not nag.family.text_first  # SD3 joins [image ; text], FLUX.1 [text ; image]
        first, second = (image_qkv, text_qkv) if image_first else (text_qkv, image_qkv)
        joined = [torch.cat([a, b], dim=1) for a, b in zip(first, second)]
        outputs = _attend(attn, *joined, rotary)
        image_tokens = hidden_states.shape[1]
        if image_first:
            image, text = outputs[:, :image_tokens], outputs[:, image_tokens:]
        else:
            text, image = outputs[:, :-image_tokens], outputs[:, -image_tokens:]
        image = image[: nag.batch].index_copy(0, index, self._guide(image[index], image[nag.batch :]))
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        if not getattr(attn, "context_pre_only", False):
            text = attn.to_add_out(text.contiguous())
        return image, text

    def _guide(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """NAG's Z of the image tokens (in float32, see nag.py), and the traced item's ‖Z − Z⁺‖ for the map."""
        nag = self.nag
        guided = nag_blend(positive.float(), negative.float(), nag.scale, nag.tau, nag.alpha, nag.norm_p)
        guided = guided.to(positive.dtype)
        if nag.call_traced is not None:
            nag.add_map((guided[nag.call_traced] - positive[nag.call_traced]).float().norm(dim=-1))
        return guided


def _heads(attn, states: torch.Tensor, which: str) -> list[torch.Tensor]:
    """Queries, keys and values [rows, tokens, heads, head_dim] of the image stream (`which` "to") or the text
    stream ("add"), with the layer's q/k norms."""
    if which == "to":
        projections, norms = (attn.to_q, attn.to_k, attn.to_v), (attn.norm_q, attn.norm_k)
    else:
        projections, norms = (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj), (attn.norm_added_q, attn.norm_added_k)
    query, key, value = (projection(states).unflatten(-1, (attn.heads, -1)) for projection in projections)
    query = norms[0](query) if norms[0] is not None else query
    key = norms[1](key) if norms[1] is not None else key
    return [query, key, value]


def _attend(attn, query, key, value, rotary) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v over [rows, tokens, heads, head_dim] (FLUX.1's rotary embedding first):
    [rows, tokens, heads·head_dim], before the output projection."""
    if rotary is not None:
        query = apply_rotary_emb(query, rotary, sequence_dim=1)
        key = apply_rotary_emb(key, rotary, sequence_dim=1)
    found = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    return found.transpose(1, 2).flatten(2, 3).to(query.dtype)
