"""Soak: a shared instance (`python demo.py --shared`, embedded model) serving many mixed requests through its queue
as the page sends them: comparisons followed by step-slider moves, sweeps and small many-seeds grids.

Measures the server's RSS after the 20th, every 25th and the last request, its folder's size (runs, traces and
Gradio's cache, which `--shared` keeps in one private folder under TMPDIR) against its cap, the bytes written per
slider move, how long SIGINT takes to stop the server and whether the folder is gone after it.

    flock /tmp/heavy.lock python3 benchmarks/bench_soak.py --requests 200

With `--probe FOLDER` the server runs under a memory probe (`serve_with_probe`) that the soak signals (SIGUSR1)
after every 10th request and the last: each report in FOLDER gives RSS before and after glibc's malloc_trim, live
objects by type and what grew since the last report, live torch tensors, and how many component copies each Gradio
session holds; with `--probe-frames N` also tracemalloc's growth since the 20th request, by traceback (tracing
starts at the 10th). The probe trims the heap and tracing slows the server: a probed run's RSS is not the soak's.

    flock /tmp/heavy.lock python3 -m benchmarks.bench_soak --requests 60 --probe /tmp/probe
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx
import psutil

from negprompt_demo.page.handlers import UI_OUTPUTS
from negprompt_demo.page.tracefile import RUN_FOLDER_CAP, folder_bytes


def serve_with_probe(folder: Path, frames: int, demo_args: list[str]) -> None:
    """Run demo.py in this process with a SIGUSR1 handler that writes a memory report to `folder` (report-N.txt):
    RSS before and after glibc's malloc_trim (what the allocator holds but no longer uses), live objects by type
    and their change since the previous signal, torch tensors' bytes, each session's component copies and, with
    `frames` > 0, from the third signal on the tracemalloc allocations that grew since the second, grouped by
    traceback (`frames` deep)."""
    import runpy

    state = {"signals": 0, "types": collections.Counter(), "snapshot": None}
    process = psutil.Process()

    def report(*_) -> None:
        state["signals"] += 1
        number = state["signals"]
        lines = []
        gc.collect()
        rss = process.memory_info().rss
        trimmed = ctypes.CDLL("libc.so.6").malloc_trim(0)
        after = process.memory_info().rss
        lines.append(f"RSS {rss / 2**20:.1f} MiB, after malloc_trim {after / 2**20:.1f} MiB (released: {trimmed})")
        objects = gc.get_objects()
        types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
        import torch

        tensors = [o for o in objects if isinstance(o, torch.Tensor) and not o.is_meta]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        tensor_bytes = sum(storages.values())
        lines.append(f"live objects {len(objects)}, torch tensors {len(tensors)} ({tensor_bytes / 2**20:.1f} MiB)")
        growth = types - state["types"]
        lines.append("types that grew since the last signal:")
        lines += [f"  +{count:7d}  {name} (now {types[name]})" for name, count in growth.most_common(40)]
        state["types"] = types
        del objects, tensors
        for holder in [o for o in gc.get_objects() if type(o).__name__ == "StateHolder"]:
            for session, session_state in holder.session_data.items():
                own = session_state.blocks_config.blocks
                extra = [key for key in own if key not in holder.blocks.blocks]
                lines.append(f"session {session}: {len(own)} components, {len(extra)} not the app's (copies)")
        if frames and not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        elif frames:
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            if state["snapshot"] is None:
                state["snapshot"] = snapshot
            else:
                for key in ("filename", "traceback"):
                    lines.append(f"tracemalloc growth since the baseline, by {key}:")
                    for stat in snapshot.compare_to(state["snapshot"], key)[:25]:
                        lines.append(f"  {stat.size_diff / 2**10:+10.1f} KiB  {stat.count_diff:+7d} blocks")
                        shown = stat.traceback.format(limit=frames if key == "traceback" else 1, most_recent_first=True)
                        lines += [f"      {frame}" for frame in shown]
        (folder / f"report-{number}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    signal.signal(signal.SIGUSR1, report)
    sys.argv = ["demo.py", *demo_args]
    runpy.run_path("demo.py", run_name="__main__")


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
    parser.add_argument("--probe", type=Path, help="run the server under the memory probe; its reports go here")
    parser.add_argument(
        "--probe-frames", type=int, default=0, help="tracemalloc's traceback depth (0: no tracing, ~30x faster)"
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    env = {**os.environ, "TMPDIR": str(scratch), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1"}
    env["GRADIO_EXAMPLES_CACHE"] = str(scratch / "examples")
    command = [sys.executable, "demo.py", "--shared", "--port", str(port), "--max-request-seconds", "60"]
    if args.probe:
        args.probe.mkdir(parents=True, exist_ok=True)
        probe = ["--serve-with-probe", str(args.probe.resolve()), str(args.probe_frames)]
        command[1:2] = ["-m", "benchmarks.bench_soak", *probe]
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
        if number in (20, args.requests) or number % 25 == 0:
            rss[number] = process.memory_info().rss
            folder = folder_bytes(private) / 2**20
            print(f"{number:4d} requests  RSS {rss[number] / 2**20:7.1f} MiB  folder {folder:6.1f} MiB", flush=True)
        if args.probe and (number % 10 == 0 or number == args.requests):
            signal_probe(server, args.probe)
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


def signal_probe(server: subprocess.Popen, folder: Path) -> None:
    """Ask the probed server for a report and wait until it is written."""
    count = len(list(folder.glob("report-*.txt")))
    server.send_signal(signal.SIGUSR1)
    while len(list(folder.glob("report-*.txt"))) == count:
        assert server.poll() is None, "the server exited"
        time.sleep(0.5)
    print(f"probe report {count + 1} written", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-with-probe"]:
        serve_with_probe(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
    else:
        main()
