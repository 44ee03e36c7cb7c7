"""Where each word looks: cross-attention maps of the negative prompt's and the prompt's words, per step, recorded
during the same single pipeline call.

At every cross-attention layer of the UNet each latent pixel attends over the 77 token embeddings of its text:
softmax(q·kᵀ/√d) over the tokens, per head. The maps follow DAAM (Tang et al. 2023; castorini/daam 0.2.0,
`daam/hook.py`, `daam/trace.py`):
- layers: the cross-attention (`attn2`) of the UNet's **down and up blocks**; DAAM leaves the mid block out. The
  `attention_mid_block` setting adds it (the page says which set a map shows);
- each (layer, head) map of a token is upsampled to the map size with **bicubic** interpolation and clamped at 0
  (bicubic undershoots), then the maps are **averaged over every (layer, head)** pair;
- a word's map is the **mean over its tokens**.
DAAM keeps only the conditional half of the batch; here the with-run's *negative* branch is mapped too, so a
negative prompt's words get maps of their own ("mustache" on the upper lip).

Where this differs from DAAM on purpose: DAAM sums each (layer, head) map over all steps and then upsamples and
clamps once; the maps here are per step (the step view shows them), so the clamp is applied per step. DAAM
upsamples to a fixed 64×64 (96×96 for 768 px models) and keeps layers by a size factor computed from that
assumption (`factor != 8` and a set of allowed factors), which at other latent sizes drops layers it meant to keep
(at the embedded model's 16×16 latents it would keep none); here every down- and up-block layer is kept and the
target is the latent size (at most MAX_MAP_SIDE), which is DAAM's 64×64 for SD 1.x at 512 px.

Recorded, per step, for the run with the negative prompt (batch run 1):
- each word of the negative prompt, from the with-run's negative-branch item (none while its window is closed:
  that branch is then the empty prompt's);
- each word of the prompt, from the with-run's conditional (text) item.
The branch hook's `hooks.DenoiserCall` says which rows of the UNet batch those are at the current step.

How: `with AttentionRecorder(unet, plan, call):` swaps the mapped cross-attention layers' processors for one that
first calls the original processor (so the UNet computes exactly what it computed before: the images are
bit-identical) and then recomputes the attention probabilities for those two rows only; every other processor is
kept, and the originals are put back when the block ends, also on error (`hooks.ModelHook`).

SDXL: its UNet's cross-attention keys come from both text encoders' hidden states concatenated per token (CLIP
ViT-L and OpenCLIP bigG). Both tokenizers split text the same way, so token position i is the same word piece in
both, and the maps show the UNet's attention to that joint token: one map per word, not one per encoder.

Memory: maps are kept at latent resolution, at most MAX_MAP_SIDE per side (SDXL's largest cross-attention layer
at 1024 px is 64×64, so nothing is lost there), in float16 on the CPU, and at most MAX_MAP_BYTES per run: when all
words at every step would exceed it, only every k-th step is kept (`AttentionPlan.stride`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from negprompt_demo.models.embeddings import read_embedding, trigger_in
from negprompt_demo.models.prompts import tokenize_chunks
from negprompt_demo.sampling.hooks import DenoiserCall, ModelHook
from negprompt_demo.syntax.prompt_syntax import parse_weights

MAX_MAP_SIDE = 64
MAX_MAP_BYTES = 32 * 2**20  # per run; 150 words (two texts of 75 tokens) × 64×64 × 50 steps is 60 MB before striding
SOURCES = ("negative", "prompt")
DAAM_LAYERS = "down and up blocks (as DAAM)"
MID_LAYERS = "down, mid and up blocks (DAAM leaves the mid block out)"


@dataclass(frozen=True)
class Word:
    """A word as the user typed it and the token positions that spell it in the UNet's text context (77 places per
    chunk, each chunk's start token at place 0; punctuation tokens are left out)."""

    text: str
    source: str  # "negative" or "prompt"
    positions: tuple[int, ...]


