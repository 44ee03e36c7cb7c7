"""Train the embedded model from scratch: a tiny Stable Diffusion on procedural cartoon portraits.

Two stages, both resumable, both deterministic given --seed:

1. `vae`: a small AutoencoderKL (64x64x3 <-> 16x16x4, factor 4 like SD's factor 8 on 512 px);
2. `diffusion`: a UNet2DConditionModel (cross-attention at 16x16 and 8x8) and a tiny CLIPTextModel
   (the three built in `architecture.py`) on the VAE's latents (the text encoder frozen at first, then trained
   jointly; see TrainConfig), with 10 % empty captions for classifier-free guidance.

At the end the EMA weights are written as a standard diffusers folder that loads with
`StableDiffusionPipeline.from_pretrained(folder)`. Runs on CPU (2 cores: see docs/EMBEDDED.md for
the wall time) or on a GPU if one is visible. Usage:

    python -m negprompt_demo.embedded_tools train --bpe /tmp/oc/bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
)
from tqdm import tqdm
from transformers import CLIPTokenizer

from negprompt_demo.embedded import MODEL_DIR
from negprompt_demo.embedded.faces import MENTION_P, Portrait, caption, caption_vocabulary, make_dataset
from negprompt_demo.embedded_tools.architecture import SD_SCHEDULE, build_text_encoder, build_unet, build_vae
from negprompt_demo.embedded_tools.clip_vocab import derive_tokenizer_files
from negprompt_demo.models.vocabulary import VOCABULARY_FILE, vocabulary_document


@dataclass
class TrainConfig:
    run_dir: Path = Path("runs/embedded")
    out_dir: Path = MODEL_DIR
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    threads: int | None = None  # fixed CPU thread count; None adapts to the machine's load
    # stage 1: VAE
    vae_images: int = 40_000
    vae_steps: int = 1_300
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    # stage 2: UNet + text encoder
    images: int = 60_000
    steps: int = 12_000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 300
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    checkpoint_every: int = 250
    # Caption curriculum: within these steps templates name present attributes with this probability
    # instead of MENTION_P, so that each caption carries more signal while the UNet learns to read the
    # text; the steps after the window restore the intended plain-prompt statistics (MENTION_P).
    bootstrap_steps: tuple[int, int] = (0, 6_000)
    bootstrap_mention_p: float = 0.6
    # The text encoder. Trained jointly from the first step with CLIP's usual initialisation (token
    # embeddings of std 0.02), it collapsed in an earlier run: while the UNet still ignores the text, any
    # prompt dependence only adds noise, so its outputs became nearly prompt-independent (mean |difference|
    # between two prompts 0.29 at init, 0.01 after 2,500 steps) and the UNet never learned to read them.
    # Now its token embeddings start with std `token_embedding_std`, so that each output position is
    # dominated by its own token (a word means the same vector wherever it stands, easy to attend to), and
    # it is held frozen until `text_frozen_until`, then trained jointly at `text_lr_mult` times the rate.
    token_embedding_std: float = 1.0
    text_frozen_until: int = 3_000
    text_lr_mult: float = 0.3


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], as diffusers VAEs expect."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def adapt_threads(max_threads: int) -> None:
    """Use one thread while other processes are busy on this machine, all of them otherwise.

    On a shared 2-core machine, two torch threads fighting a third process are 2-3x slower than one
    thread (the OpenMP barrier waits for the descheduled thread); alone, two threads are 1.7x faster.
    """
    if not hasattr(os, "getloadavg") or torch.cuda.is_available() or max_threads == 1:
        return
    others = os.getloadavg()[0] - torch.get_num_threads()
    torch.set_num_threads(1 if others > 0.6 else max_threads)


def _save(path: Path, **state: object) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


# ---------------------------------------------------------------- stage 1: VAE


def train_vae(cfg: TrainConfig) -> AutoencoderKL:
    """Train (or resume, or just load a finished) VAE; returns it in eval mode."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = cfg.run_dir / "vae.pt"
    torch.manual_seed(cfg.seed)
    vae = build_vae().to(cfg.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=cfg.device)
        vae.load_state_dict(state["model"])
        start = state["step"]
        opt.load_state_dict(state["opt"])
    if start >= cfg.vae_steps:
        return vae.eval()

    images, _, _ = make_dataset(cfg.vae_images, seed=cfg.seed + 1)
    data = to_tensor(images)
    log = open(cfg.run_dir / "vae_loss.csv", "a", newline="")
    writer = csv.writer(log)
    bar = tqdm(range(start, cfg.vae_steps), desc="vae", initial=start, total=cfg.vae_steps)
    max_threads = torch.get_num_threads()
    for step in bar:
        if step % 25 == 0:
            adapt_threads(max_threads)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # per-step RNG: exact resume
        x = data[torch.randint(0, len(data), (cfg.vae_batch,), generator=g)].to(cfg.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.vae_steps, cfg.vae_lr, 100)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        loss = rec + cfg.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(rec=f"{rec.item():.4f}")
        writer.writerow([step, f"{rec.item():.5f}"])
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
            _save(ckpt, model=vae.state_dict(), opt=opt.state_dict(), step=step + 1)
            log.flush()
    log.close()
    return vae.eval()


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: np.ndarray, device: str, batch: int = 256) -> torch.Tensor:
    """Posterior means of the VAE for all training images (unscaled)."""
    out = []
    for i in tqdm(range(0, len(images), batch), desc="encode"):
        out.append(vae.encode(to_tensor(images[i : i + batch]).to(device)).latent_dist.mean.cpu())
    return torch.cat(out)


