"""The one door to the device on a shared instance: every computing event through Gradio's queue, in bounded
lanes, one turn per visitor, and a way for a running job to learn that its client has gone.

Gradio's queue is the door (Gradio 6.31; it leaves `api_open` on outside Spaces, so `/gradio_api/run/<name>` and
the page's events by fn index would otherwise run beside the queue): a shared instance closes the direct routes
(`queue(api_open=False)`). The queue's own `max_size` counts every lane together, so one visitor's jobs could make
even a slider move wait or be refused; instead `Door.push` bounds each lane by itself:

- the "device" lane (comparisons, sweeps, many seeds, model loads): at most `max_queue` waiting in all and at most
  one queued-or-running job per visitor;
- the "render" lane (step-slider moves and other cheap reads of stored results): its own concurrency limit, at most
  RENDER_QUEUE waiting and RENDER_PER_VISITOR per visitor (a slider sends its newest position only);
- any other lane: at most `max_queue` waiting.

A visitor is a browser session (its session hash); when the app is told it sits behind a trusted proxy, also the
client address that proxy reports (the last entry of X-Forwarded-For, the one the proxy itself added). Without
that, a forwarded header is a client's own claim and is ignored.

On every instance, shared or not, a session drops the component copies Gradio left in it when its next event joins
the queue (`keep_sessions_small`).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import types

import gradio as gr
import gradio.queueing

from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.settings import MAX_ECHO_CHARS

log = logging.getLogger(__name__)

DEVICE_LANE, RENDER_LANE = "device", "render"
RENDER_CONCURRENCY = 2  # slider moves at once; each reads one step of a stored trace (tens of ms)
RENDER_QUEUE = 32
RENDER_PER_VISITOR = 2  # the move being drawn and the newest one (trigger_mode="always_last")
# What a client reads when its job is refused at the door (README "What a shared instance promises" quotes them).
QUEUE_FULL = "The queue is full ({waiting} jobs waiting); please try again in a minute."
ONE_TURN = (
    "You already have a job queued or running on this shared instance; wait for it to finish (or press Stop) "
    "before starting another."
)


class Door:
    """Lane bounds and visitor turns for one app's queue (see the module docstring)."""

    def __init__(self, demo: gr.Blocks, config: AppConfig):
        self.demo, self.config = demo, config
        self.queue = demo._queue  # Gradio's queue: its lanes and its running jobs are read, never changed here
        self._push = self.queue.push
        self.queue.push = self.push
        quiet_gradio_errors()

    def visitor(self, session_hash: str | None, request) -> set[str]:
        """The keys that name one visitor: its session, and its address when a trusted proxy reports it."""
        keys = {f"session:{session_hash}"}
        if self.config.trusted_proxy and request is not None:
            forwarded = request.headers.get("x-forwarded-for", "")
            address = forwarded.split(",")[-1].strip()
            if address:
                keys.add(f"address:{address}")
        return keys

    def jobs_in(self, lane: str) -> tuple[list, list]:
        """(waiting, running) events of one lane."""
        waiting = list(self.queue.event_queue_per_concurrency_id.get(lane).queue) if self._has(lane) else []
        running = [event for job in self.queue.active_jobs if job for event in job if event.concurrency_id == lane]
        return waiting, running

    def _has(self, lane: str) -> bool:
        return lane in self.queue.event_queue_per_concurrency_id

    async def push(self, body, request, username):
        """Gradio's `Queue.push`, after this door's checks; a refusal is one log line and one short message."""
        refusal = self.refusal(body, request)
        if refusal is not None:
            message, state = refusal
            log.info("refused at the queue: %s", message[:80])
            return False, message, state
        return await self._push(body=body, request=request, username=username)

    def refusal(self, body, request) -> tuple[str, str] | None:
        """(message, Gradio's state name) if this job may not join the queue, else None."""
        fns = self.demo.fns
        fn = fns.get(body.fn_index) if isinstance(body.fn_index, int) else None
        if fn is None:
            return None  # Gradio answers an unknown function itself
        lane = fn.concurrency_id
        waiting, running = self.jobs_in(lane)
        if lane == DEVICE_LANE:
            cap, per_visitor = self.config.max_queue, 1
        elif lane == RENDER_LANE:
            cap, per_visitor = RENDER_QUEUE, RENDER_PER_VISITOR
        else:
            cap, per_visitor = self.config.max_queue, None
        if len(waiting) >= cap:
            return QUEUE_FULL.format(waiting=len(waiting)), "queue_full"
        if per_visitor is not None:
            keys = self.visitor(body.session_hash, request)
            held = [e for e in waiting + running if e.alive and self.visitor(e.session_hash, e.request) & keys]
            if len(held) >= per_visitor:
                return (ONE_TURN if lane == DEVICE_LANE else "Too many slider moves at once."), "error"
        return None

    def gone(self, request: gr.Request | None):
        """A check for a running job: whether its client has gone (Gradio marks a session's running events dead
        when its event stream disconnects, but does not stop a job that is between two outputs)."""
        session_hash = getattr(request, "session_hash", None)
        if session_hash is None:
            return None

        def check() -> bool:
            events = [event for job in self.queue.active_jobs if job for event in job]
            return not any(event.alive for event in events if event.session_hash == session_hash)

        return check


