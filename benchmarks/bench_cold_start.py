"""Benchmark 4: cold start, from `python demo.py` to the page being served (HTTP 200 on /). Goal ≤ 15 s on CPU.

Each start is a fresh process. The app computes its first example before it starts serving, once per model
(then it is in Gradio's example cache), so there are two figures: the first start of a deployment (empty example
cache) and every later start, e.g. after a restart (example cached). Later starts are the median of --repeats.

    python -m benchmarks.bench_cold_start
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from benchmarks.common import (
    REPO,
    MachineLoad,
    Row,
    command_line,
    machine_state,
    median,
    print_table,
    spread,
    write_json,
)

GOAL_S = 15.0
DEADLINE_S = 180.0  # a start slower than this is a failure, not a figure


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def page_served(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and b"<html" in response.read(4096).lower()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def one_start(model: str, cache: str) -> float:
    """Seconds from spawning `python demo.py` until / answers 200 with the page; the server is then stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(
        os.environ,
        GRADIO_ANALYTICS_ENABLED="False",
        NO_PROXY="127.0.0.1,localhost",
        HF_HUB_OFFLINE="1",
        GRADIO_EXAMPLES_CACHE=cache,
    )
    command = [sys.executable, "demo.py", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    log = tempfile.TemporaryFile()  # not a pipe: a chatty child would block on a full pipe nobody reads
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not page_served(url):
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"demo.py exited with {process.returncode}: {log.read()[-2000:]!r}")
            if time.perf_counter() - started > DEADLINE_S:
                raise RuntimeError(f"the page was not served within {DEADLINE_S:g} s")
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and anything it started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def run(args: argparse.Namespace) -> list[Row]:
    with MachineLoad() as load, tempfile.TemporaryDirectory() as cache:
        first = one_start(args.model, cache)
        times = [one_start(args.model, cache) for _ in range(args.repeats)]
    figure = median(times)
    command = command_line("bench_cold_start", args, ["model", "repeats"])
    return [
        Row(
            name="cold start → page served (example cached)",
            figure=f"{figure:.1f} s",
            goal=f"≤ {GOAL_S:g} s",
            met=figure <= GOAL_S,
            command=command,
            details={"starts": spread(times), "other processes' CPU use (cores)": round(load.other_cores, 2)},
        ),
        Row(
            name="cold start → page served (first start of a deployment)",
            figure=f"{first:.1f} s",
            goal=f"≤ {GOAL_S:g} s",
            met=first <= GOAL_S,
            command=command,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = run(args)
    print(rows[0].details)
    state = machine_state()
    print_table(rows, state)
    write_json(None if args.json is None else __import__("pathlib").Path(args.json), rows, state)


if __name__ == "__main__":
    main()
