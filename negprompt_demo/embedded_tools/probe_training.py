"""Training and measuring the attribute probe (`probe-train`, `probe-accuracy`); the probe itself is in
`negprompt_demo.embedded.probe`.

Generated faces are blurrier than drawn ones, so the probe is trained on drawn portraits of which
half went through the model's own VAE (encode + decode) and some were blurred; its accuracy is
reported on held-out drawn portraits and on their VAE round trips (docs/EMBEDDED.md). The "face"
output is trained against images without a face (blobs, shuffled tiles, decoded random latents),
so "the probe still finds a face" is a real check that a negative prompt did not wreck the image.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from safetensors.torch import save_file

from negprompt_demo.embedded import PROBE_PATH
from negprompt_demo.embedded.faces import ATTRIBUTES, SIZE, draw_non_face, make_dataset
from negprompt_demo.embedded.probe import Probe, ProbeNet, to_input


@torch.no_grad()
def vae_roundtrip(vae: torch.nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Encode and decode through the model's VAE: the blur and artefacts generated images carry."""
    out = []
    for i in range(0, len(images), batch):
        x = to_input(images[i : i + batch])
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def _decoded_noise(vae: torch.nn.Module, n: int, seed: int) -> np.ndarray:
    """Decoded random latents: non-faces with the VAE's texture, so "face" cannot mean "looks decoded"."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, SIZE // 4, SIZE // 4, generator=g) * 0.25
    y = vae.decode(z).sample
    return ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def _blur(images: np.ndarray, rng: random.Random, share: float) -> np.ndarray:
    """Gaussian-blur a random `share` of the images: generated faces are softer than drawn ones."""
    out = images.copy()
    for i in range(len(out)):
        if rng.random() < share:
            radius = rng.uniform(0.3, 1.2)
            out[i] = np.asarray(Image.fromarray(out[i]).filter(ImageFilter.GaussianBlur(radius)))
    return out


def build_probe_data(vae: torch.nn.Module, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, attribute labels, face flags): n portraits (half VAE round trips, some blurred), n/4 non-faces."""
    rng = random.Random(seed)
    images, labels, _ = make_dataset(n, seed=seed)
    half = n // 2
    images[:half] = vae_roundtrip(vae, images[:half])
    images = _blur(images, rng, 0.3)
    non_faces = np.stack([np.asarray(draw_non_face(rng)) for _ in range(n // 8)])
    non_faces = np.concatenate([non_faces, _decoded_noise(vae, n // 8, seed)])
    all_images = np.concatenate([images, non_faces])
    all_labels = np.concatenate([labels, np.zeros((len(non_faces), len(ATTRIBUTES)), dtype=bool)])
    face = np.concatenate([np.ones(n, dtype=bool), np.zeros(len(non_faces), dtype=bool)])
    return all_images, all_labels, face


def train_probe(
    vae: torch.nn.Module, n: int = 24_000, steps: int = 3_000, seed: int = 0, out: Path = PROBE_PATH
) -> ProbeNet:
    """Train the probe with BCE; attribute losses only on faces. Saves safetensors to `out`."""
    torch.manual_seed(seed)
    print(f"building {n} portraits (half through the VAE) and {n // 4} non-faces", flush=True)
    images, labels, face = build_probe_data(vae, n, seed=seed + 100)
    x_all, y_all = to_input(images), torch.from_numpy(labels).float()
    f_all = torch.from_numpy(face).float()
    net = ProbeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    net.train()
    print("training", flush=True)
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (128,), generator=g)
        x, y, f = x_all[idx], y_all[idx], f_all[idx]
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()  # small translations
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        logits = net(x)
        attr_loss = F.binary_cross_entropy_with_logits(logits[:, :-1], y, reduction="none").mean(1)
        loss = (attr_loss * f).sum() / f.sum().clamp(min=1) + F.binary_cross_entropy_with_logits(logits[:, -1], f)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"probe step {step} loss {loss.item():.4f}", flush=True)
    net.eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out)
    return net


def probe_accuracy(vae: torch.nn.Module, n: int = 2_000, seed: int = 12345) -> dict[str, dict[str, float]]:
    """Per-output accuracy on held-out drawn portraits, on their VAE round trips, and face vs non-face."""
    probe = Probe()
    rng = random.Random(seed)
    images, labels, _ = make_dataset(n, seed=seed)
    result: dict[str, dict[str, float]] = {}
    for name, imgs in (("drawn", images), ("vae_roundtrip", vae_roundtrip(vae, images))):
        pred = probe.predict(imgs)
        result[name] = {a: float((pred[a] == labels[:, k]).mean()) for k, a in enumerate(ATTRIBUTES)}
        result[name]["face"] = float(pred["face"].mean())
    non_faces = np.stack([np.asarray(draw_non_face(rng)) for _ in range(n // 2)])
    non_faces = np.concatenate([non_faces, _decoded_noise(vae, n // 2, seed)])
    result["non_faces"] = {"face": float(1.0 - probe.predict(non_faces)["face"].mean())}
    return result
