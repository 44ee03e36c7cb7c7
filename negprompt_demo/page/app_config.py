"""How the page is served: which models it offers, whether visitors may name others, queue and upload bounds.

Anyone who can reach a shared instance (a Space, a share link, an address on a network) can type a model name,
so on any such deployment the model list is locked unless the operator says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field

from negprompt_demo.settings import EMBEDDED, InputError

# Hub models offered next to the embedded one: SD 1.5, a popular SD 1.5 fine-tune, SDXL base, SD3.5 medium and
# FLUX.1 dev/schnell (the last three need a GPU and the network; SD3.5 and FLUX.1-dev are gated on the Hub).
KNOWN_MODELS = (
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "Lykon/dreamshaper-8",
    "stabilityai/stable-diffusion-xl-base-1.0",
    "stabilityai/stable-diffusion-3.5-medium",
    "black-forest-labs/FLUX.1-dev",
    "black-forest-labs/FLUX.1-schnell",
)
# The only file the app takes from users is a negative embedding (4–100 KB, and only where the model list is not
# locked); Gradio refuses larger uploads before they reach the disk.
MAX_UPLOAD = "1mb"


@dataclass
class AppConfig:
    """One deployment's model policy and bounds."""

    default_model: str = EMBEDDED
    models: list[str] = field(default_factory=lambda: [EMBEDDED, *KNOWN_MODELS])
    lock_models: bool = False  # shared deployments: only `models`, no free-text model field
    concurrency: int = 1  # generations at once per device
    max_queue: int = 16  # device jobs that may wait (door.py: one per visitor, the rest refused)
    # A shared instance (a Space, a share link, a network address): direct REST routes closed, one job per visitor,
    # a device-time budget and a chunk cap per request, no upload route (door.py, cost.py).
    shared: bool = False
    trusted_proxy: bool = False  # a visitor is also the client address the proxy reports (X-Forwarded-For)
    max_request_seconds: float = 30.0  # shared: estimated device time of one request (cost.py)
    max_chunks: int = 3  # shared: 75-token chunks per prompt or negative prompt

    def __post_init__(self) -> None:
        # The default model is always offered, and first.
        self.models = [self.default_model] + [name for name in self.models if name != self.default_model]

    def check_model(self, name) -> str:
        """Server-side model check: a locked deployment refuses any name it does not list, whatever the browser
        sent, with one message whatever the name (so it tells nothing about the server's folders)."""
        if name is not None and not isinstance(name, str):
            raise InputError("The model must be given by its name (text).")
        name = (name or "").strip() or self.default_model
        if self.lock_models and name not in self.models:
            raise InputError(f"This deployment only offers these models: {', '.join(self.models)}.")
        return name

    def check_embedding(self, source) -> None:
        """A locked deployment takes no negative embedding: a file name from a client would make the server read
        (or download) a file that client chose. Unlocked, the page uploads the file, and the API and CLI name it."""
        if self.lock_models and isinstance(source, str) and source.strip():
            raise InputError(
                "This deployment does not take negative embeddings (shared instances never open a file a client "
                "names); run the app on your own machine to use one."
            )


def is_loopback(host: str | None) -> bool:
    """Whether a bind address serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """Shared deployments (a --share link, a Hugging Face Space, any bind address that is not loopback) lock the
    model list unless told otherwise (--no-lock-models) and get a shared instance's bounds unless --no-shared."""
    shared = args.share or bool(os.environ.get("SPACE_ID")) or not is_loopback(args.host)
    if args.shared is not None:
        shared = args.shared
    offered = [name.strip() for name in (args.models or "").split(",") if name.strip()]
    return AppConfig(
        default_model=args.model,
        models=offered or [EMBEDDED, *KNOWN_MODELS],
        lock_models=shared if args.lock_models is None else args.lock_models,
        concurrency=max(1, args.concurrency),
        max_queue=max(1, args.max_queue),
        shared=shared,
        trusted_proxy=bool(args.trust_proxy),
        max_request_seconds=args.max_request_seconds,
    )