# ---------------------------------------------------------------- stage 2: UNet + text encoder


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


def _training_latents(cfg: TrainConfig, vae: AutoencoderKL) -> tuple[torch.Tensor, list[Portrait], float]:
    """VAE latents of the training portraits (cached in run_dir), the portraits' labels, and the scale that gives
    the latents unit variance (the exported VAE's `scaling_factor`)."""
    cache = cfg.run_dir / f"latents_{cfg.images}_{cfg.seed}.pt"
    _, _, portraits = make_dataset(cfg.images, seed=cfg.seed + 2)
    if cache.exists():
        latents = torch.load(cache)
    else:
        images = np.stack([np.asarray(p.image) for p in portraits])
        latents = encode_latents(vae, images, cfg.device)
        torch.save(latents, cache)
    for p in portraits:
        p.image = None  # keep only labels and colours (captions are re-drawn every step)
    print(f"latents {tuple(latents.shape)} mean {latents.mean():.3f} std {latents.std():.3f}")
    return latents, portraits, 1.0 / latents.std().item()


def _diffusion_models(cfg: TrainConfig) -> dict[str, torch.nn.Module]:
    """UNet, text encoder and their EMA copies, keyed as in the checkpoint."""
    torch.manual_seed(cfg.seed)
    unet = build_unet().to(cfg.device)
    text = build_text_encoder(cfg.token_embedding_std).to(cfg.device)
    ema_unet, ema_text = build_unet().to(cfg.device), build_text_encoder().to(cfg.device)
    ema_unet.load_state_dict(unet.state_dict())
    ema_text.load_state_dict(text.state_dict())
    return {"unet": unet, "text": text, "ema_unet": ema_unet, "ema_text": ema_text}


def _training_batch(
    cfg: TrainConfig,
    step: int,
    latents: torch.Tensor,
    portraits: list[Portrait],
    scaling: float,
    tokenizer: CLIPTokenizer,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token ids, scaled latents, noise, timesteps) for one step, from per-step RNGs so that a resume is exact."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(0, len(latents), (cfg.batch,), generator=g)
    lo, hi = cfg.bootstrap_steps
    mention_p = cfg.bootstrap_mention_p if lo <= step < hi else MENTION_P
    captions = [caption(portraits[i], rng, mention_p) for i in idx.tolist()]
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    x0 = (latents[idx] * scaling).to(cfg.device)
    noise = torch.randn(x0.shape, generator=g).to(cfg.device)
    t = torch.randint(0, 1000, (cfg.batch,), generator=g).to(cfg.device)
    return ids.to(cfg.device), x0, noise, t


def _set_learning_rates(cfg: TrainConfig, opt: torch.optim.Optimizer, text: torch.nn.Module, step: int) -> None:
    """UNet on the warm-up/cosine schedule; the text encoder frozen, then warmed up at `text_lr_mult` times it."""
    lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
    opt.param_groups[0]["lr"] = lr
    text.requires_grad_(step >= cfg.text_frozen_until)  # frozen: no gradients, Adam leaves it alone
    if step >= cfg.text_frozen_until:  # joint training, warmed up: Adam has no state for these weights yet
        warm = min(1.0, (step - cfg.text_frozen_until + 1) / 200)
        opt.param_groups[1]["lr"] = lr * cfg.text_lr_mult * warm