@dataclass
class AttentionPlan:
    """What one run maps: its words, at what size, on which steps, and a sentence saying which attention it is."""

    words: list[Word]
    map_size: tuple[int, int]  # (h, w) of every stored map
    latent_size: tuple[int, int]
    stride: int  # maps are kept at steps 0, stride, 2·stride, ... (1: every step)
    note: str
    recorded_steps: list[int] = field(default_factory=list)  # 0-based; filled as sampling goes
    mid_block: bool = False  # the UNet's mid block is mapped too (DAAM leaves it out)

    @property
    def layers(self) -> str:
        """Which cross-attention layers the maps average, in words."""
        return MID_LAYERS if self.mid_block else DAAM_LAYERS

    def records(self, step: int) -> bool:
        return step % self.stride == 0

    def to_json(self) -> dict:
        return {
            "words": [{"word": w.text, "source": w.source, "token_positions": list(w.positions)} for w in self.words],
            "map_size": list(self.map_size),
            "latent_size": list(self.latent_size),
            "stride": self.stride,
            "steps": [step + 1 for step in self.recorded_steps],
            "note": self.note,
            "mid_block": self.mid_block,
            "layers": self.layers,
        }

    @classmethod
    def from_json(cls, data: dict) -> AttentionPlan:
        words = [Word(w["word"], w["source"], tuple(w["token_positions"])) for w in data["words"]]
        steps = [step - 1 for step in data["steps"]]
        size, latent = tuple(data["map_size"]), tuple(data["latent_size"])
        return cls(words, size, latent, data["stride"], data["note"], steps, data.get("mid_block", False))


def text_words(tokenizer, text: str, source: str, embedding=None) -> list[Word]:
    """The words of `text` as the text encoder reads them, with their token positions in the UNet's context.

    The text is read as `prompts.tokenize_chunks` reads it (A1111's syntax: weights, brackets, escapes and BREAK
    are not words; chunks of 75 tokens, each 77 places with its start and end tokens), so a token at place j of
    chunk c is at position 77·c + 1 + j. A word is a whitespace-separated piece of a fragment's text (edge
    punctuation trimmed from its label); punctuation-only tokens belong to no word; an embedding's trigger word
    owns the embedding's vectors. A word whose tokens are not found in the chunks (a tokenizer that merges
    across spaces) gets no position and is left out."""
    if not text:
        return []
    chunks = tokenize_chunks(tokenizer, text, embedding)
    places = tokenizer.model_max_length  # 77: start, 75 tokens, end
    flat = [
        (c * places + 1 + j, token, j in chunk.vectors)
        for c, chunk in enumerate(chunks)
        for j, token in enumerate(chunk.ids)
    ]
    words, cursor = [], 0
    for fragment in parse_weights(text):
        if fragment.weight is None:  # BREAK
            continue
        for typed in fragment.text.split():
            if embedding is not None and trigger_in(tokenizer, typed, embedding):  # token ids, as A1111 matches
                found = _vector_run(flat, cursor)
            else:
                found = _find_tokens(flat, cursor, tokenizer(typed, add_special_tokens=False, verbose=False).input_ids)
            if found is None:
                continue
            cursor = found[-1] + 1
            positions = tuple(flat[i][0] for i in found if flat[i][2] or _spells(tokenizer, flat[i][1]))
            if positions:
                words.append(Word(re.sub(r"^\W+|\W+$", "", typed) or typed, source, positions))
    return words


def _find_tokens(flat: list, cursor: int, ids: list[int], window: int = 8) -> list[int] | None:
    """Indices into `flat` of the first run of `ids` at most `window` places after `cursor` (skipping what the
    chunks hold between words: an embedding's vectors, a comma moved to the next chunk)."""
    for start in range(cursor, min(cursor + window, len(flat) - len(ids) + 1)):
        if ids and all(flat[start + i][1] == token and not flat[start + i][2] for i, token in enumerate(ids)):
            return list(range(start, start + len(ids)))
    return None


def _vector_run(flat: list, cursor: int) -> list[int] | None:
    """Indices of the next run of embedding vectors from `cursor`."""
    start = next((i for i in range(cursor, len(flat)) if flat[i][2]), None)
    if start is None:
        return None
    end = start
    while end + 1 < len(flat) and flat[end + 1][2]:
        end += 1
    return list(range(start, end + 1))


