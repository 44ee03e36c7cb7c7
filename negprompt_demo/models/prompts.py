"""Text embeddings for a batch of runs: each run's prompt and negative prompt, encoded once per distinct text.

A pipeline call samples several runs side by side (per seed: the run without the negative prompt, the runs with
it, and optionally the run with the negative phrased in the prompt). diffusers takes the batch's embeddings as
`prompt_embeds` / `negative_prompt_embeds` (plus the pooled ones for SDXL, SD3 and FLUX.1), one row per batch
item; this module builds those rows.

A run's `negative` of None means what a plain diffusers call with no negative prompt uses: the encoded empty
string "" for SD 1.x/2.x, SD3 and FLUX.1, and for SDXL models with `force_zeros_for_empty_prompt` (the base model)
all-zero embeddings. The empty string "" is encoded as text on every model (how A1111 and ComfyUI users know the
baseline).

How a text is read, as AUTOMATIC1111's web UI reads it (`prompt_syntax.py` parses the weights):
- A plain text (no brackets, escapes or BREAK, no embedding trigger, at most 75 tokens) is encoded by the
  pipeline's own `encode_prompt`: exactly what a plain diffusers call gives.
- Anything else is tokenized fragment by fragment into chunks of 75 tokens (a chunk that would split words
  within 20 tokens after a comma breaks after the comma instead; BREAK starts a new chunk); each chunk is encoded
  on its own with its start and end tokens and padding, as diffusers encodes one prompt, and the chunks are
  concatenated (77 positions each). Weights multiply each token's output vector, after which the chunk's mean is
  restored (A1111's "Original" emphasis; without the restore where the mean is ~0, see MIN_MEAN_SHARE). For SDXL
  this happens in each text encoder, and the pooled embedding is the first chunk's.
- Every row of a batch then has the same number of chunks for the pipeline: shorter ones are padded with the
  encoded "" chunk (all-zero chunks for SDXL's zero baseline). The UNet still reads each text at its own length
  (A1111's default): `scheduled_text.TextLengths` and the guidance hook split the call where lengths differ, except
  in attention-map runs, which keep the padding (A1111's pad_cond_uncond option).

SD3/SD3.5 and FLUX.1 read the text as written, through their own `encode_prompt` (T5 included): `flow_models.py`
encodes them, and `engine.prepare` refuses A1111 syntax and negative embeddings for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from negprompt_demo.models.embeddings import NegativeEmbedding, trigger_in, vectors_injected, with_trigger
from negprompt_demo.models.families import family_of
from negprompt_demo.models.flow_models import encode_flow_runs, token_count
from negprompt_demo.syntax.prompt_syntax import Fragment, has_syntax, parse_weights

COMMA_BACKTRACK = 20  # A1111's default "comma padding backtrack"
# Restoring the chunk's mean after weighting divides by the weighted mean. Where an encoder's output has a mean near
# zero (a final LayerNorm without bias, as in the tiny test models: ~1e-9), that factor is rounding noise and can
# scale the whole chunk wildly or flip its sign. So the restore applies only where the mean is at least
# MIN_MEAN_SHARE of the mean magnitude and the factor is within MAX_MEAN_RESTORE; elsewhere the weights apply
# alone (A1111's "No norm" emphasis). The embedded model's share is 0.35 %, with factors near 0.99.
MIN_MEAN_SHARE = 1e-3
MAX_MEAN_RESTORE = 2.0
PLACEHOLDER_ID = 0  # the id in an embedding vector's place before its vector replaces it (A1111 uses 0 too)


@dataclass(frozen=True)
class RunText:
    """What one run of a seed is conditioned on."""

    prompt: str
    negative: str | None  # None: the model's own "no negative prompt" (see the module docstring)


@dataclass
class Chunk:
    """Up to 75 token ids (no start/end tokens), their weights, and which places hold embedding vectors."""

    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    vectors: dict[int, int] = field(default_factory=dict)  # place in `ids` → index of the embedding's vector


@dataclass
class Span:
    """A stretch of a chunk read with one weight, for people: its text, weight, and whether it is the embedding."""

    text: str
    weight: float
    embedding: bool = False


@dataclass
class PromptReading:
    """How a text was read: plain (diffusers' own encoding) or A1111-style, in chunks of spans."""

    text: str
    plain: bool
    token_count: int
    chunks: list[list[Span]]
    chunk_length: int = 75

    def as_dict(self) -> dict:
        return {
            "plain": self.plain,
            "tokens": self.token_count,
            "chunk_length": self.chunk_length,
            "chunks": [[vars(span) | {"weight": round(span.weight, 4)} for span in chunk] for chunk in self.chunks],
        }

    def markdown(self) -> str:
        """One line per chunk; weighted stretches as (text ×w), embeddings as ⟨name: n vectors⟩."""
        tokens = f"{self.token_count} token{'s' * (self.token_count != 1)}"
        if self.plain:
            return f"read as plain text: {tokens}, no weights"
        count = len(self.chunks)
        lines = [f"read A1111-style: {tokens} in {count} chunk{'s' * (count > 1)} of {self.chunk_length}"]
        for number, chunk in enumerate(self.chunks, 1):
            shown = " ".join(_span_markdown(span) for span in chunk if span.text.strip())
            lines.append(f"{number}. {shown or '(empty)'}")
        return "\n".join(lines)


def _span_markdown(span: Span) -> str:
    text = span.text.strip().replace("`", "'")
    text = f"⟨{text}⟩" if span.embedding else text
    return f"`{text}`" if span.weight == 1 else f"**(`{text}` ×{span.weight:.3g})**"


def text_pairs(pipe) -> list[tuple[str, object, object]]:
    """(encoder attribute, tokenizer, text encoder) for each text encoder the pipeline has, in diffusers' order."""
    pairs = [("text_encoder", pipe.tokenizer, pipe.text_encoder)]
    if family_of(pipe).two_clips:
        pairs.append(("text_encoder_2", pipe.tokenizer_2, pipe.text_encoder_2))
    return [(name, tokenizer, encoder) for name, tokenizer, encoder in pairs if encoder is not None]


def is_plain(tokenizer, text: str, embedding: NegativeEmbedding | None) -> bool:
    """Whether the text takes diffusers' own path: no syntax, no embedding trigger, one chunk."""
    if has_syntax(text) or (embedding is not None and trigger_in(tokenizer, text, embedding)):
        return False
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    return len(ids) <= chunk_length(tokenizer)


def chunk_length(tokenizer) -> int:
    return tokenizer.model_max_length - 2


def tokenize_chunks(tokenizer, text: str, embedding: NegativeEmbedding | None) -> list[Chunk]:
    """The text in A1111's chunks (see the module docstring)."""
    length = chunk_length(tokenizer)
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks: list[Chunk] = []
    chunk, last_comma = Chunk(), -1

    def close() -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk, last_comma = Chunk(), -1

    for fragment in parse_weights(text):
        if fragment.weight is None:  # BREAK
            close()
            continue
        for token in _fragment_tokens(tokenizer, fragment, embedding):
            if token == comma:
                last_comma = len(chunk.ids)
            elif len(chunk.ids) == length and last_comma != -1 and len(chunk.ids) - last_comma <= COMMA_BACKTRACK:
                chunk, moved = _split_after(chunk, last_comma + 1)
                close()
                chunk = moved
            if isinstance(token, tuple):  # an embedding: all its vectors in one chunk
                if len(chunk.ids) + embedding.vector_count > length:
                    close()
                for index in range(embedding.vector_count):
                    chunk.vectors[len(chunk.ids)] = index
                    chunk.ids.append(PLACEHOLDER_ID)
                    chunk.weights.append(fragment.weight)
                continue
            if len(chunk.ids) == length:
                close()
            chunk.ids.append(token)
            chunk.weights.append(fragment.weight)
    if chunk.ids or not chunks:
        close()
    return chunks


def _fragment_tokens(tokenizer, fragment: Fragment, embedding: NegativeEmbedding | None) -> list:
    """A fragment's token ids, with ("embedding",) where its trigger's token ids stand (A1111 tokenizes each
    fragment on its own and looks for the name's ids in them)."""
    ids = tokenizer(fragment.text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    return ids if embedding is None else with_trigger(ids, embedding.trigger_ids(tokenizer))


def _split_after(chunk: Chunk, place: int) -> tuple[Chunk, Chunk]:
    """The chunk cut at `place`: what stays, and what moves to the next chunk."""
    kept = Chunk(chunk.ids[:place], chunk.weights[:place], {p: i for p, i in chunk.vectors.items() if p < place})
    moved_vectors = {p - place: i for p, i in chunk.vectors.items() if p >= place}
    return kept, Chunk(chunk.ids[place:], chunk.weights[place:], moved_vectors)


def read_prompt(pipe, text: str, embedding: NegativeEmbedding | None = None) -> PromptReading:
    """How the text is read (with the first tokenizer; SDXL's two share one vocabulary). SD3 and FLUX.1 read it
    as plain text, counted in T5 tokens (their chunk length: what T5 reads)."""
    if family_of(pipe).flow_matching:
        count, limit = token_count(pipe, text)
        return PromptReading(text, True, count, [[Span(text, 1.0)]] if text else [], limit)
    tokenizer = text_pairs(pipe)[0][1]
    if is_plain(tokenizer, text, embedding):
        count = len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)
        return PromptReading(text, True, count, [[Span(text, 1.0)]] if text else [], chunk_length(tokenizer))
    chunks = tokenize_chunks(tokenizer, text, embedding)
    spans = [_spans(tokenizer, chunk, embedding) for chunk in chunks]
    count = sum(len(chunk.ids) for chunk in chunks)
    return PromptReading(text, False, count, spans, chunk_length(tokenizer))


def _spans(tokenizer, chunk: Chunk, embedding: NegativeEmbedding | None) -> list[Span]:
    """Consecutive tokens of one weight as one span; an embedding's vectors as one span of their own."""
    spans: list[Span] = []
    ids: list[int] = []
    for place, (token, weight) in enumerate(zip(chunk.ids, chunk.weights)):
        is_vector = place in chunk.vectors
        if is_vector and chunk.vectors[place] > 0:
            continue  # the rest of the embedding's vectors: already shown
        if ids and (is_vector or spans[-1].weight != weight):
            spans[-1].text = tokenizer.decode(ids)
            ids = []
        if is_vector:
            count = embedding.vector_count
            spans.append(Span(f"{embedding.name}: {count} vector{'s' * (count > 1)}", weight, embedding=True))
            continue
        if not ids:
            spans.append(Span("", weight))
        ids.append(token)
    if ids:
        spans[-1].text = tokenizer.decode(ids)
    return spans


def chunk_message(reading: PromptReading, field_name: str) -> str | None:
    """The note for a text longer than one chunk (it is read whole, in chunks, rather than cut)."""
    if len(reading.chunks) <= 1:
        return None
    return (
        f"The {field_name} is {reading.token_count} tokens: read in {len(reading.chunks)} chunks of "
        f"{reading.chunk_length} (A1111 style), none cut."
    )


def encode_text(pipe, text: str, embedding: NegativeEmbedding | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One text's embeddings [1, 77·chunks, width] and, for SDXL, its pooled embedding [1, width_2]."""
    device = pipe._execution_device
    pairs = text_pairs(pipe)
    sdxl = family_of(pipe).two_clips
    if is_plain(pairs[0][1], text, embedding):
        encoded = pipe.encode_prompt(
            prompt=text, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return encoded[0], (encoded[2] if sdxl else None)
    # One reading for both SDXL encoders (their tokenizers share a vocabulary; start, end and padding are each's).
    chunks = tokenize_chunks(pairs[0][1], text, embedding)
    per_encoder, pooled = [], None
    for attribute, tokenizer, encoder in pairs:
        vectors = None if embedding is None else embedding.vectors[attribute]
        encoded = [_encode_chunk(tokenizer, encoder, chunk, vectors, sdxl, device) for chunk in chunks]
        if sdxl and attribute == "text_encoder_2":
            pooled = encoded[0][1]  # the first chunk's, as A1111
        per_encoder.append(torch.cat([hidden for hidden, _ in encoded], dim=1))
    return torch.cat(per_encoder, dim=-1).to(dtype=pairs[-1][2].dtype, device=device), pooled


def _encode_chunk(tokenizer, encoder, chunk: Chunk, vectors, sdxl: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk through one text encoder, as diffusers encodes a prompt: [start] ids [end] [pad…], 77 places;
    then A1111's weighting. Returns (hidden states [1, 77, width], the encoder's first output)."""
    pad = chunk_length(tokenizer) - len(chunk.ids)
    ids = [tokenizer.bos_token_id, *chunk.ids, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
    weights = torch.tensor([1.0, *chunk.weights, 1.0] + [1.0] * pad, device=device)
    input_ids = torch.tensor([ids], device=device)
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        mask = torch.tensor([[1] * (len(chunk.ids) + 2) + [0] * pad], device=device)
    replacements = {place + 1: vectors[index] for place, index in chunk.vectors.items()}  # +1: the start token
    with vectors_injected(encoder, replacements):
        if sdxl:
            output = encoder(input_ids, output_hidden_states=True)
            hidden = output.hidden_states[-2]
        else:
            output = encoder(input_ids, attention_mask=mask)
            hidden = output[0]
    if not torch.all(weights == 1):
        hidden = _emphasis(hidden, weights).to(hidden.dtype)
    return hidden, output[0]


def _emphasis(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis: every token's vector times its weight, then the chunk's mean restored (see
    MIN_MEAN_SHARE for where the restore is left out)."""
    original = hidden.float()
    weighted = original * weights[None, :, None]
    mean = original.mean()
    restore = mean / weighted.mean()
    if mean.abs() >= MIN_MEAN_SHARE * original.abs().mean() and 1 / MAX_MEAN_RESTORE <= restore <= MAX_MEAN_RESTORE:
        weighted = weighted * restore
    return weighted


def encoded_length(pipe, text: str | None, embedding: NegativeEmbedding | None) -> int | None:
    """How many places `encode_text` gives the text (77 per chunk), without encoding it. None: SDXL's zero
    baseline (zeros read the same at any length: every key alike, every value zero)."""
    tokenizer = text_pairs(pipe)[0][1]
    if text is None:
        return None if family_of(pipe).zero_empty_negative(pipe) else tokenizer.model_max_length
    if is_plain(tokenizer, text, embedding):
        return tokenizer.model_max_length
    return len(tokenize_chunks(tokenizer, text, embedding)) * tokenizer.model_max_length


def pad_to(hidden: torch.Tensor, length: int, pad_chunk: torch.Tensor) -> torch.Tensor:
    """[1, L, w] padded to `length` places with copies of `pad_chunk` [1, 77, w]."""
    missing = (length - hidden.shape[1]) // pad_chunk.shape[1]
    return torch.cat([hidden, *[pad_chunk] * missing], dim=1) if missing > 0 else hidden


def encode_runs(
    pipe, texts: list[RunText], seed_count: int, cfg_active: bool, embedding: NegativeEmbedding | None = None
) -> dict:
    """The embeddings keyword arguments of a pipeline call whose batch is `texts` repeated for each of
    `seed_count` seeds (items [seed0 run0, seed0 run1, ..., seed1 run0, ...])."""
    family = family_of(pipe)
    if family.flow_matching:  # SD3, FLUX.1: their own encoding (no embedding: engine.prepare refuses one)
        return encode_flow_runs(pipe, texts, seed_count, cfg_active)
    sdxl, zeros_for_none = family.two_clips, family.zero_empty_negative(pipe)
    wanted = [text.prompt for text in texts]
    if cfg_active:
        wanted += [text.negative for text in texts if text.negative is not None]
        wanted += [] if zeros_for_none or all(text.negative is not None for text in texts) else [""]
    encoded = {text: encode_text(pipe, text, embedding) for text in dict.fromkeys(wanted)}
    length = max(hidden.shape[1] for hidden, _ in encoded.values())
    empty_chunk = encoded[""][0] if "" in encoded else encode_text(pipe, "", None)[0]

    def row(text: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if text is None and zeros_for_none:  # diffusers' zeros, as long as the rest
            prompt_hidden, prompt_pooled = encoded[texts[0].prompt]
            return torch.zeros_like(pad_to(prompt_hidden, length, empty_chunk)), torch.zeros_like(prompt_pooled)
        hidden, pooled = encoded["" if text is None else text]
        return pad_to(hidden, length, empty_chunk), pooled

    def batch(rows: list[torch.Tensor]) -> torch.Tensor:
        one_seed = torch.cat(rows)
        return one_seed.repeat(seed_count, *([1] * (one_seed.ndim - 1)))

    prompts = [row(text.prompt) for text in texts]
    embeds = {"prompt_embeds": batch([hidden for hidden, _ in prompts])}
    if sdxl:
        embeds["pooled_prompt_embeds"] = batch([pooled for _, pooled in prompts])
    if cfg_active:
        negatives = [row(text.negative) for text in texts]
        embeds["negative_prompt_embeds"] = batch([hidden for hidden, _ in negatives])
        if sdxl:
            embeds["negative_pooled_prompt_embeds"] = batch([pooled for _, pooled in negatives])
    return embeds
