"""Normalized Attention Guidance (NAG; Chen et al., NeurIPS 2025, arXiv 2505.21179): the negative prompt acting in
attention space, so that it works where classifier-free guidance has no branch to replace (guidance 1, LCM/Turbo).

In every cross-attention layer (`attn2`) of the UNet, a with-run's text item attends with the same queries to the
prompt's tokens and to the negative's tokens, Z⁺ and Z⁻ ([tokens, channels], before the output projection), and
the layer answers, per image token,

    Z̃ = s·Z⁺ − (s − 1)·Z⁻                       extrapolate away from the negative (s = 1: Z̃ = Z⁺, no NAG)
    Z̃ := Z̃ · min(r, τ) / r,  r = ‖Z̃‖₁ / ‖Z⁺‖₁     keep its L1 norm within τ times the prompt's
    Z  = α·Z̃ + (1 − α)·Z⁺                        blend back towards the prompt's output

which is the NAG authors' convention (ChenDarYen/Normalized-Attention-Guidance; ComfyUI's NAGuidance writes the
same with its own default s = 5, α = 0.5, τ = 1.5). Only the text (positive) item of a with-run is changed: its CFG
negative branch, the ε_∅ items and every run without the negative are computed exactly as before, and NAG costs
one extra attention over the negative's tokens per layer and with-run, not a batch item. s = 1 or α = 0 installs
nothing (the run is the plain one, bit for bit), as the authors' pipelines skip NAG at s ≤ 1.

The window of the negative (`guidance.NegativePlan`, A1111 step counting) decides the steps NAG acts at, as it does
for the CFG branch. The branch hook's `hooks.DenoiserCall` says, during each UNet call, which batch row holds a
run's text item (the hook may reorder and share items); this module reads it there, so it composes with the branch
hook and with the attention recorder (which wraps whatever processor is installed, this one included).

The trace (`take_map`): per step, ‖Z − Z⁺‖₂ per image token of the with-run (run 1), each layer upsampled to the
latent size and averaged over layers: where NAG moved the attention output, as the guidance map shows where CFG
pushed the prediction.

SD3's and FLUX.1's joint attention: `nag_joint.py` (the negative's text as a second text stream alongside).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from negprompt_demo.models.families import family_of
from negprompt_demo.models.flow_models import encode_flow_text
from negprompt_demo.models.prompts import RunText, encode_text
from negprompt_demo.sampling.guidance import NO_NEGATIVE, NegativePlan
from negprompt_demo.sampling.hooks import CallHolds, DenoiserCall, ModelHook


def nag_blend(
    positive: torch.Tensor, negative: torch.Tensor, scale: float, tau: float, alpha: float, norm_p: int = 1
) -> torch.Tensor:
    """The paper's formula on attention outputs [..., tokens, channels] (see the module docstring); `norm_p` is the
    clip's norm (1, the paper's; FLUX.1's processor of the authors uses 2, see nag_joint.py)."""
    extrapolated = positive * scale - negative * (scale - 1)
    positive_norm = positive.norm(p=norm_p, dim=-1, keepdim=True)
    ratio = extrapolated.norm(p=norm_p, dim=-1, keepdim=True) / positive_norm.clamp_min(1e-12)
    kept = torch.minimum(ratio, torch.full_like(ratio, tau)) / ratio.clamp_min(1e-12)
    return alpha * (extrapolated * kept) + (1 - alpha) * positive


def nag_acts(scale: float, alpha: float) -> bool:
    """Whether NAG changes anything: s = 1 (no extrapolation) or α = 0 (nothing blended in) leave Z = Z⁺."""
    return scale != 1 and alpha != 0


class NagAttention(ModelHook):
    """NAG on every cross-attention layer of `unet` for the batch items `items` (with-runs, by index into
    `plans`), while used as a context manager (originals restored also on error). `call` is the branch hook's
    `DenoiserCall` (the step, and which row holds each item's text); `context` the negative's text embeddings
    [1, tokens, width]; `traced` the item whose ‖Z − Z⁺‖ map is kept (None: no map)."""

    def __init__(
        self,
        unet,
        call: DenoiserCall,
        plans: list[NegativePlan],
        items: list[int],
        context: torch.Tensor,
        scale: float,
        tau: float,
        alpha: float,
        latent_size: tuple[int, int],
        traced: int | None = None,
    ):
        super().__init__(unet)
        self.call, self.plans, self.items = call, plans, items
        self.context, self.scale, self.tau, self.alpha = context, scale, tau, alpha
        self.latent_size, self.traced = latent_size, traced
        self._map: torch.Tensor | None = None  # this step's summed ‖Z − Z⁺‖ maps of the traced item
        self._layers = 0

    def install(self) -> None:
        self.replace_processors(
            lambda name, processor: NagProcessor(processor, self) if name.endswith("attn2.processor") else processor
        )

    def rows(self) -> tuple[list[int], int | None]:
        """The batch rows of this denoiser call that get NAG (text items of with-runs inside their window; none in
        FLUX.1's negative call, which holds no text items), and which of them is the traced item (an index into
        that list, or None)."""
        rows = self.call.rows
        if rows.holds is CallHolds.NEGATIVE:
            return [], None
        acting = [item for item in self.items if self.plans[item].active(self.call.step)]
        traced = acting.index(self.traced) if self.traced in acting else None
        return [rows.text_row(item) for item in acting], traced

    def add_map(self, distances: torch.Tensor) -> None:
        """One layer's ‖Z − Z⁺‖ of the traced item, [image tokens], upsampled to the latent size and summed."""
        height, width = self.latent_size
        while height * width > distances.numel():
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        if height * width != distances.numel():
            return  # not a spatial layer of these latents
        layer = distances.float().reshape(1, 1, height, width)
        if (height, width) != self.latent_size:
            layer = F.interpolate(layer, self.latent_size, mode="bilinear", align_corners=False)
        self._map = layer[0, 0] if self._map is None else self._map + layer[0, 0]
        self._layers += 1

    def take_map(self) -> torch.Tensor | None:
        """This step's ‖Z − Z⁺‖ map [h, w] float16 on the CPU (mean over layers), None where NAG did not act."""
        found = None if self._map is None else (self._map / self._layers).half().cpu()
        self._map, self._layers = None, 0
        return found