def _spells(tokenizer, token: int) -> bool:
    """Whether a token spells part of a word (not punctuation only)."""
    return any(ch.isalnum() for ch in tokenizer.convert_ids_to_tokens(token).replace("</w>", ""))


def map_size_for(latent_size: tuple[int, int]) -> tuple[int, int]:
    """The latent size, halved while its longer side exceeds MAX_MAP_SIDE."""
    height, width = latent_size
    while max(height, width) > MAX_MAP_SIDE:
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


def map_stride(word_count: int, map_size: tuple[int, int], steps: int, budget: int = MAX_MAP_BYTES) -> int:
    """The smallest k such that keeping every k-th step's float16 maps of all words stays within `budget` bytes."""
    per_step = word_count * map_size[0] * map_size[1] * 2
    stride = 1
    while stride < steps and math.ceil(steps / stride) * per_step > budget:
        stride += 1
    return stride


def attention_note(pipe, mid_block: bool = False) -> str:
    """Which attention the maps show, for the page and the trace file."""
    layers = MID_LAYERS if mid_block else DAAM_LAYERS
    how = (
        f"DAAM's rule: cross-attention of the UNet's {layers}, each layer and head upsampled (bicubic), averaged "
        "over layers and heads, a word's tokens averaged. Negative words: the with-run's negative branch; prompt "
        "words: its text branch."
    )
    if getattr(pipe, "text_encoder_2", None) is not None:
        return (
            "SDXL: the UNet's cross-attention over both text encoders' token embeddings, joined per token "
            "(CLIP ViT-L and OpenCLIP bigG split text alike), so each map covers a word in both encoders. " + how
        )
    return "The UNet's cross-attention over the CLIP text encoder's tokens. " + how


