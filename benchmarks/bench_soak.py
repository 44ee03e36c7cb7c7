"""Soak: a shared instance (`python demo.py --shared`, embedded model) serving many mixed requests through its queue
as the page sends them: comparisons followed by step-slider moves, sweeps and small many-seeds grids.

Measures the server's RSS after the 20th and after the last request, its folder's size on disk (runs, traces and
Gradio's cache, which `--shared` keeps in one private folder under TMPDIR) against its cap, the bytes written per
slider move, how long SIGINT takes to stop the server and whether the folder is gone after it.

    flock /tmp/heavy.lock python3 benchmarks/bench_soak.py --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from negprompt_demo.page.handlers import UI_OUTPUTS
from negprompt_demo.page.tracefile import RUN_FOLDER_CAP, folder_bytes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Page:
    """One visitor's session, sending the page's events through the queue (as the browser does)."""

    def __init__(self, url: str, session: str):
        self.base, self.session = url + "gradio_api", session
        self.config = httpx.get(url + "config", timeout=60).json()
        self.components = {c["id"]: c.get("props", {}) for c in self.config["components"]}

    def fn(self, elem_id: str, trigger: str = "click") -> dict:
        target = next(i for i, props in self.components.items() if props.get("elem_id") == elem_id)
        return next(d for d in self.config["dependencies"] if [target, trigger] in d["targets"])

    def call(self, dependency: dict, values: dict) -> list:
        """Join the queue with the dependency's inputs (by label, else defaults) and read until it completes."""
        data = [
            values.get(self.components[i].get("label"), self.components[i].get("value")) for i in dependency["inputs"]
        ]
        body = {"data": data, "fn_index": dependency["id"], "session_hash": self.session}
        httpx.post(f"{self.base}/queue/join", json=body, timeout=60).raise_for_status()
        with httpx.stream("GET", f"{self.base}/queue/data", params={"session_hash": self.session}, timeout=600) as s:
            for line in s.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        if not message.get("success"):
                            raise RuntimeError(str(message.get("output"))[:300])
                        return message["output"]["data"]
        raise RuntimeError("the stream ended without a result")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--moves", type=int, default=3, help="step-slider moves after each comparison")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    env = {**os.environ, "TMPDIR": str(scratch), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1"}
    env["GRADIO_EXAMPLES_CACHE"] = str(scratch / "examples")
    command = [sys.executable, "demo.py", "--shared", "--port", str(port), "--max-request-seconds", "60"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(url + "config", timeout=5).raise_for_status()
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()[-2000:]
            time.sleep(1)
    process = psutil.Process(server.pid)
    private = next(scratch.glob("negprompt-demo-*"))
    page = Page(url, "soak")
    compare, sweep, seeds = page.fn("compare-button"), page.fn("sweep-button"), page.fn("seeds-button")
    step = page.fn("step", "release")
    trace_at = UI_OUTPUTS.index("trace_id")
    base = {"prompt": "portrait photo of a man", "steps": 10}
    rss, moves_bytes, started, failures = {}, [], time.perf_counter(), 0
    for number in range(1, args.requests + 1):
        values = {**base, "negative prompt": f"mustache, {number}", "seed (−1: random)": number}
        try:
            if number % 10 == 5:
                page.call(sweep, values)
            elif number % 10 == 0:
                page.call(seeds, {**values, "seeds": 4})
            else:
                trace_id = page.call(compare, values)[trace_at]
                if number == 1:
                    print(f"first trace id: {trace_id!r}", flush=True)
                for move in range(args.moves):
                    before = folder_bytes(private)
                    page.call(step, {"step": 1 + (3 * move + number) % 10, None: trace_id})  # trace_id: no label
                    moves_bytes.append(folder_bytes(private) - before)
        except RuntimeError as error:
            failures += 1
            print(f"request {number} failed: {error}", file=sys.stderr)
        if number in (20, args.requests) or number % 50 == 0:
            rss[number] = process.memory_info().rss
            folder = folder_bytes(private) / 2**20
            print(f"{number:4d} requests  RSS {rss[number] / 2**20:7.1f} MiB  folder {folder:6.1f} MiB", flush=True)
    seconds = time.perf_counter() - started
    disk = folder_bytes(private)
    interrupted = time.perf_counter()
    server.send_signal(signal.SIGINT)
    server.wait(timeout=60)
    stop_s = time.perf_counter() - interrupted
    growth = rss[args.requests] / rss[20] - 1
    print(
        json.dumps(
            {
                "requests": args.requests,
                "failures": failures,
                "seconds": round(seconds, 1),
                "rss_mib_after_20": round(rss[20] / 2**20, 1),
                "rss_mib_after_last": round(rss[args.requests] / 2**20, 1),
                "rss_growth_20_to_last_percent": round(100 * growth, 1),
                "folder_mib": round(disk / 2**20, 1),
                "folder_cap_mib": RUN_FOLDER_CAP // 2**20,
                "slider_moves": len(moves_bytes),
                "bytes_per_slider_move_mean": round(sum(moves_bytes) / max(1, len(moves_bytes))),
                "sigint_stop_s": round(stop_s, 2),
                "folder_removed_at_exit": not private.exists(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
