"""A stand-in for Hugging Face's `spaces` package (ZeroGPU), modelled on `spaces/zero/wrappers.py` of spaces 0.51.

What it keeps of the real thing, because it is what the app must survive: the decorated function runs in a
*forked* worker process; its arguments go there, and each value a generator yields comes back, pickled through
`multiprocessing.SimpleQueue`s of the fork context; the worker checks a stop event after each yielded value and
closes the generator when it is set, which the caller's side sets when its own generator is closed (Gradio's
cancel); an exception other than `gr.Error` comes back only as "ZeroGPU worker error" with its class name. What it
leaves out: the GPU scheduling, the worker reuse between calls, the progress and Gradio-queue relays.
"""

from __future__ import annotations

import inspect
import multiprocessing
import traceback
from dataclasses import dataclass

import gradio as gr

FORK = multiprocessing.get_context("fork")
calls: list[str] = []  # the names of the functions run in a worker, for tests to see that one was


@dataclass
class Ok:
    value: object


@dataclass
class Raised:
    error_class: str
    traceback: str
    gradio_error: gr.Error | None


class End:
    pass


def GPU(duration: int | None = None):  # noqa: N802 (the real decorator's name)
    def decorate(task):
        if not inspect.isgeneratorfunction(task):
            raise NotImplementedError("the stand-in wraps generator functions only (all the app decorates)")
        return generator_wrapper(task)

    return decorate


def generator_wrapper(task):
    def gradio_handler(*args, **kwargs):
        calls.append(task.__name__)
        arg_queue, res_queue, stop_event = FORK.SimpleQueue(), FORK.SimpleQueue(), FORK.Event()
        worker = FORK.Process(target=run_in_worker, args=(task, arg_queue, res_queue, stop_event), daemon=True)
        worker.start()
        arg_queue.put((args, kwargs))  # pickled: a pipeline, a lock or a closure here fails as on ZeroGPU
        try:
            while True:
                result = res_queue.get()
                if isinstance(result, End):
                    return
                if isinstance(result, Raised):
                    if result.gradio_error is not None:
                        raise result.gradio_error
                    print(result.traceback)
                    raise gr.Error(f"ZeroGPU worker error: {result.error_class}")
                try:
                    yield result.value
                except GeneratorExit:
                    stop_event.set()
                    raise
        finally:
            worker.join(timeout=60)

    gradio_handler.__name__ = task.__name__
    return gradio_handler


def run_in_worker(task, arg_queue, res_queue, stop_event) -> None:
    args, kwargs = arg_queue.get()
    generator = task(*args, **kwargs)
    while True:
        try:
            value = next(generator)
        except StopIteration:
            break
        except Exception as error:
            gradio_error = error if isinstance(error, gr.Error) else None
            res_queue.put(Raised(type(error).__name__, traceback.format_exc(), gradio_error))
            break
        if stop_event.is_set():
            generator.close()
            break
        res_queue.put(Ok(value))
    res_queue.put(End())