def train_diffusion(cfg: TrainConfig, vae: AutoencoderKL, tokenizer: CLIPTokenizer) -> None:
    """Train UNet and text encoder jointly (resumable); keeps EMA copies of both in the checkpoint."""
    latents, portraits, scaling = _training_latents(cfg, vae)
    models = _diffusion_models(cfg)
    unet, text = models["unet"], models["text"]
    params = list(unet.parameters()) + list(text.parameters())
    groups = [{"params": list(unet.parameters())}, {"params": list(text.parameters())}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)
    noise_sched = DDPMScheduler(**SD_SCHEDULE)
    alphas = noise_sched.alphas_cumprod.to(cfg.device)
    snr = alphas / (1 - alphas)

    ckpt, start = cfg.run_dir / "diffusion.pt", 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=cfg.device)
        for key, module in models.items():
            module.load_state_dict(state[key])
        start = state["step"]
        opt.load_state_dict(state["opt"])
    log = open(cfg.run_dir / "loss.csv", "a", newline="")
    writer = csv.writer(log)
    bar = tqdm(range(start, cfg.steps), desc="diffusion", initial=start, total=cfg.steps)
    t0, running = time.time(), None
    max_threads = torch.get_num_threads()
    for step in bar:
        if step % 25 == 0:
            adapt_threads(max_threads)
        ids, x0, noise, t = _training_batch(cfg, step, latents, portraits, scaling, tokenizer)
        xt = noise_sched.add_noise(x0, noise, t)
        _set_learning_rates(cfg, opt, text, step)
        pred = unet(xt, t, text(ids)[0]).sample
        # min-SNR weighting (Hang et al. 2023): faster convergence for epsilon prediction
        weight = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(models["ema_unet"], unet, decay)
        _ema_update(models["ema_text"], text, decay)

        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}", threads=torch.get_num_threads())
        writer.writerow([step, f"{loss.item():.5f}", f"{running:.5f}", f"{time.time() - t0:.1f}"])
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            states = {key: module.state_dict() for key, module in models.items()}
            _save(ckpt, **states, opt=opt.state_dict(), step=step + 1, scaling=scaling)
            log.flush()
    log.close()


def export_pipeline(
    cfg: TrainConfig, vae: AutoencoderKL, tokenizer: CLIPTokenizer, out_dir: Path, defaults: dict
) -> None:
    """Write the EMA weights of the last checkpoint as a standard StableDiffusionPipeline folder."""
    state = torch.load(cfg.run_dir / "diffusion.pt", map_location="cpu")
    unet, text = build_unet(), build_text_encoder()
    unet.load_state_dict(state["ema_unet"])
    text.load_state_dict(state["ema_text"])
    vae = vae.cpu()
    vae.register_to_config(scaling_factor=state["scaling"])
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    info = {"trained_steps": state["step"], "seed": cfg.seed, "images": cfg.images, "batch": cfg.batch}
    (out_dir / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    (out_dir / "negprompt_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n")
    (out_dir / VOCABULARY_FILE).write_text(vocabulary_document(caption_vocabulary()))  # the engine's warnings read it


def sampling_defaults(out_dir: Path) -> dict:
    """The app settings to ship with the export: the out folder's own (a retrain keeps the settings its
    results table was measured at), else the shipped model's, which has the same architecture and size."""
    own = out_dir / "negprompt_defaults.json"
    return json.loads((own if own.is_file() else MODEL_DIR / "negprompt_defaults.json").read_text())


def train(cfg: TrainConfig, bpe: Path | None) -> None:
    """Both stages, then export. The tokenizer is derived from CLIP's BPE file, or reused: the run's, else the
    shipped model's committed files (the same CLIP vocabulary, whatever --out is)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok_dir = cfg.run_dir / "tokenizer"
    if bpe is not None:
        derive_tokenizer_files(bpe, tok_dir)
    elif not tok_dir.exists():
        tok_dir = MODEL_DIR / "tokenizer"
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    vae = train_vae(cfg)
    vae.requires_grad_(False)
    train_diffusion(cfg, vae, tokenizer)
    export_pipeline(cfg, vae, tokenizer, cfg.out_dir, sampling_defaults(cfg.out_dir))
    print(f"wrote {cfg.out_dir}")
