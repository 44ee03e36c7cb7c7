"""The app's command line, parsed before gradio and torch are imported so that `python demo.py --help` (and a
usage error) answers at once; `serve` then builds the page (`app.build_app`) and serves it until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import threading

from negprompt_demo.settings import default_model


def env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    return None if not value else value in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python demo.py", description="Open the negative-prompt comparison page.")
    parser.add_argument(
        "--model",
        default=default_model(),
        help="default model: 'embedded' (default, offline), a hub id owner/name or a local diffusers folder "
        "[env NEGPROMPT_MODEL]",
    )
    parser.add_argument(
        "--models",
        default=os.environ.get("NEGPROMPT_MODELS"),
        help="comma-separated models the selector offers (default: embedded and a few well-known hub models) "
        "[env NEGPROMPT_MODELS]",
    )
    parser.add_argument(
        "--lock-models",
        action=argparse.BooleanOptionalAction,
        default=env_flag("NEGPROMPT_LOCK_MODELS"),
        help="allow only the offered models and turn the free-text model field off; default: on with --share "
        "and on Hugging Face Spaces, off otherwise [env NEGPROMPT_LOCK_MODELS]",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 for the network)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ["GRADIO_SERVER_PORT"]) if os.environ.get("GRADIO_SERVER_PORT") else None,
        help="port (default: the first free one from 7860)",
    )
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=1, help="generations at once (default 1 per device)")
    parser.add_argument("--max-queue", type=int, default=16, help="jobs that may wait (default 16)")
    parser.add_argument(
        "--shared",
        action=argparse.BooleanOptionalAction,
        default=env_flag("NEGPROMPT_SHARED"),
        help="a shared instance's bounds: direct REST routes closed, one job per visitor, a device-time budget "
        "per request, no uploads; default: on with --share, on Spaces and on a non-loopback --host "
        "[env NEGPROMPT_SHARED]",
    )
    parser.add_argument(
        "--trust-proxy",
        action="store_true",
        default=bool(env_flag("NEGPROMPT_TRUST_PROXY")),
        help="the app sits behind a reverse proxy that sets X-Forwarded-For: one job per client address too "
        "[env NEGPROMPT_TRUST_PROXY]",
    )
    parser.add_argument(
        "--max-request-seconds",
        type=float,
        default=30.0,
        help="shared instances: the most estimated device time one request may take (default 30)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    serve(build_parser().parse_args(argv))


def serve(args: argparse.Namespace) -> None:
    """Build the page for the parsed command line and serve it.

    This process's runs and Gradio's copies of what it serves live in one private folder (mode 0700), capped in
    size (`Handlers.new_job`) and removed at exit; SIGINT and SIGTERM close the server and exit."""
    # the heavy imports (gradio, torch, diffusers) only after parsing
    from negprompt_demo.page.app import build_app, launch_options
    from negprompt_demo.page.app_config import config_from_args
    from negprompt_demo.page.tracefile import private_folder
    from negprompt_demo.runner import ModelLoadError

    config = config_from_args(args)
    os.umask(0o077)  # every file this server writes (results, traces, Gradio's copies) is its user's only
    private = private_folder()
    os.environ["GRADIO_TEMP_DIR"] = str(private / "gradio")
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    try:
        demo = build_app(config, warm_first_example=True, private=private)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        prevent_thread_lock=True,
        **launch_options(config),
    )
    stopping = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopping.set())
    while not stopping.wait(1.0):
        pass
    demo.close()
    raise SystemExit(0)