class NagProcessor:
    """A cross-attention layer's processor: the original's answer where no row gets NAG; else the layer computed
    here (the same operations as diffusers' AttnProcessor2_0) with NAG on the rows `NagAttention.rows` names."""

    def __init__(self, original, nag: NagAttention):
        self.original, self.nag = original, nag

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        rows, traced = self.nag.rows() if encoder_hidden_states is not None else ([], None)
        if not rows:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None:
            raise RuntimeError("NAG supports the UNet's plain cross-attention (no mask, spatial or group norm).")
        if hidden_states.ndim != 3:
            raise RuntimeError(f"NAG expects [batch, tokens, channels] hidden states, got {hidden_states.ndim} dims.")
        residual = hidden_states
        query = attn.to_q(hidden_states)
        outputs = _attend(attn, query, encoder_hidden_states)
        negative_context = self.nag.context.to(encoder_hidden_states.dtype).expand(len(rows), -1, -1)
        index = torch.tensor(rows, device=hidden_states.device)
        positive = outputs[index]
        negative = _attend(attn, query[index], negative_context)
        # in float32: an L1 norm over SDXL's 1280 channels can pass float16's 65504
        guided = nag_blend(positive.float(), negative.float(), self.nag.scale, self.nag.tau, self.nag.alpha)
        guided = guided.to(outputs.dtype)
        if traced is not None:
            self.nag.add_map((guided[traced] - positive[traced]).float().norm(dim=-1))
        outputs = outputs.index_copy(0, index, guided)
        outputs = attn.to_out[1](attn.to_out[0](outputs))
        if attn.residual_connection:
            outputs = outputs + residual
        return outputs / attn.rescale_output_factor


def _attend(attn, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v of a diffusers `Attention` layer for projected queries [rows, tokens, inner] over a
    context [rows, tokens', width]: [rows, tokens, inner], before the output projection."""
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    key, value = attn.to_k(context), attn.to_v(context)
    rows, heads = query.shape[0], attn.heads
    head_dim = key.shape[-1] // heads
    query = query.view(rows, -1, heads, head_dim).transpose(1, 2)
    key = key.view(rows, -1, heads, head_dim).transpose(1, 2)
    value = value.view(rows, -1, heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    found = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    return found.transpose(1, 2).reshape(rows, -1, heads * head_dim).to(query.dtype)


def nag_attention(
    pipe, settings, item_plans: list[NegativePlan | None], call: DenoiserCall, embedding, traced: int | None
) -> NagAttention | None:
    """NAG for one pipeline call whose batch items have `item_plans` (None: a run without the negative prompt), or
    None where the settings do not ask for it or it would change nothing (`nag_acts`). `settings` are resolved
    (`engine.prepare`); `call` is the branch hook's; `embedding` is the negative embedding its trigger word may
    name."""
    if not settings.uses_nag() or not settings.negative or not nag_acts(settings.nag_scale, settings.nag_alpha):
        return None
    items = [item for item, plan in enumerate(item_plans) if plan is not None]
    plans = [NO_NEGATIVE if plan is None else plan for plan in item_plans]
    nag_inputs = {
        "scale": settings.nag_scale,
        "tau": settings.nag_tau,
        "alpha": settings.nag_alpha,
        "latent_size": (settings.height // pipe.vae_scale_factor, settings.width // pipe.vae_scale_factor),
        "traced": traced,
    }
    family = family_of(pipe)
    if family.joint_attention:
        from negprompt_demo.sampling.nag_joint import JointNag  # it builds on this module's NagAttention

        encoded = encode_flow_text(pipe, RunText(settings.negative, None), False)
        context, pooled = encoded["prompt_embeds"], encoded["pooled_prompt_embeds"]
        return JointNag(pipe.transformer, call, plans, items, context, pooled, family, **nag_inputs)
    context, _ = encode_text(pipe, settings.negative, embedding)  # the negative's tokens, as its CFG branch reads them
    return NagAttention(pipe.unet, call, plans, items, context, **nag_inputs)


def nag_warnings(resolved, cfg_on: bool) -> list[str]:
    """What a user must know about the NAG settings before the run."""
    if not resolved.uses_nag():
        return []
    warnings = []
    if not nag_acts(resolved.nag_scale, resolved.nag_alpha):
        which = "NAG scale 1" if resolved.nag_scale == 1 else "NAG alpha 0"
        through_cfg = cfg_on and resolved.negative_mode == "both"
        warnings.append(f"{which} turns NAG off: the negative acts {'through CFG only' if through_cfg else 'nowhere'}.")
    if resolved.negative_mode == "nag" and (resolved.negative_strength != 1 or resolved.perp_neg):
        warnings.append(
            "Negative strength and Perp-Neg shape classifier-free guidance's negative branch; with NAG alone (the "
            "branch is the empty prompt's) they do nothing."
        )
    if resolved.negative_mode == "both" and not cfg_on:
        warnings.append("Classifier-free guidance is off (guidance ≤ 1), so “both” is NAG alone.")
    return warnings