def keep_sessions_small(demo: gr.Blocks) -> None:
    """Wrap the queue's `push` (before a Door does) so that a session's component copies are dropped
    (`drop_stale_copies`) each time one of its events joins the queue."""
    push = demo._queue.push

    async def push_after_dropping_copies(body, request, username):
        holder = getattr(demo, "state_holder", None)  # Gradio's sessions, there once the app is served
        session = holder.session_data.get(body.session_hash) if holder is not None else None
        if session is not None:
            drop_stale_copies(session, demo.blocks)
        return await push(body=body, request=request, username=username)

    demo._queue.push = push_after_dropping_copies


def drop_stale_copies(session, app_blocks: dict) -> int:
    """Remove from one Gradio session the components that are not the page's own; returns how many went.

    Why: Gradio 6.31 answers an update (`gr.skip()` too) by storing a new copy of the component, under a new id,
    in the session's place of the original; the next plain value for that component then also files the copy under
    its own id (`Blocks.postprocess_data`, `if block._id not in state: state[block._id] = block`), with a config
    entry. A page that streams partial updates leaves ~33 copies per comparison in a session, for as long as the
    session lives: the shared instance's RSS grew without a plateau. The page renders nothing per session (no
    gr.render), so every id that is not one of the app's blocks is such a copy, referenced by nothing else."""
    stale = [key for key in {*session.blocks_config.blocks, *session.config_values} if key not in app_blocks]
    for key in stale:
        session.blocks_config.blocks.pop(key, None)
        session.config_values.pop(key, None)
    return len(stale)


# Gradio's own input errors (a forged request's value out of a slider's range or a dropdown's choices) quote the
# value whole, and its queue prints a traceback for each: a client sending 4,000-character values could fill the
# log and read its own text back. On a shared instance both are cut to size.
_GRADIO_VALUE_ERROR = re.compile(
    r"^(Value:? )(.*?)( \(type: [^)]*\))?( is (?:not in the list of choices|less than minimum value|greater than "
    r"maximum value))(.*)$",
    re.DOTALL,
)


def capped_message(message: str) -> str:
    """A Gradio range or choice error with the value it quotes cut to MAX_ECHO_CHARS (the choices listed too)."""
    match = _GRADIO_VALUE_ERROR.match(message)
    if match is None:
        return message
    value, rest = match.group(2), match.group(5)
    cut = lambda text: text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"  # noqa: E731
    return f"{match.group(1)}{cut(value)}{match.group(4)}{cut(rest)}"


def quiet_gradio_errors() -> None:
    """Patch Gradio's queue (once per process): error messages capped (`capped_message`), and a gr.Error (a
    refused input) logged as one line instead of a traceback; any other exception keeps its traceback."""
    if getattr(gradio.queueing, "_negprompt_quiet", False):
        return
    original = gradio.queueing.error_payload

    def error_payload(error, show_error):
        content = original(error, show_error)
        if isinstance(content.get("error"), str):
            content["error"] = capped_message(content["error"])
        return content

    def print_exc(*args, **kwargs) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, gr.Error):
            log.info("refused: %s", capped_message(str(error))[:200].replace("\n", " "))
        else:
            traceback.print_exc(*args, **kwargs)

    gradio.queueing.error_payload = error_payload
    gradio.queueing.traceback = types.SimpleNamespace(print_exc=print_exc, format_exc=traceback.format_exc)
    gradio.queueing._negprompt_quiet = True