def plan_attention(pipe, settings, budget: int | None = None) -> AttentionPlan:
    """The maps one run of `settings` (checked) will record on `pipe`, within `budget` bytes (MAX_MAP_BYTES)."""
    tokenizer = pipe.tokenizer if pipe.tokenizer is not None else pipe.tokenizer_2
    embedding = read_embedding(pipe, settings.negative_embedding)  # its trigger reads as vectors in either text
    words = text_words(tokenizer, settings.negative, "negative", embedding)
    words += text_words(tokenizer, settings.prompt, "prompt", embedding)
    scale = pipe.vae_scale_factor
    latent_size = (settings.height // scale, settings.width // scale)
    map_size = map_size_for(latent_size)
    stride = map_stride(len(words), map_size, settings.steps, MAX_MAP_BYTES if budget is None else budget)
    mid_block = settings.attention_mid_block
    return AttentionPlan(words, map_size, latent_size, stride, attention_note(pipe, mid_block), mid_block=mid_block)


class AttentionRecorder(ModelHook):
    """While used as a context manager on `unet`: averages, during each UNet call, the mapped cross-attention layers'
    maps of the plan's words for one run (DAAM's rule, see the module docstring), and hands them over at the step's
    end (`take`). `call` is the branch hook's `DenoiserCall` (the step, and which rows hold the run)."""

    def __init__(self, unet, plan: AttentionPlan, call: DenoiserCall, run: int = 1):
        super().__init__(unet)
        self.plan, self.call, self.run = plan, call, run
        # per branch: token positions to read and the word each belongs to
        self.tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for source in SOURCES:
            pairs = [(pos, i) for i, word in enumerate(plan.words) if word.source == source for pos in word.positions]
            self.tokens[source] = (torch.tensor([p for p, _ in pairs]), torch.tensor([i for _, i in pairs]))
        self.token_counts = torch.tensor([max(len(word.positions), 1) for word in plan.words], dtype=torch.float32)
        self.sums: torch.Tensor | None = None  # [words, h, w] float32, on the UNet's device
        self.pairs = 0  # (layer, head) pairs summed into `sums` this step

    def install(self) -> None:
        """The mapped cross-attention layers (`mapped_layer`) report to this recorder."""
        mid_block = self.plan.mid_block
        self.replace_processors(
            lambda name, processor: RecordingProcessor(processor, self) if mapped_layer(name, mid_block) else processor
        )

    def add(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        """One cross-attention layer's contribution (called by the recording processor)."""
        if not self.plan.words or hidden_states.ndim != 3 or not self.plan.records(self.call.step):
            return
        rows = self.call.rows
        negative_row, text_row = rows.negative_row(self.run), rows.text_row(self.run)
        wanted = [
            (row, self.tokens[source])
            for row, source in ((negative_row, "negative"), (text_row, "prompt"))
            if row is not None and self.tokens[source][0].numel()
        ]
        if self.sums is None:
            self.sums = torch.zeros(len(self.plan.words), *self.plan.map_size, device=hidden_states.device)
        self.pairs += attn.heads  # every word's mean runs over the same pairs (a closed branch adds zeros)
        if not wanted:
            return
        rows = [row for row, _ in wanted]
        probabilities = attention_probabilities(attn, hidden_states[rows], encoder_hidden_states[rows])
        layer_size = self.layer_size(probabilities.shape[2])
        for branch, (_, (positions, owners)) in enumerate(wanted):
            positions, owners = positions.to(hidden_states.device), owners.to(hidden_states.device)
            per_head = probabilities[branch][:, :, positions]  # [heads, queries, tokens]
            maps = per_head.permute(2, 0, 1).reshape(-1, 1, *layer_size)  # [tokens·heads, 1, h, w]
            if layer_size != self.plan.map_size:
                maps = F.interpolate(maps, self.plan.map_size, mode="bicubic").clamp_(min=0)
            maps = maps.view(len(positions), attn.heads, *self.plan.map_size).sum(1)  # summed over heads
            self.sums.index_add_(0, owners, maps)

    def take(self) -> torch.Tensor | None:
        """This step's maps [words, h, w] float16 on the CPU, or None on a step the plan does not keep."""
        if not self.plan.records(self.call.step):
            return None
        if self.sums is None:
            maps = torch.zeros(len(self.plan.words), *self.plan.map_size)
        else:  # the mean over (layer, head) pairs, then over each word's tokens
            maps = self.sums / self.pairs / self.token_counts.to(self.sums.device)[:, None, None]
        self.sums, self.pairs = None, 0
        self.plan.recorded_steps.append(self.call.step)
        return maps.half().cpu()

    def layer_size(self, pixels: int) -> tuple[int, int]:
        """The (h, w) of a layer with `pixels` query positions: the latent size halved (rounding up, as the
        UNet's stride-2 convolutions do) until it matches."""
        height, width = self.plan.latent_size
        while height * width > pixels:
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        if height * width != pixels:
            raise ValueError(f"a cross-attention layer of {pixels} positions fits no size of the latents")
        return height, width


def attention_probabilities(attn, hidden_states: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ·scale) of a diffusers `Attention` layer, per head: [rows, heads, queries, tokens]."""
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query, key = attn.to_q(hidden_states), attn.to_k(context)
    rows, heads = query.shape[0], attn.heads
    query = query.view(rows, -1, heads, query.shape[-1] // heads).transpose(1, 2)
    key = key.view(rows, -1, heads, key.shape[-1] // heads).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    # in float32: q·kᵀ overflows float16 on some models (SD 2.x sets `upcast_attention` for that reason)
    scores = (query.float() @ key.float().transpose(-1, -2)) * attn.scale
    return scores.softmax(dim=-1)


class RecordingProcessor:
    """A cross-attention layer's processor that answers exactly as the original does and reports the layer's
    attention to the recorder."""

    def __init__(self, original, recorder: AttentionRecorder):
        self.original, self.recorder = original, recorder

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        output = self.original(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
        )
        if encoder_hidden_states is not None:
            self.recorder.add(attn, hidden_states, encoder_hidden_states)
        return output


def mapped_layer(name: str, mid_block: bool) -> bool:
    """Whether the processor `name` (as `unet.attn_processors` names it) is a cross-attention layer the maps
    average: the down and up blocks' (as DAAM), the mid block's only when asked."""
    blocks = ("down_blocks.", "up_blocks.", "mid_block.") if mid_block else ("down_blocks.", "up_blocks.")
    return name.endswith("attn2.processor") and name.startswith(blocks)
